"""GPT-2 style language model, the nanoGPT family.

Notable features:
- LayerNorm with an optional bias (bias=False is slightly better and faster)
- learned absolute position embeddings (`wpe`)
- causal self-attention through F.scaled_dot_product_attention, one fused q/k/v projection
- GELU MLP, 4x wide: exact GELU as nanoGPT; `gelu_approximate="tanh"` gives GPT-2's
  own tanh approximation (`gelu_new`), which Hugging Face GPT-2 checkpoints ask for
- dropout on embeddings, attention weights and residual branches
- `lm_head` tied to the token embedding `wte`
- GPT-2 init: residual projections scaled by 1/sqrt(2 * n_layer)

State-dict keys are nanoGPT's, so its `ckpt.pt` files load unchanged.
Difference from nanoGPT: `forward` without targets returns logits for every position
(B, T, V), not just the last one, because the inspector looks at all of them.
Shape letters: B batch, T time, C channels (n_embd), nh heads, hs head size, V vocab.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from .kv_cache import KVCache, attention_mask
from .sampling import generate


@dataclass
class NanoGPTConfig:
    """GPT-2 style model, as in nanoGPT's model.py."""

    block_size: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True
    # gpt-tui's, not nanoGPT's: "none" exact GELU, "tanh" GPT-2's gelu_new. A checkpoint
    # records it only when set, so nanoGPT's GPTConfig(**model_args) still loads ours.
    gelu_approximate: str = field(default="none", metadata={"upstream": False})

    family: Literal["nanogpt"] = field(default="nanogpt", init=False, repr=False)

    @property
    def context_len(self) -> int:
        return self.block_size

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def n_kv_head(self) -> int:
        return self.n_head


class LayerNorm(nn.Module):
    """LayerNorm whose bias can be switched off (torch's own cannot, before 2.1)."""

    def __init__(self, ndim: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: NanoGPTConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.size()
        hs = C // self.n_head
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        if kv_cache is not None:
            k, v = kv_cache.insert(self.layer_idx, k, v)  # (B, nh, T_past + T, hs)
        mask = attention_mask(T, k.size(2), x.device)  # (T, T_past + T), or None: causal
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=mask is None and T > 1,
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side
        return self.resid_dropout(self.c_proj(y))  # (B, T, C)


class MLP(nn.Module):
    def __init__(self, config: NanoGPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate=config.gelu_approximate)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gelu(self.c_fc(x))  # (B, T, 4C)
        return self.dropout(self.c_proj(x))  # (B, T, C)


class Block(nn.Module):
    def __init__(self, config: NanoGPTConfig, layer_idx: int) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv_cache=kv_cache)  # (B, T, C)
        x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        return x


class GPT(nn.Module):
    def __init__(self, config: NanoGPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
                ln_f=LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        if self.lm_head.weight.device.type != "meta":
            self.init_weights()

    def init_weights(self) -> None:
        """GPT-2 init: N(0, 0.02), biases zero, residual projections N(0, 0.02/sqrt(2L))."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * self.config.n_layer))

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters counted once (tied weights once); nanoGPT leaves out position embeddings."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def make_kv_cache(self, batch_size: int = 1, max_len: int | None = None) -> KVCache:
        c = self.config
        p = self.lm_head.weight
        return KVCache(
            c.n_layer, batch_size, c.n_head, c.head_dim, max_len or c.block_size, p.device, p.dtype
        )

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T = idx.size()
        start = kv_cache.pos if kv_cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(
                f"sequence of {start + T} tokens is longer than the context "
                f"(block_size={self.config.block_size}); crop the prompt"
            )
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)  # (T,)
        tok_emb = self.transformer.wte(idx)  # (B, T, C)
        pos_emb = self.transformer.wpe(pos)  # (T, C)
        x = self.transformer.drop(tok_emb + pos_emb)  # (B, T, C)
        for block in self.transformer.h:
            x = block(x, kv_cache=kv_cache)  # (B, T, C)
        if kv_cache is not None:
            kv_cache.advance(T)
        logits = self.logits_from_residual(x)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.float().view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1
            )
        return logits, loss

    def logits_from_residual(self, x: torch.Tensor) -> torch.Tensor:
        """What forward does after the last block: the final LayerNorm, then the head.

        The logit lens reads any layer's residual stream through it.
        """
        x = self.transformer.ln_f(x)  # (B, T, C)
        return self.lm_head(x)  # (B, T, V)

    def generate(self, idx: torch.Tensor, max_new_tokens: int, **sampling) -> torch.Tensor:
        """See `gpt_tui.models.sampling.generate` (temperature, top_k, top_p, seed)."""
        return generate(self, idx, max_new_tokens, **sampling)
