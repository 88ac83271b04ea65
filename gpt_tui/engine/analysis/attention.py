"""Attention patterns for any kernel, recomputed lazily from what the kernel was given.

Fused kernels (SDPA, flash) never return their weights, and asking them to would change
the model. Instead `AttentionCapture`, a `TorchFunctionMode`, sees every
`F.scaled_dot_product_attention` call of a pass and keeps references to its q, k, v
(after rotary and QK norm: exactly what the kernel used), the mask arguments and the
output y, for the requested layers only. `pattern(layer)` then recomputes
softmax(q·kᵀ·scale + mask) in fp32 for that layer alone and checks it: max |W·V − y|.

Models that write attention out by hand (`att = q @ k.T * scale; ...; F.softmax(att, -1);
y = att @ v`) are captured too: inside an attention module with no SDPA call, the
softmax output over the last dim is the pattern itself, and the next matmul that uses it
gives v and y for the check.

At scale nothing of size L·H·T² is ever made: a pass keeps only what the patterns are
computed from (O(L·T·d)), and `LazyPatterns` computes one layer's pattern when it is looked
at, keeping the last few. Patterns too big to keep cheaply in fp32 (more than
`FP16_ABOVE` entries: GPT-2 small's 12 heads at T=1024) are computed and checked in fp32,
then stored in float16 for display.

`head_summaries(pattern)` condenses a pattern per head (where the last query looks, how
spread out the rows are, how much each query attends to itself) for the CLI and the panes.

Which layer a call belongs to: `Probes` announces the attention module that is running
(`enter_module` / `exit_module` from its hooks). Without probes, the i-th SDPA call of a
pass is layer i.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..core.trace import AttentionPattern

_SDPA = F.scaled_dot_product_attention
_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale")
_SOFTMAX = frozenset({F.softmax, torch.softmax, torch.Tensor.softmax})
_DROPOUT = frozenset({F.dropout, torch.dropout})
_MATMUL = frozenset({torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm})
FP16_ABOVE = 4 * 1024 * 1024  # pattern entries (heads x Tq x Tk) kept in fp32 up to this


@dataclass
class AttentionCall:
    """Live references to one attention computation (internal: never handed to the UI)."""

    layer: int
    name: str  # the attention module's path, or `attn{i}` when no probe named it
    q: torch.Tensor | None  # (B, nh, Tq, hs); None for a hand-written softmax
    k: torch.Tensor | None  # (B, nkv, Tk, hs)
    v: torch.Tensor | None  # (B, nkv, Tk, hs); None until the matmul after a softmax is seen
    y: torch.Tensor | None  # (B, nh, Tq, hs), the kernel's own output
    attn_mask: torch.Tensor | None = None
    is_causal: bool = False
    scale: float | None = None
    weights: torch.Tensor | None = None  # (B, nh, Tq, Tk), only for a hand-written softmax


def _sdpa_arguments(args: tuple, kwargs: dict) -> dict:
    bound = dict(zip(_SDPA_ARGS, args, strict=False))
    bound.update(kwargs)
    return bound


def _batch(t: torch.Tensor, batch: int) -> torch.Tensor:
    """Select one batch element of a (B, heads, T, ·) tensor; broadcast dims pass through."""
    if t.dim() == 4:
        return t[batch if t.size(0) > 1 else 0]
    return t


def _window_of(allowed: np.ndarray) -> tuple[bool, int | None]:
    """Is this (Tq, Tk) mask causal (end-aligned), and is it a sliding window of w keys?

    Plain numpy on a small host array: a handful of tiny torch ops would each cost a
    thread-pool round trip.
    """
    Tq, Tk = allowed.shape
    q_pos = np.arange(Tk - Tq, Tk)[:, None]
    k_pos = np.arange(Tk)[None, :]
    if np.any(allowed & (k_pos > q_pos)):
        return False, None
    w = int(allowed.sum(-1).max())
    band = (k_pos <= q_pos) & (k_pos > q_pos - w)
    return True, (w if w < Tk and np.array_equal(band, allowed) else None)


def _for_display(weights: torch.Tensor) -> np.ndarray:
    """Host copy of computed weights: fp32, or float16 when the pattern is large."""
    if weights.numel() > FP16_ABOVE:
        weights = weights.half()
    return weights.cpu().numpy()


def recompute_pattern(call: AttentionCall, batch: int = 0) -> AttentionPattern:
    """softmax(q·kᵀ·scale + mask) in fp32 for one batch element, checked against y
    (stored in float16 above `FP16_ABOVE` entries)."""
    name = f"{call.name}.pattern"
    if call.weights is not None:  # a hand-written softmax: the weights are already there
        w = _batch(call.weights, batch).float()
        allowed = (w > 0).any(0).cpu().numpy()
        causal, window = _window_of(allowed)
        error = float("nan")
        if call.v is not None and call.y is not None:
            v = _batch(call.v, batch).float()
            error = float((w @ v - _batch(call.y, batch).float()).abs().max())
        return AttentionPattern(
            layer=call.layer,
            name=name,
            weights=_for_display(w),
            n_kv_head=w.size(0),
            causal=causal,
            window=window,
            max_abs_error=error,
            mask=allowed,
        )
    assert call.q is not None and call.k is not None and call.v is not None
    q = _batch(call.q, batch).float()  # (nh, Tq, hs)
    k = _batch(call.k, batch).float()  # (nkv, Tk, hs)
    v = _batch(call.v, batch).float()  # (nkv, Tk, hs)
    nh, n_kv = q.size(-3), k.size(-3)
    if n_kv != nh:  # GQA: each key/value head serves nh / nkv query heads
        k = k.repeat_interleave(nh // n_kv, dim=-3)  # (nh, Tk, hs)
        v = v.repeat_interleave(nh // n_kv, dim=-3)  # (nh, Tk, hs)
    scale = call.scale if call.scale is not None else 1.0 / math.sqrt(q.size(-1))
    scores = (q @ k.transpose(-2, -1)) * scale  # (nh, Tq, Tk)
    Tq, Tk = scores.shape[-2:]
    allowed = torch.ones(Tq, Tk, dtype=torch.bool, device=scores.device)
    if call.is_causal:  # SDPA's is_causal aligns the triangle top-left
        allowed = allowed.tril()
    if call.attn_mask is not None:
        mask = _batch(call.attn_mask, batch)
        if mask.dtype == torch.bool:
            allowed = allowed & mask  # broadcasts to (nh, Tq, Tk) for per-head masks
        else:
            scores = scores + mask.float()
            allowed = allowed & (mask > -math.inf)
    scores.masked_fill_(~allowed, -math.inf)  # in place: at long context each copy is H·T²
    weights = torch.softmax(scores, dim=-1).nan_to_num_(0.0)  # fully masked rows -> 0
    del scores
    error = float((weights @ v - _batch(call.y, batch).float()).abs().max())  # (nh, Tq, hs)
    mask2d = (allowed if allowed.dim() == 2 else allowed.reshape(-1, Tq, Tk)[0]).cpu().numpy()
    causal, window = _window_of(mask2d)
    return AttentionPattern(
        layer=call.layer,
        name=name,
        weights=_for_display(weights),
        n_kv_head=n_kv,
        causal=causal or call.is_causal,
        window=window,
        max_abs_error=error,
        mask=mask2d,
    )


class AttentionCapture(TorchFunctionMode):
    """Sees every attention kernel call while entered; keeps the requested layers' inputs.

    `layers=None` keeps every layer. Use as a context manager around a forward pass, or let
    `Probes` enter and exit it around each pass and announce the running attention module.
    """

    def __init__(self, layers: Iterable[int] | None = None) -> None:
        super().__init__()
        self.layers: set[int] | None = None if layers is None else set(layers)
        self.calls: dict[int, AttentionCall] = {}
        self._n_calls = 0
        self._module: tuple[int, str] | None = None  # (layer, name) of the running attn
        self._sdpa_in_module = False
        self._pending: AttentionCall | None = None  # hand-written softmax awaiting its matmul
        self._probs: list[torch.Tensor] = []  # the softmax output and its dropout, if any
        self.muted = False  # work done at a pause (an expression) is not the pass's

    def reset(self) -> None:
        """Forget the previous pass (call at the start of each pass)."""
        self.calls.clear()
        self._n_calls = 0
        self._module = None
        self._pending = None
        self._probs = []

    def enter_module(self, layer: int, name: str) -> None:
        self._module = (layer, name)
        self._sdpa_in_module = False

    def exit_module(self) -> None:
        self._module = None
        self._pending = None
        self._probs = []

    def wants(self, layer: int) -> bool:
        return self.layers is None or layer in self.layers

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.muted:
            return out
        if func is _SDPA:
            self._on_sdpa(args, kwargs, out)
        elif self._module is not None and not self._sdpa_in_module:
            self._on_manual(func, args, kwargs, out)
        return out

    def _on_sdpa(self, args: tuple, kwargs: dict, y: torch.Tensor) -> None:
        if self._module is not None:
            layer, name = self._module
            self._sdpa_in_module = True
        else:
            layer, name = self._n_calls, f"attn{self._n_calls}"
        self._n_calls += 1
        if not self.wants(layer):
            return
        a = _sdpa_arguments(args, kwargs)
        self.calls[layer] = AttentionCall(
            layer=layer,
            name=name,
            q=a["query"],
            k=a["key"],
            v=a["value"],
            y=y,
            attn_mask=a.get("attn_mask"),
            is_causal=bool(a.get("is_causal", False)),
            scale=a.get("scale"),
        )

    def _on_manual(self, func, args: tuple, kwargs: dict, out) -> None:
        layer, name = self._module  # type: ignore[misc]
        if not self.wants(layer) or not isinstance(out, torch.Tensor):
            return
        if func in _SOFTMAX and out.dim() == 4:
            dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
            if dim in (-1, 3):
                self._pending = AttentionCall(layer, name, None, None, None, None, weights=out)
                self.calls[layer] = self._pending
                self._probs = [out]
        elif self._pending is not None and args and any(args[0] is p for p in self._probs):
            if func in _DROPOUT:
                self._probs.append(out)
            elif func in _MATMUL and len(args) > 1:
                self._pending.v, self._pending.y = args[1], out
                self._pending = None

    def pattern(self, layer: int, batch: int = 0) -> AttentionPattern:
        """The recomputed, checked pattern of `layer` from the last pass."""
        if layer not in self.calls:
            kept = sorted(self.calls) if self.calls else "none"
            raise KeyError(
                f"no attention call was captured for layer {layer} (captured: {kept}); "
                "request the layer before the forward pass"
            )
        return recompute_pattern(self.calls[layer], batch)

    def lazy(self, batch: int = 0) -> LazyPatterns:
        """The last pass's patterns, each computed when first looked at."""
        return LazyPatterns(dict(self.calls), batch)


class LazyPatterns(Mapping[int, AttentionPattern]):
    """Layer -> pattern, computed from the kept kernel inputs on first access.

    Holds the pass's q, k, v, y and masks per layer (O(L·T·d)); keeps the `keep` most
    recently viewed patterns (each O(H·T²)) so flipping between layers is instant.
    """

    def __init__(self, calls: Mapping[int, AttentionCall], batch: int = 0, keep: int = 3) -> None:
        self._calls = dict(calls)
        self._batch = batch
        self._keep = keep
        self._cache: OrderedDict[int, AttentionPattern] = OrderedDict()

    def __getitem__(self, layer: int) -> AttentionPattern:
        if layer not in self._calls:
            raise KeyError(layer)
        pattern = self._cache.pop(layer, None)
        if pattern is None:
            pattern = recompute_pattern(self._calls[layer], self._batch)
        self._cache[layer] = pattern
        while len(self._cache) > self._keep:
            self._cache.popitem(last=False)
        return pattern

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._calls))

    def __len__(self) -> int:
        return len(self._calls)


@dataclass(frozen=True)
class HeadSummary:
    """One head of a pattern in four numbers."""

    head: int
    last_query_argmax: int  # key position the last query weighs most
    last_query_weight: float  # that weight
    mean_entropy: float  # nats per query row, averaged over the rows (0 = one key only)
    diagonal_share: float  # mean weight a query puts on its own position


def head_summaries(pattern: AttentionPattern) -> tuple[HeadSummary, ...]:
    """Per head of `pattern`: where the last query looks, entropy and diagonal share.

    Queries are aligned to the end of the keys (query i is key position i + Tk - Tq), as
    they are with a KV cache; a fully masked row counts as entropy 0.
    """
    nh, Tq, Tk = pattern.weights.shape
    entropy = np.empty(nh)
    for h in range(nh):  # one head at a time: a float64 copy of a long pattern is large
        w = pattern.weights[h].astype(np.float64)  # (Tq, Tk)
        entropy[h] = -(w * np.log(np.clip(w, 1e-12, None))).sum(-1).mean()
    rows = np.arange(Tq)
    diagonal = pattern.weights[:, rows, rows + Tk - Tq].astype(np.float64).mean(-1)  # (nh,)
    last = pattern.weights[:, -1, :].astype(np.float64)  # (nh, Tk)
    argmax = last.argmax(-1)  # (nh,)
    return tuple(
        HeadSummary(
            head=h,
            last_query_argmax=int(argmax[h]),
            last_query_weight=float(last[h, argmax[h]]),
            mean_entropy=float(entropy[h]),
            diagonal_share=float(diagonal[h]),
        )
        for h in range(nh)
    )
