"""Where the FLOPs go: per module, for a forward pass and a training step, with the time
each module takes and the model FLOPs utilisation (MFU) against the device's peak.

FLOPs come from `torch.utils.flop_counter.FlopCounterMode`, which attributes each matmul
(and each attention kernel, forward and backward) to the modules running it; a module's own
FLOPs are its count minus its children's. Per module only the forward is shown: in backward
torch's counter charges the code between submodules (the attention kernel between c_k and
c_proj, dropout) to a neighbouring submodule, so the training step is counted as a whole.
On the CPU the counter has no formula for the CPU flash-attention kernel, so one is given
here from torch's own SDPA counts. Like nanoGPT's formula, SDPA is counted over the full
T×T square even when causal (half of it is masked). The gap to the formulas is split into
named parts (`Formula.parts`): the attention backward recomputes q·kᵀ when the kernel does
(+2·L·C·T per token; some kernels' counts do not), norm gains and biases are in N but do no
matmul (−6 each), a Linear that runs on fewer tokens than the batch has (nanochat's smear
gate: T−1 a row) does 6 per weight per token it skips less, and windowed layers are
counted over the full square.

The families' own formulas (`flops_formulas`: nanoGPT's estimate_mfu at T = block_size,
nanochat's estimate_flops with its sliding windows at T = sequence_len) are given at their
own T, as their training logs use them, and at the step's T against the measured count.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from ...errors import GptTuiError
from ..core.model_access import model_device, output_logits
from ..training.step import restored, training_logits, wants_targets
from .flops_formulas import (
    NANOGPT_PEAK,
    model_estimate_flops,
    model_estimate_mfu,
    nanochat_formula,
    nanogpt_formula,
)
from .memory import check_autocast, make_optimizer, training_precision

if TYPE_CHECKING:
    from ..core.session import Session

OUTSIDE = "(outside modules)"
TERA = 1e12

# Dense (no sparsity) tensor-core peaks in TFLOP/s: bf16, fp16, fp32 (fp32 without TF32).
# Matched in order against torch.cuda.get_device_name: the more specific names first.
GPU_PEAKS: tuple[tuple[str, float | None, float, float], ...] = (
    ("H100 PCIe", 756.0, 756.0, 51.0),
    ("H100", 989.4, 989.4, 67.0),  # SXM
    ("A100", 312.0, 312.0, 19.5),
    ("A10G", 70.0, 70.0, 31.2),
    ("L40S", 362.0, 362.0, 91.6),
    ("A10", 125.0, 125.0, 31.2),
    ("L4", 121.0, 121.0, 30.3),
    ("RTX 4090", 165.2, 165.2, 82.6),
    ("RTX 3090", 71.0, 71.0, 35.6),
    ("V100", None, 125.0, 15.7),  # no bf16
    ("T4", None, 65.0, 8.1),
)


class CostError(GptTuiError):
    """A size that cannot be costed; the message says what to change."""


@dataclass(frozen=True)
class ModuleCost:
    name: str
    forward_flops: int  # the module's own, children excluded
    forward_ms: float | None  # own wall (CPU) or CUDA-event time of one forward; None: not timed


@dataclass(frozen=True)
class GapPart:
    """One named part of the gap between the measured count and the formula."""

    label: str  # what it is: "smear_gate on 15 of 16 tokens a row"
    per_token: float  # FLOPs per token it adds (+) or takes away (−)


@dataclass(frozen=True)
class StepCount:
    """One training step (forward, cross-entropy, backward) under the counter."""

    total: int
    forward: dict[str, int]  # own FLOPs per module in the step's forward (train mode)
    ops: dict[str, int]  # the step's FLOPs per aten op, forward and backward


@dataclass(frozen=True)
class Formula:
    """The family's own formula next to the measured count, and its MFU as its log prints it."""

    name: str  # "nanoGPT estimate_mfu formula" / "nanochat estimate_flops"
    context: int  # the T the family's code uses: block_size / sequence_len
    per_token: float  # training FLOPs per token at `context`, as the family computes them
    block: int  # the measured step's T
    at_block: float  # the same formula at `block`
    measured_per_token: float  # FlopCounterMode's count at `block`
    difference: float  # (measured − at_block) / at_block
    non_matmul: int  # norm gains and biases: in N, but no matmul (6 each per token)
    window_extra: float  # the counter charges windowed layers the full T×T square
    attention_extra: float  # per token: the attention backward's recompute of q·kᵀ
    parts: tuple[GapPart, ...]  # measured − at_block per token, part by part; they add up
    model_says: float | None  # the model object's own estimate_flops(), when it has one
    model_error: str | None  # why calling it failed
    mfu: float | None  # as the family's training log computes it; None: not timed / no peak
    mfu_basis: str  # how: the tokens counted and the peak divided by
    model_mfu: float | None  # the model object's own estimate_mfu(batch, dt) (nanoGPT's)


@dataclass(frozen=True)
class CostReport:
    device: str
    device_name: str
    dtype: str
    batch: int
    block: int
    modules: tuple[ModuleCost, ...]
    forward_flops: int
    train_flops: int
    step_seconds: float
    peak_flops: float | None  # per second; None: unknown device (the CPU)
    formula: Formula | None

    @property
    def achieved(self) -> float:
        return self.train_flops / self.step_seconds if self.step_seconds > 0 else 0.0

    @property
    def mfu(self) -> float | None:
        return None if not self.peak_flops else self.achieved / self.peak_flops


def _cpu_sdpa(q, k, v, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(q, k, v)


def _cpu_sdpa_backward(grad_out, q, k, v, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, q, k, v)


def _custom_mapping() -> dict[Any, Callable[..., int]]:
    aten = torch.ops.aten
    out: dict[Any, Callable[..., int]] = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        out[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa
        out[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_sdpa_backward
    return out


def peak_for_name(name: str, dtype: torch.dtype) -> float | None:
    """Dense peak FLOP/s of the GPU called `name` in `dtype`, None when not in the table."""
    for key, bf16, fp16, fp32 in GPU_PEAKS:
        if key in name:
            peak = {torch.bfloat16: bf16, torch.float16: fp16}.get(dtype, fp32)
            return peak * TERA if peak else None
    return None


def device_peak(device: torch.device, dtype: torch.dtype) -> tuple[str, float | None]:
    """The device's name and its dense peak FLOP/s in `dtype` (None when not known)."""
    if device.type != "cuda":
        return (device.type, None)
    name = torch.cuda.get_device_name(device)
    return (name, peak_for_name(name, dtype))


def _self_counts(counts: dict[str, int], root: str) -> dict[str, int]:
    """FlopCounter names ("GPT.transformer.h.0.attn") -> module paths with own counts."""
    paths = {}
    for name, n in counts.items():
        if name == "Global":
            continue
        path = name[len(root) + 1 :] if name.startswith(root + ".") else ""
        paths[path] = n
    own = dict(paths)
    for path, n in paths.items():
        if path:
            parent = path.rsplit(".", 1)[0] if "." in path else ""
            while parent not in paths and parent:
                parent = parent.rsplit(".", 1)[0] if "." in parent else ""
            own[parent] = own.get(parent, 0) - n
    outside = counts.get("Global", 0) - paths.get("", 0)
    own[OUTSIDE] = outside
    return {k: n for k, n in own.items() if n}


def _own_counts(counter: FlopCounterMode, model: nn.Module) -> dict[str, int]:
    counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    return _self_counts(counts, type(model).__name__)


def count_flops(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Own FLOPs per module path of one forward on x."""
    counter = FlopCounterMode(display=False, depth=None, custom_mapping=_custom_mapping())
    with counter:
        output_logits(model(x))
    return _own_counts(counter, model)


def count_step(model: nn.Module, x: torch.Tensor) -> StepCount:
    """The FLOPs of one training step on x: in all, per module in its forward, per op."""
    counter = FlopCounterMode(display=False, depth=None, custom_mapping=_custom_mapping())
    targets = wants_targets(model, x)
    with counter:
        logits = training_logits(model, x, torch.zeros_like(x), targets)
        forward = _own_counts(counter, model)  # the backward's attribution is not reliable
        F.cross_entropy(logits.float().flatten(0, -2), x.flatten()).backward()
    ops = {str(op): n for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return StepCount(sum(ops.values()), forward, ops)


def qk_recompute(ops: dict[str, int]) -> int:
    """What the attention kernels' backward counts beyond twice their forward: the q·kᵀ
    (and softmax) they recompute rather than keep."""
    sdpa = {op: n for op, n in ops.items() if "scaled_dot_product" in op}
    backward = sum(n for op, n in sdpa.items() if op.endswith("backward"))
    return backward - 2 * (sum(sdpa.values()) - backward)


def short_linears(model: nn.Module, step: StepCount, batch: int, block: int) -> list[GapPart]:
    """Each Linear whose forward ran on other than B·T rows (nanochat's smear gate reads the
    T−1 tokens that have a previous one): 6 per weight per token off the formula's 6·N."""
    parts = []
    for name, m in model.named_modules():
        if not isinstance(m, nn.Linear):
            continue
        rows = step.forward.get(name, 0) / (2 * m.weight.numel())
        if rows != batch * block:
            per_token = 6 * m.weight.numel() * (rows - batch * block) / (batch * block)
            parts.append(GapPart(f"{name} on {rows / batch:g} of {block} tokens a row", per_token))
    return parts


class _Timer:
    """Own time of each module in one forward: wall clock, or CUDA events on a GPU."""

    def __init__(self, model: nn.Module) -> None:
        self.device = model_device(model)
        self.cuda = self.device.type == "cuda"
        self.marks: dict[str, list[Any]] = {}
        self.children = {
            n: [f"{n}.{c}" if n else c for c, _ in m.named_children()]
            for n, m in model.named_modules()
        }
        self.handles = []
        for name, module in model.named_modules():
            self.handles.append(module.register_forward_pre_hook(self._mark(name, 0)))
            self.handles.append(module.register_forward_hook(self._mark(name, 1)))

    def _now(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self.device))
            return event
        return time.perf_counter()

    def _mark(self, name: str, which: int):
        def hook(*_args: Any) -> None:
            self.marks.setdefault(name, [None, None])[which] = self._now()

        return hook

    def own_ms(self) -> dict[str, float]:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        total = {}
        for name, (start, end) in self.marks.items():
            if start is None or end is None:
                continue
            total[name] = start.elapsed_time(end) if self.cuda else (end - start) * 1e3
        return {
            n: t - sum(total.get(c, 0.0) for c in self.children.get(n, []))
            for n, t in total.items()
        }

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _step_seconds(model: nn.Module, x: torch.Tensor, precision: AbstractContextManager) -> float:
    """Wall time of one training step (the second of two: the first warms up)."""
    device = model_device(model)
    with precision, restored(model):
        model.train()
        opts = make_optimizer(model, "adamw")
        targets = wants_targets(model, x)
        seconds = 0.0
        for _ in range(2):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            logits = training_logits(model, x, x, targets)
            loss = F.cross_entropy(logits.float().flatten(0, -2), x.flatten())
            loss.backward()
            for opt in opts:
                opt.step()
                opt.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
    return seconds


def non_matmul_params(model: nn.Module) -> int:
    """Parameters that no matmul uses: norm gains and biases (shared ones counted once)."""
    seen: set[int] = set()
    n = 0
    for m in model.modules():
        for p in m.parameters(recurse=False):
            matmul = isinstance(m, nn.Linear) and p.dim() == 2
            if id(p) not in seen and not matmul and not isinstance(m, nn.Embedding):
                seen.add(id(p))
                n += p.numel()
    return n


def _formula(
    session: Session, batch: int, block: int, step: StepCount, seconds: float, device_name: str
) -> Formula | None:
    """The family's formula against the measured FLOPs per token, and the family's MFU."""
    model = session.model
    chat = session.family == "nanochat"
    fam = (nanochat_formula if chat else nanogpt_formula)(model, session.context_len)
    if fam is None:
        return None
    at_block = fam.per_token(block)
    nm = 0 if chat else non_matmul_params(model)  # nanochat's N has the Linear weights only
    # the counter charges SDPA the full square: a windowed layer's formula term does not
    full = replace(fam, windows=(None,) * len(fam.windows))
    window_extra = full.per_token(block) - at_block
    measured = step.total / (batch * block)
    recompute = qk_recompute(step.ops) / (batch * block)
    parts = [GapPart("norm gains and biases (in N, no matmul)", -6 * nm)] if nm else []
    if window_extra:
        parts.append(GapPart("windowed layers counted over all T", window_extra))
    parts += short_linears(model, step, batch, block)
    if recompute:
        parts.append(GapPart("attention backward recomputes q·kᵀ", recompute))
    rest = measured - at_block - sum(p.per_token for p in parts)
    if abs(rest) > 1e-6 * max(at_block, 1):
        parts.append(GapPart("other (not in the formula)", rest))
    own, error = model_estimate_flops(model)
    mfu, model_mfu = None, None
    if chat:
        peak = peak_for_name(device_name, torch.bfloat16)
        basis = "estimate_flops · B·T / dt / the GPU's bf16 peak"
        if seconds > 0 and peak:
            mfu = fam.per_token() * batch * block / seconds / peak
    else:
        basis = f"(per token) · block_size {fam.context} · B / dt / A100 bf16 312 TFLOP/s"
        if seconds > 0:
            mfu = fam.per_token() * fam.context * batch / seconds / NANOGPT_PEAK
            model_mfu, mfu_error = model_estimate_mfu(model, batch, seconds)
            error = error or mfu_error
    return Formula(
        fam.name, fam.context, fam.per_token(), block, at_block, measured,
        (measured - at_block) / at_block, nm, window_extra, recompute, tuple(parts), own,
        error, mfu, basis, model_mfu,
    )  # fmt: skip


def cost_report(
    session: Session,
    batch: int,
    block: int,
    *,
    timing: bool = True,
    autocast: str | None = None,
) -> CostReport:
    """FLOPs per module of a forward and a training step at (batch, block), each module's
    forward time, the step's time (under `autocast`, as `memory.training_precision`) and
    its MFU where the device's peak is known."""
    context = session.context_len
    if context is not None and block > context:
        raise CostError(f"--block {block} is longer than the model's context ({context})")
    model = session.model
    device = session.device
    x = torch.zeros((batch, block), dtype=torch.long, device=device)
    with restored(model):
        model.eval()
        forward = count_flops(model, x)
        step = count_step(model, x)
    ms: dict[str, float] = {}
    seconds = 0.0
    amp = check_autocast(device, autocast)
    if timing and device.type != "meta":
        timer = _Timer(model)
        try:
            with training_precision(model, amp, session.family), torch.no_grad():
                model(x)  # warm-up
                for _ in range(3):  # each module's fastest of three: a busy CPU adds noise
                    timer.marks.clear()
                    model(x)
                    for name, t in timer.own_ms().items():
                        ms[name] = min(ms.get(name, t), t)
        finally:
            timer.close()
        seconds = _step_seconds(model, x, training_precision(model, amp, session.family))
    names = [n for n, _ in model.named_modules()] + [OUTSIDE]
    modules = tuple(
        ModuleCost(n, forward[n], ms.get(n) if ms else None) for n in names if forward.get(n, 0)
    )
    dtype = amp or next(model.parameters()).dtype  # the matmuls run in the autocast dtype
    device_name, peak = device_peak(device, dtype)
    formula = _formula(session, batch, block, step, seconds, device_name)
    return CostReport(
        str(device),
        device_name,
        str(dtype).removeprefix("torch."),
        batch,
        block,
        modules,
        sum(forward.values()),
        step.total,
        seconds,
        peak,
        formula,
    )
