"""Modern style language model, the nanochat family, in every era nanochat has had.

Notable features (classic era, October 2025):
- parameter-free RMSNorm: after the token embedding, before attention and MLP, on q and k
  (QK norm), and before the head
- rotary position embeddings (no learned positions), base configurable
- grouped-query attention: `n_kv_head` key/value heads shared by `n_head` query heads
- ReLU² MLP, 4x wide
- no biases anywhere; untied `lm_head`
- logits squashed by a softcap: softcap * tanh(logits / softcap), computed in fp32
- `init_weights()` zeroes `lm_head` and every output projection (from the smear/backout
  era on, nanochat's later init: `lm_head` N(0, 0.001), uniform draws, ramped lambdas)

Added by later eras, each behind a config field that defaults off:
- `padded_vocab_size`: embedding and head rows padded (to a multiple of 64); the logits
  are sliced back to `vocab_size`
- `resid_x0_lambdas`: before block i, x = resid_lambdas[i] * x + x0_lambdas[i] * x0,
  where x0 is the normed embedding
- `value_embeds`: on alternating layers (always the last), a per-token embedding is added
  to v, scaled per kv head by gate = ve_gate_scale * sigmoid(ve_gate(x[..., :channels]))
- `window_pattern`: sliding-window attention; S layers see `short_window` tokens back
- `smear`: each position gets a gated share of the previous token's embedding
- `backout`: the residual after layer n_layer // 2, times backout_lambda, is subtracted
  before the final norm
- `qk_scale`: q and k multiplied after QK norm (sharper attention)

State-dict keys are nanochat's, so its `model_<step>.pt` files load unchanged.
Shape letters: B batch, T time, C channels (n_embd), nh query heads, nkv key/value heads,
hs head size, V vocab, Vp padded vocab.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from .kv_cache import KVCache, attention_mask
from .sampling import generate


@dataclass
class NanoChatConfig:
    """Modern style model, as in nanochat's gpt.py.

    The fields after `softcap` switch on the features later nanochat versions added;
    they default off so that classic-era checkpoints load unchanged. Which era sets
    which field is told in `gpt_tui.io.nanochat_eras`.
    """

    sequence_len: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 6
    n_kv_head: int = 6
    n_embd: int = 768
    rope_base: float = 10000.0  # later eras: 100000
    softcap: float = 15.0  # 0 disables the logit softcap
    padded_vocab_size: int = 0  # rows of wte / lm_head / value_embeds; 0 = vocab_size
    resid_x0_lambdas: bool = False  # before block i: x = resid_lambdas[i]*x + x0_lambdas[i]*x0
    value_embeds: bool = False  # value embeddings added to v on alternating layers, gated
    ve_gate_channels: int = 32  # the gate reads this many leading channels of the block input
    ve_gate_scale: float = 2.0  # gate = ve_gate_scale * sigmoid(ve_gate(x[..., :channels]))
    window_pattern: str = "L"  # per layer, tiled: L full context, S short; last layer is L
    short_window: int = 0  # tokens an S layer sees before the query; 0 = sequence_len // 2
    smear: bool = False  # add a gated share of the previous token's embedding
    backout: bool = False  # subtract backout_lambda * (residual after layer n_layer // 2)
    qk_scale: float = 1.0  # q and k are each multiplied by this after QK norm

    family: Literal["nanochat"] = field(default="nanochat", init=False, repr=False)

    @property
    def context_len(self) -> int:
        return self.sequence_len

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def table_rows(self) -> int:
        """Rows of the embedding tables and lm_head: the vocabulary plus any padding."""
        return self.padded_vocab_size or self.vocab_size

    def layer_window(self, layer_idx: int) -> int | None:
        """Tokens before the query that layer `layer_idx` attends to; None = all of them."""
        pattern = self.window_pattern.upper()
        if layer_idx == self.n_layer - 1 or pattern[layer_idx % len(pattern)] == "L":
            return None
        return self.short_window or self.sequence_len // 2

    @property
    def smear_era_init(self) -> bool:
        """nanochat's init changed with the smear/backout era (uniform draws, a 0.4x c_fc,
        ramped lambdas); the eras before it keep October 2025's."""
        return self.smear or self.backout

    def has_value_embeds(self, layer_idx: int) -> bool:
        """Value embeddings sit on alternating layers, always including the last one."""
        return self.value_embeds and layer_idx % 2 == (self.n_layer - 1) % 2


SMEAR_CHANNELS = 24  # the smear gate reads this many leading channels of the embedding
# The smear/backout era's init (nanochat's gpt.py from 2026-03-14): wte and lm_head stds,
# c_fc's std as a share of q/k/v's, lambdas from layer 0 to the last, gates U(0, high).
WTE_INIT_STD, HEAD_INIT_STD, C_FC_INIT_SCALE = 0.8, 0.001, 0.4
RESID_LAMBDA_RAMP, X0_LAMBDA_RAMP = (1.15, 1.05), (0.20, 0.05)
GATE_INIT_HIGH = 0.02
BACKOUT_INIT = 0.2


def layer_ramp(first: float, last: float, n_layer: int) -> torch.Tensor:
    """(n_layer,) values going linearly from `first` at layer 0 to `last` at the last layer."""
    steps = torch.arange(n_layer, dtype=torch.float32) / max(n_layer - 1, 1)
    return first + (last - first) * steps


def norm(x: torch.Tensor) -> torch.Tensor:
    """RMSNorm with no learnable parameters."""
    return F.rms_norm(x, (x.size(-1),))


def rotary_tables(
    seq_len: int, head_dim: int, base: float, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, each (1, seq_len, 1, hs/2): one rotation angle per position and pair."""
    inv_freq = 1.0 / (
        base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
    )
    t = torch.arange(seq_len, dtype=torch.float32, device=device)
    angles = torch.outer(t, inv_freq)  # (T, hs/2)
    return angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the two halves of each head of x (B, T, nh, hs) by the position's angles."""
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


class NanoChatKVCache(KVCache):
    """The shared KV cache, plus the last position's embedding that smear needs next step."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.prev_embedding: torch.Tensor | None = None  # (B, 1, C)

    def reset(self) -> None:
        super().reset()
        self.prev_embedding = None


class CausalSelfAttention(nn.Module):
    def __init__(self, config: NanoChatConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head = config.n_head
        self.n_kv_head = config.n_kv_head
        self.head_dim = config.head_dim
        self.qk_scale = config.qk_scale
        self.window = config.layer_window(layer_idx)  # tokens back; None = full context
        C, hs = config.n_embd, config.head_dim
        self.c_q = nn.Linear(C, self.n_head * hs, bias=False)
        self.c_k = nn.Linear(C, self.n_kv_head * hs, bias=False)
        self.c_v = nn.Linear(C, self.n_kv_head * hs, bias=False)
        self.c_proj = nn.Linear(C, C, bias=False)
        if config.has_value_embeds(layer_idx):
            self.ve_gate_channels = config.ve_gate_channels
            self.ve_gate_scale = config.ve_gate_scale
            self.ve_gate = nn.Linear(config.ve_gate_channels, self.n_kv_head, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        kv_cache: KVCache | None = None,
        ve: torch.Tensor | None = None,
    ) -> torch.Tensor:
        B, T, C = x.size()
        hs = self.head_dim
        q = self.c_q(x).view(B, T, self.n_head, hs)  # (B, T, nh, hs)
        k = self.c_k(x).view(B, T, self.n_kv_head, hs)  # (B, T, nkv, hs)
        v = self.c_v(x).view(B, T, self.n_kv_head, hs)  # (B, T, nkv, hs)
        if ve is not None:
            ve = ve.view(B, T, self.n_kv_head, hs)  # (B, T, nkv, hs)
            gate = self.ve_gate_scale * torch.sigmoid(
                self.ve_gate(x[..., : self.ve_gate_channels])
            )  # (B, T, nkv)
            v = v + gate.unsqueeze(-1) * ve  # (B, T, nkv, hs)
        cos, sin = cos_sin
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)  # (B, T, nh|nkv, hs)
        q, k = norm(q), norm(k)  # (B, T, nh|nkv, hs): QK norm
        if self.qk_scale != 1.0:
            q, k = q * self.qk_scale, k * self.qk_scale  # (B, T, nh|nkv, hs): sharper attention
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, T, hs)
        if kv_cache is not None:
            k, v = kv_cache.insert(self.layer_idx, k, v)  # (B, nkv, T_past + T, hs)
        Tk = k.size(2)
        # A window of w tokens back means w + 1 keys, the query's own included.
        window = self.window + 1 if self.window is not None and self.window + 1 < Tk else None
        mask = attention_mask(T, Tk, x.device, window=window)  # (T, Tk) or None
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=mask is None and T > 1,
            enable_gqa=self.n_kv_head != self.n_head,
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.c_proj(y)  # (B, T, C)


class MLP(nn.Module):
    def __init__(self, config: NanoChatConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.c_fc(x)).square()  # (B, T, 4C): ReLU²
        return self.c_proj(x)  # (B, T, C)


class Block(nn.Module):
    def __init__(self, config: NanoChatConfig, layer_idx: int) -> None:
        super().__init__()
        self.attn = CausalSelfAttention(config, layer_idx)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        kv_cache: KVCache | None = None,
        ve: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(norm(x), cos_sin, kv_cache=kv_cache, ve=ve)  # (B, T, C)
        x = x + self.mlp(norm(x))  # (B, T, C)
        return x


class GPT(nn.Module):
    def __init__(self, config: NanoChatConfig) -> None:
        super().__init__()
        self.config = config
        C, Vp = config.n_embd, config.table_rows
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(Vp, C),
                h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            )
        )
        self.lm_head = nn.Linear(C, Vp, bias=False)
        if config.resid_x0_lambdas:
            self.resid_lambdas = nn.Parameter(torch.ones(config.n_layer))  # (n_layer,)
            self.x0_lambdas = nn.Parameter(torch.zeros(config.n_layer))  # (n_layer,)
        if config.smear:
            self.smear_gate = nn.Linear(SMEAR_CHANNELS, 1, bias=False)
            self.smear_lambda = nn.Parameter(torch.zeros(1))  # (1,)
        if config.backout:
            self.backout_lambda = nn.Parameter(torch.full((1,), BACKOUT_INIT))  # (1,)
        if config.value_embeds:
            kv_dim = config.n_kv_head * config.head_dim
            self.value_embeds = nn.ModuleDict(
                {
                    str(i): nn.Embedding(Vp, kv_dim)
                    for i in range(config.n_layer)
                    if config.has_value_embeds(i)
                }
            )
        cos, sin = rotary_tables(config.sequence_len, config.head_dim, config.rope_base)
        self.register_buffer("cos", cos, persistent=False)  # (1, T, 1, hs/2)
        self.register_buffer("sin", sin, persistent=False)  # (1, T, 1, hs/2)
        if self.lm_head.weight.device.type != "meta":
            self.init_weights()

    def init_weights(self) -> None:
        """nanochat's init of the model's era: `_init_smear_era` from smear/backout on; before
        it, October 2025's: embeddings N(0, 1), Linear scaled to fan-in, head and projections
        zero, the later scalars at their neutral values (lambdas 1 and 0, smear off)."""
        if self.config.smear_era_init:
            self._init_smear_era()
            return
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=1.0)
            elif isinstance(module, nn.Linear):
                fan_out, fan_in = module.weight.shape
                std = 1.0 / fan_in**0.5 * min(1.0, (fan_out / fan_in) ** 0.5)
                nn.init.normal_(module.weight, mean=0.0, std=std)
        nn.init.zeros_(self.lm_head.weight)
        for block in self.transformer.h:
            nn.init.zeros_(block.attn.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.weight)

    @torch.no_grad()
    def _init_smear_era(self) -> None:
        """As nanochat's gpt.py of the smear/backout era draws it: wte N(0, 0.8), lm_head
        N(0, 0.001), q/k/v and value embeddings U(±√3/√C) (std 1/√C), c_fc at 0.4x that,
        projections zero, resid/x0 lambdas ramped from layer 0 to the last, gates U(0, 0.02)."""
        c = self.config
        nn.init.normal_(self.transformer.wte.weight, mean=0.0, std=WTE_INIT_STD)
        nn.init.normal_(self.lm_head.weight, mean=0.0, std=HEAD_INIT_STD)
        bound = 3**0.5 * c.n_embd**-0.5
        for block in self.transformer.h:
            for linear in (block.attn.c_q, block.attn.c_k, block.attn.c_v):
                nn.init.uniform_(linear.weight, -bound, bound)
            nn.init.zeros_(block.attn.c_proj.weight)
            fc = C_FC_INIT_SCALE * bound
            nn.init.uniform_(block.mlp.c_fc.weight, -fc, fc)
            nn.init.zeros_(block.mlp.c_proj.weight)
        if c.resid_x0_lambdas:
            self.resid_lambdas.copy_(layer_ramp(*RESID_LAMBDA_RAMP, c.n_layer))
            self.x0_lambdas.copy_(layer_ramp(*X0_LAMBDA_RAMP, c.n_layer))
        if c.smear:
            nn.init.zeros_(self.smear_lambda)
            nn.init.uniform_(self.smear_gate.weight, 0.0, GATE_INIT_HIGH)
        if c.backout:
            nn.init.constant_(self.backout_lambda, BACKOUT_INIT)
        if c.value_embeds:
            for table in self.value_embeds.values():
                nn.init.uniform_(table.weight, -bound, bound)
            for block in self.transformer.h:
                if hasattr(block.attn, "ve_gate"):
                    nn.init.uniform_(block.attn.ve_gate.weight, 0.0, GATE_INIT_HIGH)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters; `non_embedding` leaves out the lookup tables (`wte`, value embeddings),
        which cost no compute. The untied `lm_head` is a matmul and counts, as nanoGPT's
        tied head does."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wte.weight.numel()
            if hasattr(self, "value_embeds"):
                n -= sum(p.numel() for p in self.value_embeds.parameters())
        return n

    def make_kv_cache(self, batch_size: int = 1, max_len: int | None = None) -> NanoChatKVCache:
        c = self.config
        p = self.lm_head.weight
        return NanoChatKVCache(
            c.n_layer,
            batch_size,
            c.n_kv_head,
            c.head_dim,
            max_len or c.sequence_len,
            p.device,
            p.dtype,
        )

    def smear_previous(self, x: torch.Tensor, kv_cache: KVCache | None) -> torch.Tensor:
        """x_t += smear_lambda * sigmoid(smear_gate(x_t[:24])) * x_(t-1), for x (B, T, C).

        With a cache, the previous pass's last embedding stands in for x_(t-1) at t = 0.
        """
        prev = x[:, :-1]  # (B, T-1, C)
        cur = x[:, 1:]  # (B, T-1, C)
        if kv_cache is not None:
            if not isinstance(kv_cache, NanoChatKVCache):
                raise TypeError("smear needs the cache from model.make_kv_cache()")
            if kv_cache.prev_embedding is not None:
                prev = torch.cat([kv_cache.prev_embedding, prev], dim=1)  # (B, T, C)
                cur = x  # (B, T, C)
            kv_cache.prev_embedding = x[:, -1:]  # (B, 1, C)
        gate = self.smear_lambda * torch.sigmoid(
            self.smear_gate(cur[..., :SMEAR_CHANNELS])
        )  # (B, T or T-1, 1)
        smeared = cur + gate * prev  # (B, T or T-1, C)
        return torch.cat([x[:, : x.size(1) - cur.size(1)], smeared], dim=1)  # (B, T, C)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T = idx.size()
        c = self.config
        start = kv_cache.pos if kv_cache is not None else 0
        if start + T > c.sequence_len:
            raise ValueError(
                f"sequence of {start + T} tokens is longer than the context "
                f"(sequence_len={c.sequence_len}); crop the prompt"
            )
        x = self.transformer.wte(idx)  # (B, T, C)
        cos_sin = (
            self.cos[:, start : start + T].to(x.dtype),
            self.sin[:, start : start + T].to(x.dtype),
        )  # 2 x (1, T, 1, hs/2)
        x = norm(x)  # (B, T, C)
        if c.smear:
            x = self.smear_previous(x, kv_cache)  # (B, T, C)
        x0 = x  # (B, T, C)
        x_backout = None
        for i, block in enumerate(self.transformer.h):
            if c.resid_x0_lambdas:
                x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0  # (B, T, C)
            ve = None
            if c.has_value_embeds(i):
                ve = self.value_embeds[str(i)](idx)  # (B, T, nkv*hs)
            x = block(x, cos_sin, kv_cache=kv_cache, ve=ve)  # (B, T, C)
            if c.backout and i == c.n_layer // 2:
                x_backout = x  # (B, T, C)
        if kv_cache is not None:
            kv_cache.advance(T)
        if x_backout is not None:
            x = x - self.backout_lambda * x_backout  # (B, T, C)
        logits = self.logits_from_residual(x)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1
            )
        return logits, loss

    def logits_from_residual(self, x: torch.Tensor) -> torch.Tensor:
        """What forward does after the last block (and after backout): the final RMS norm,
        the head, the padding rows dropped, the softcap in fp32.

        The logit lens reads any layer's residual stream through it.
        """
        x = norm(x)  # (B, T, C)
        logits = self.lm_head(x)[..., : self.config.vocab_size].float()  # (B, T, V)
        cap = self.config.softcap
        if cap > 0:
            logits = cap * torch.tanh(logits / cap)  # (B, T, V), squashed into (-cap, cap)
        return logits

    def generate(self, idx: torch.Tensor, max_new_tokens: int, **sampling) -> torch.Tensor:
        """See `gpt_tui.models.sampling.generate` (temperature, top_k, top_p, seed)."""
        return generate(self, idx, max_new_tokens, **sampling)
