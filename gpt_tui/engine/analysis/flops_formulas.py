"""The families' own FLOPs and MFU formulas, as their training logs compute them.

nanoGPT (model.py `estimate_mfu(fwdbwd_per_iter, dt)`): per token 6·N + 12·L·H·Q·T with
N = `get_num_params()` (every parameter once, minus the position embedding; the tied wte
stays in) and T = `block_size`, always, whatever length the batch has. Its MFU is
(per token)·T·fwdbwd_per_iter / dt against an A100's bf16 peak, 312 TFLOP/s, on any device.

nanochat (gpt.py `estimate_flops()`): per token 6·N + Σ_layers 12·H·Q·min(window, T), with
N = `num_matmul_params()` (the weights of the Linear layers only: embeddings and raw scalar
parameters are out) and T = `sequence_len`; a layer's window is its left window size (the
long window is sequence_len). base_train.py's MFU multiplies that by the tokens of the step
(device_batch_size · max_seq_len) and divides by dt and the GPU's bf16 peak.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch.nn as nn

NANOGPT_PEAK = 312e12  # nanoGPT's estimate_mfu divides by an A100's bf16 peak everywhere


@dataclass(frozen=True)
class FamilyFormula:
    """A family's per-token training FLOPs as a function of T, with the T it uses."""

    family: str  # "nanoGPT" / "nanochat"
    name: str  # what the family calls it
    matmul_params: int  # N in 6·N
    attention_units: tuple[int, ...]  # per layer: H·Q, the 12·H·Q·T term's factor
    windows: tuple[int | None, ...]  # per layer: tokens a layer attends over; None = all
    context: int  # the T the family's code uses (block_size / sequence_len)

    def per_token(self, t: int | None = None) -> float:
        """FLOPs per token at length `t` (default: the family's own T)."""
        t = self.context if t is None else t
        attn = sum(
            12 * hq * (t if w is None else min(w, t))
            for hq, w in zip(self.attention_units, self.windows, strict=True)
        )
        return 6 * self.matmul_params + attn


def _config_ints(model: nn.Module, *fields: str) -> list[int] | None:
    c = getattr(model, "config", None)
    if c is None or not all(isinstance(getattr(c, f, None), int) for f in fields):
        return None
    return [getattr(c, f) for f in fields]


def nanogpt_formula(model: nn.Module, context: int | None = None) -> FamilyFormula | None:
    """nanoGPT's estimate_mfu per-token formula for `model` (None without a GPT config)."""
    got = _config_ints(model, "n_layer", "n_head", "n_embd")
    if got is None:
        return None
    n_layer, n_head, n_embd = got
    block_size = getattr(model.config, "block_size", None)
    t = block_size if isinstance(block_size, int) else context
    if t is None:
        return None
    n = sum(p.numel() for p in model.parameters())  # parameters() yields a tied tensor once
    wpe = getattr(getattr(model, "transformer", None), "wpe", None)
    if isinstance(wpe, nn.Embedding):
        n -= wpe.weight.numel()
    hq = n_head * (n_embd // n_head)
    return FamilyFormula(
        "nanoGPT", "nanoGPT estimate_mfu formula", n, (hq,) * n_layer, (None,) * n_layer, t
    )


def nanochat_windows(model: nn.Module, n_layer: int, t: int) -> tuple[int | None, ...]:
    """Each layer's left window: nanochat's `window_sizes`, or our config's `layer_window`."""
    sizes = getattr(model, "window_sizes", None)
    if isinstance(sizes, Sequence) and len(sizes) == n_layer:
        return tuple(None if int(w[0]) < 0 else int(w[0]) for w in sizes)
    layer_window = getattr(getattr(model, "config", None), "layer_window", None)
    if callable(layer_window):
        return tuple(layer_window(i) for i in range(n_layer))
    return (None,) * n_layer


def nanochat_formula(model: nn.Module, context: int | None = None) -> FamilyFormula | None:
    """nanochat's estimate_flops for `model` (None without a GPT config)."""
    got = _config_ints(model, "n_layer", "n_head", "n_embd")
    if got is None:
        return None
    n_layer, n_head, n_embd = got
    seq = getattr(model.config, "sequence_len", None)
    t = seq if isinstance(seq, int) else context
    if t is None:
        return None
    n = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    hq = n_head * (n_embd // n_head)
    windows = nanochat_windows(model, n_layer, t)
    return FamilyFormula("nanochat", "nanochat estimate_flops", n, (hq,) * n_layer, windows, t)


def model_estimate_flops(model: nn.Module) -> tuple[float | None, str | None]:
    """The model object's own `estimate_flops()` (nanochat's), or (None, why not)."""
    own = getattr(model, "estimate_flops", None)
    if not callable(own):
        return None, None
    try:
        return float(own()), None
    except Exception as e:  # a user's method: its failure is reported, not raised
        return None, f"the model's estimate_flops() raised {type(e).__name__}: {e}"


def model_estimate_mfu(model: nn.Module, batch: int, dt: float) -> tuple[float | None, str | None]:
    """The model object's own `estimate_mfu(fwdbwd_per_iter, dt)` (nanoGPT's), or (None, why)."""
    own = getattr(model, "estimate_mfu", None)
    if not callable(own) or dt <= 0:
        return None, None
    try:
        return float(own(batch, dt)), None
    except Exception as e:  # a user's method: its failure is reported, not raised
        return None, f"the model's estimate_mfu() raised {type(e).__name__}: {e}"
