"""What a narrower dtype would do to a pass: per module, per attention head, and where a
bf16 / fp16 / fp8 run first parts from fp32.

Every fraction is computed from the pass's own (fp32) values with `torch.finfo` facts, so
any model can be asked "what would fp16 do here" without running in fp16:

- overflow: |x| beyond the format's largest finite value (inf in fp16, bf16 and e5m2; in
  e4m3fn, which has no inf, NaN or a saturated 448);
- underflow: 0 < |x| < half the smallest subnormal, which rounds to zero (flushed);
- subnormal: half the smallest subnormal <= |x| < the smallest normal: stored with fewer
  mantissa bits than the format has, down to one (all relative precision gone).

Per head: the largest pre-softmax logit (q·kᵀ·scale over the positions the mask allows) and
the softmax's mean entropy, from the q and k the attention kernel was given. A nanochat
model's logit softcap is shown against the raw head output it squashes.

"What if fp32": the same pass on a copy of the model in the dtype (fp8: fp32 weights and
Linear inputs rounded through fp8, unscaled) is compared with the fp32 pass by the diff
engine (`compare.compare`); `numerics_blame` names the first module that amplified the
error beyond the dtype's tolerance, or says the error grew gradually and where it crossed.
A model file that names its own compute dtype (nanochat's `COMPUTE_DTYPE`) runs its copy
with that name set to the dtype, as nanochat's own bf16 runs do (io/compute_dtype.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn as nn

from ...errors import GptTuiError
from ...io.compute_dtype import compute_dtype_of, own_compute_dtype
from ..core.model_copy import dtype_copy
from .attention import AttentionCall, head_summaries, recompute_pattern
from .compare import Comparison, Run, compare, tolerance_for
from .numerics_blame import blame
from .probes import PendingRecord, Probes

if TYPE_CHECKING:
    from ..core.session import Session

FORMATS: tuple[str, ...] = ("bfloat16", "float16", "float8_e4m3fn", "float8_e5m2")
_SHORT = {"bfloat16": "bf16", "float16": "fp16", "float8_e4m3fn": "e4m3", "float8_e5m2": "e5m2"}


class NumericsError(GptTuiError):
    """A dtype that is unknown or that the device cannot compute in."""


@dataclass(frozen=True)
class FormatFacts:
    """The range of a floating-point format, from `torch.finfo`."""

    name: str
    max: float  # largest finite value
    smallest_normal: float
    smallest_subnormal: float  # smallest_normal · eps: one unit in the last place at the bottom
    eps: float

    @property
    def short(self) -> str:
        return _SHORT.get(self.name, self.name)


def format_facts(name: str) -> FormatFacts:
    dtype = check_format(name)
    info = torch.finfo(dtype)
    return FormatFacts(
        name, info.max, info.smallest_normal, info.smallest_normal * info.eps, info.eps
    )


def check_format(name: str) -> torch.dtype:
    """The torch dtype of one of `FORMATS`; a one-line error for anything else."""
    if name not in FORMATS:
        raise NumericsError(f"unknown --dtype {name!r}: use {', '.join(FORMATS)}")
    return getattr(torch, name)


def check_device_format(device: torch.device, name: str) -> torch.dtype:
    """The dtype, if `device` can compute in it (fp8 is simulated: it only needs a cast)."""
    dtype = check_format(name)
    if device.type == "meta":
        raise NumericsError("numerics needs values; --device meta has none (use cpu or cuda)")
    if device.type == "cuda" and dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise NumericsError(
            f"{torch.cuda.get_device_name(device)} has no bfloat16: use --dtype float16"
        )
    if device.type == "mps" and name.startswith("float8"):
        raise NumericsError(f"MPS cannot cast to {name}: use --device cpu for fp8")
    return dtype


@dataclass(frozen=True)
class Fractions:
    """Of one tensor's elements, the share that one format would lose."""

    overflow: float
    underflow: float  # rounds to zero
    subnormal: float  # keeps fewer mantissa bits

    @property
    def lost(self) -> float:
        return self.overflow + self.underflow + self.subnormal


@dataclass(frozen=True)
class ModuleNumerics:
    """One probe's output in one pass: its absmax and what each format would do to it."""

    name: str
    kind: str
    shape: tuple[int, ...]
    numel: int
    absmax: float  # over the finite elements
    nonfinite: int  # NaN / Inf already there in the pass
    formats: dict[str, Fractions]


@dataclass(frozen=True)
class HeadNumerics:
    layer: int
    head: int
    max_logit: float | None  # None: a hand-written softmax gives only its output
    entropy: float  # mean over query rows, nats


@dataclass(frozen=True)
class Softcap:
    """nanochat's logit softcap (cap·tanh(x/cap)) against the head's raw output."""

    cap: float
    raw_absmax: float
    capped_absmax: float
    beyond: float  # share of raw logits with |x| > cap (squashed by more than 24%)


@dataclass(frozen=True)
class WhatIf:
    """The pass in fp32 against the pass in `dtype`: where they first part."""

    dtype: str
    tolerance: float
    first: str | None  # the module that amplified the error (numerics_blame), None if none did
    message: str
    worst: tuple[tuple[str, float], ...]  # (probe, relative difference), largest first
    crossed: str | None = None  # the first probe beyond the tolerance (blamed or not)


@dataclass(frozen=True)
class NumericsReport:
    prompt: str
    tokens: int
    dtype: str  # the format asked about (all four are in every row)
    facts: tuple[FormatFacts, ...]
    modules: tuple[ModuleNumerics, ...]  # execution order
    heads: tuple[HeadNumerics, ...]
    softcap: Softcap | None
    what_if: WhatIf | None
    note: str | None = None


def range_counts(
    x: torch.Tensor, facts: Sequence[FormatFacts]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(absmax, counts) on x's device: counts = [nonfinite, then per format: overflow,
    underflow, subnormal]. No host transfer."""
    a = x.detach().float().abs()
    finite = torch.isfinite(a)
    counts = [(~finite).sum()]
    a = torch.where(finite, a, torch.zeros((), dtype=a.dtype, device=a.device))
    nonzero = a > 0
    for f in facts:
        half = f.smallest_subnormal / 2
        counts.append((a > f.max).sum())
        counts.append((nonzero & (a < half)).sum())
        counts.append(((a >= half) & (a < f.smallest_normal)).sum())
    absmax = a.amax() if a.numel() else torch.zeros((), device=a.device)
    return absmax, torch.stack(counts)


def _fractions(
    counts: Sequence[int], numel: int, facts: Sequence[FormatFacts]
) -> dict[str, Fractions]:
    n = max(numel, 1)
    return {
        f.name: Fractions(counts[1 + 3 * i] / n, counts[2 + 3 * i] / n, counts[3 + 3 * i] / n)
        for i, f in enumerate(facts)
    }


def tensor_fractions(x: torch.Tensor) -> dict[str, Fractions]:
    """What each format would do to one tensor (host values; for tests and expressions)."""
    facts = [format_facts(n) for n in FORMATS]
    _, counts = range_counts(x, facts)
    return _fractions(counts.tolist(), x.numel(), facts)


def head_logit_max(call: AttentionCall, batch: int = 0) -> torch.Tensor | None:
    """Per head, the largest q·kᵀ·scale the mask lets through (None without q and k)."""
    if call.q is None or call.k is None:
        return None
    q, k = call.q[batch].float(), call.k[batch].float()  # (nh, Tq, hs), (nkv, Tk, hs)
    nh, n_kv = q.size(0), k.size(0)
    if n_kv != nh:
        k = k.repeat_interleave(nh // n_kv, dim=0)  # (nh, Tk, hs)
    scale = call.scale if call.scale is not None else 1.0 / math.sqrt(q.size(-1))
    scores = (q @ k.transpose(-2, -1)) * scale  # (nh, Tq, Tk)
    Tq, Tk = scores.shape[-2:]
    allowed = torch.ones(Tq, Tk, dtype=torch.bool, device=scores.device)
    if call.is_causal:
        allowed = allowed.tril()
    if call.attn_mask is not None:
        mask = call.attn_mask[batch] if call.attn_mask.dim() == 4 else call.attn_mask
        allowed = allowed & (mask if mask.dtype == torch.bool else mask > -math.inf)
    scores.masked_fill_(~allowed, -math.inf)
    return scores.flatten(1).amax(1)  # (nh,)


def _heads(calls: dict[int, AttentionCall]) -> tuple[HeadNumerics, ...]:
    out: list[HeadNumerics] = []
    for layer in sorted(calls):
        call = calls[layer]
        entropy = [h.mean_entropy for h in head_summaries(recompute_pattern(call))]
        logits = head_logit_max(call)
        maxima = logits.cpu().tolist() if logits is not None else [None] * len(entropy)
        out.extend(
            HeadNumerics(layer, h, m, e)
            for h, (m, e) in enumerate(zip(maxima, entropy, strict=True))
        )
    return tuple(out)


class Cancels(Protocol):
    """What the what-if needs of the Debugger's runner (core/runner.py) to be cancelled."""

    def check(self, mid: int) -> Callable[[], None]: ...

    def cancellable_model(self, model: nn.Module) -> AbstractContextManager[None]: ...


class _Fp8Rounding:
    """A copy of the model whose Linear weights and inputs are rounded through fp8."""

    def __init__(self, model: nn.Module, dtype: torch.dtype, check: Callable[[], None]) -> None:
        self.model = dtype_copy(model, None, check)
        self.dtype = dtype
        with torch.no_grad():
            for m in self.model.modules():
                if isinstance(m, nn.Linear):
                    m.weight.copy_(self._round(m.weight))
                    m.register_forward_pre_hook(lambda _m, args: (self._round(args[0]), *args[1:]))

    def _round(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.dtype).to(x.dtype)


def _nan_last(x: float) -> float:
    return math.inf if math.isnan(x) else x


def what_if(
    model: nn.Module, ids: Sequence[int], name: str, runner: Cancels | None = None, mid: int = 0
) -> WhatIf:
    """Run `ids` in fp32 and in `name` and name the first module where they part. The
    copies carry none of the model's hooks; with `runner`, a cancel of move `mid` stops
    them being made (within a tensor) and run (within a block)."""
    dtype = check_format(name)
    check = runner.check(mid) if runner is not None else lambda: None
    own = compute_dtype_of(model)  # nanochat on a bf16 GPU computes in bf16 with fp32 weights
    fp32 = next(model.parameters()).dtype == torch.float32 and own in (None, torch.float32)
    base = model if fp32 else dtype_copy(model, torch.float32, check)
    fp8 = name.startswith("float8")
    if fp8:
        other = _Fp8Rounding(base, dtype, check).model
        tol = torch.finfo(dtype).eps  # one ulp relative: fp8 keeps 2-3 mantissa bits
    else:
        other = dtype_copy(base, dtype, check)
        tol = tolerance_for(dtype)
    other.eval()
    with ExitStack() as cancellable:
        # a model file with its own compute dtype (nanochat's) runs a copy cast to a dtype in
        # that dtype; the model itself (and its fp8 copy, kept as it is) as the session does
        if base is not model:
            cancellable.enter_context(own_compute_dtype(base, torch.float32))
            if fp8:
                cancellable.enter_context(own_compute_dtype(other, torch.float32))
        if not fp8:
            cancellable.enter_context(own_compute_dtype(other, dtype))
        if runner is not None:  # the model itself has the runner's checks already
            for copied in (m for m in (base, other) if m is not model):
                cancellable.enter_context(runner.cancellable_model(copied))
        result: Comparison = compare(
            Run(base, list(ids)),
            Run(other, list(ids), label=name),
            leaves=True,
            tolerance=tol,
            inputs=True,
        )
    ranked = sorted(((r.name, r.rel_diff) for r in result.records), key=lambda t: -_nan_last(t[1]))
    worst = ranked[:5]
    said = blame(result)
    return WhatIf(name, tol, said.amplifier, said.message, tuple(worst), said.crossed)


def numerics(
    session: Session,
    prompt: str | Sequence[int],
    dtype: str = "bfloat16",
    *,
    fp32_check: bool = True,
    runner: Cancels | None = None,
    mid: int = 0,
) -> NumericsReport:
    """The pass on `prompt`: per-module ranges in every format, per-head logits and entropy,
    the softcap, and (with `fp32_check`) where a pass in `dtype` parts from fp32 (`runner`
    and `mid`: the move that a cancel stops, see `what_if`)."""
    check_device_format(session.device, dtype)
    ids, note = session.prompt_ids(prompt)
    model = session.model
    held = next(model.parameters()).dtype
    own = compute_dtype_of(model)
    if held != torch.float32:  # the values asked about are then already rounded
        note = _join(note, f"the model runs in {str(held).removeprefix('torch.')}, not fp32")
    elif own not in (None, torch.float32):  # its activations, though its weights are fp32
        note = _join(note, f"the model file computes in {own} (its COMPUTE_DTYPE), not fp32")
    facts = [format_facts(n) for n in FORMATS]
    cap = float(getattr(session.config, "softcap", 0) or 0)
    kept: list[tuple[PendingRecord, torch.Tensor, torch.Tensor, torch.Tensor | None]] = []

    def listen(pending: PendingRecord, x: torch.Tensor) -> None:
        if pending.phase != "out" or pending.same_as is not None:
            return
        absmax, counts = range_counts(x, facts)
        beyond = None
        if cap and pending.point.kind == "head":
            beyond = (x.detach().float().abs() > cap).float().mean()
        kept.append((pending, absmax, counts, beyond))

    idx = torch.tensor([ids], dtype=torch.long, device=session.device)
    with Probes(model, leaves=True, attention_layers="all", listener=listen) as probes:
        probes.run(idx)
        heads = _heads(dict(probes.capture.calls))
    modules: list[ModuleNumerics] = []
    absmaxes = torch.stack([k[1] for k in kept]).cpu().tolist() if kept else []
    all_counts = torch.stack([k[2] for k in kept]).cpu().tolist() if kept else []
    softcap = None
    raw_absmax = None
    for (pending, _, _, beyond), absmax, counts in zip(kept, absmaxes, all_counts, strict=True):
        p = pending.point
        modules.append(
            ModuleNumerics(
                p.name,
                p.kind,
                pending.shape,
                pending.numel,
                absmax,
                int(counts[0]),
                _fractions(counts, pending.numel, facts),
            )
        )
        if beyond is not None:
            raw_absmax = (absmax, float(beyond))
    if cap and raw_absmax is not None:
        capped = next((m.absmax for m in modules if m.kind == "model"), float("nan"))
        softcap = Softcap(cap, raw_absmax[0], capped, raw_absmax[1])
    check = what_if(model, ids, dtype, runner, mid) if fp32_check else None
    if check is not None and not dtype.startswith("float8") and own is not None:
        said = f"the model file's COMPUTE_DTYPE was {dtype} in that pass"
        note = _join(note, f"{said}, as NANOCHAT_DTYPE={dtype} sets it")
    text = prompt if isinstance(prompt, str) else session.decode(ids)
    return NumericsReport(
        text, len(ids), dtype, tuple(facts), tuple(modules), heads, softcap, check, note
    )


def _join(a: str | None, b: str) -> str:
    return f"{a}; {b}" if a else b


def short_name(name: str) -> str:
    """bf16, fp16, e4m3, e5m2."""
    return _SHORT.get(name, name)
