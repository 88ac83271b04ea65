"""What a training step holds in memory, per module, and a forecast for other sizes.

`measure_step` runs one real training step (forward, cross-entropy, backward, optimizer) on
random tokens, with the weights put back afterwards, and measures:

- parameter bytes and gradient bytes, per module that owns the parameter (shared tensors
  counted once, under their first owner);
- optimizer state bytes: whatever the optimizer keeps per parameter after its step (AdamW's
  two moments; Muon's momentum buffer, with AdamW for what Muon cannot take, as nanochat);
- activation bytes saved for backward, seen by `torch.autograd.graph.saved_tensors_hooks`
  and attributed to the innermost module whose forward was running (storages counted once,
  parameters left out: they are already counted);
- the peak: `torch.cuda.max_memory_allocated` on CUDA; elsewhere the measured tensors
  (parameters + gradients + optimizer state + saved activations; workspace not counted).

Precision is the training's, not a cast of the model: with `autocast` (nanoGPT's train.py
`dtype`) the step runs under `torch.autocast`, so weights, gradients and optimizer state
stay in the weights' dtype (fp32) and the activations are in the autocast dtype. nanochat
instead keeps its Linear weights fp32, casts activations itself and stores its embeddings
(wte, value embeddings) in the compute dtype unless that is fp16; a nanochat model's step
does the same here. The low-precision copies autocast makes of the weights are held for
backward: they are counted as `weight_copies`, which do not grow with the batch.

Not every saved tensor grows with the batch: nanoGPT's wpe saves its (T,) position ids, a
sliced mask buffer is one storage whatever the batch. So `fit_memory` measures the report's
length at batches 2 and 3: per module, what the third batch row added grows with the batch
and the rest does not (`batch_free`, the row's value at batch 0 of that line). Batch 1 is
not measured: with one row PyTorch's reshapes are views it copies at any larger batch
(nanochat's smear gate reads a view of the normed x at batch 1, a copy of it from batch 2),
so the second row can add more than the first. With a second length it fits
peak(B, T) = fixed + s·T + B·(a·T + b·T²) (s·T: the activations that do not grow with the
batch; the T² term is attention that keeps its weights), checks the fit against one more
measured size, and forecasts any batch and length, or the largest batch that fits in a
budget. At the report's length the rows add up to the forecast.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...errors import GptTuiError
from ..core.model_access import find_block_list, model_device
from ..training.step import autocast_dtype, restored, training_logits, wants_targets

if TYPE_CHECKING:
    from ..core.session import Session

GIB = 1024**3
OPTIMIZERS = ("adamw", "muon")
OUTSIDE = "(outside modules)"  # the loss, computed after the model returns


class MemoryError_(GptTuiError):
    """A size that cannot be measured or cannot fit; the message says what would."""


@dataclass(frozen=True)
class ModuleMemory:
    name: str  # module path ("" is the model itself, for what its own forward saves)
    params: int
    grads: int
    optimizer: int
    activations: int
    weight_copies: int = 0  # autocast's low-precision copies of the weights, kept for backward
    batch_free: int = 0  # of the activations, bytes that do not grow with the batch

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.activations + self.weight_copies

    def at_batch(self, batch: int) -> ModuleMemory:
        """This row (at batch 1) at `batch`: only what grows with it is scaled."""
        per_row = self.activations - self.batch_free
        return replace(self, activations=self.batch_free + batch * per_row)


@dataclass(frozen=True)
class StepMemory:
    """One measured training step."""

    batch: int
    block: int
    modules: tuple[ModuleMemory, ...]  # module order; modules holding nothing left out
    peak: int
    peak_source: str  # "cuda max_memory_allocated" or "measured tensors"

    def total(self, field: str) -> int:
        return sum(getattr(m, field) for m in self.modules)

    @property
    def fixed(self) -> int:
        """What does not grow with the batch: parameters, gradients, optimizer state and
        autocast's weight copies."""
        return sum(self.total(f) for f in ("params", "grads", "optimizer", "weight_copies"))


@dataclass(frozen=True)
class MemoryFit:
    """peak(B, T) = fixed + shared_per_token·T + B·(per_token·T + per_token_sq·T²), from
    three measured steps (two lengths at batch 2, one of them at batch 3 too)."""

    fixed: float
    per_token: float
    per_token_sq: float
    measured: tuple[tuple[int, int, int], ...]  # (batch, block, peak) the fit came from
    check: tuple[int, int, int]  # one more measured (batch, block, peak)
    check_error: float  # |forecast − measured| / measured at the check
    shared_per_token: float = 0.0  # activations that do not grow with the batch, per token

    def forecast(self, batch: int, block: int) -> float:
        return self._base(block) + batch * self._per_row(block)

    def largest_batch(self, budget: float, block: int) -> int:
        """The largest batch whose forecast peak is within `budget` bytes (0: none)."""
        base, per_row = self._base(block), self._per_row(block)
        if per_row <= 0:
            return 0 if base > budget else 2**31
        return max(0, int((budget - base) // per_row))

    def _base(self, block: int) -> float:
        return self.fixed + self.shared_per_token * block

    def _per_row(self, block: int) -> float:
        return self.per_token * block + self.per_token_sq * block * block


@dataclass(frozen=True)
class MemoryReport:
    device: str
    optimizer: str
    batch: int
    block: int
    step: StepMemory  # batch 1 on the line through batches 2 and 3 at length `block`
    modules: tuple[ModuleMemory, ...]  # at the asked batch: what grows with it scaled by it
    fit: MemoryFit
    forecast: float  # bytes at (batch, block)
    budget: float | None  # --fit, bytes
    largest_batch: int | None  # within the budget at `block`
    precision: str = ""  # what the step holds in which dtype


def _owner_of_params(model: nn.Module) -> dict[int, str]:
    """id(param) -> the module path that owns it first."""
    owners: dict[int, str] = {}
    for name, module in model.named_modules():
        for p in module.parameters(recurse=False):
            owners.setdefault(id(p), name)
    return owners


def make_optimizer(model: nn.Module, name: str) -> list[torch.optim.Optimizer]:
    """AdamW on everything, or (`muon`) Muon on the 2-D weights inside the blocks and AdamW
    on the rest (embeddings, head, gains), as nanochat splits them."""
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "adamw":
        return [torch.optim.AdamW(params, lr=1e-4)]
    if name != "muon":
        raise MemoryError_(f"unknown optimizer {name!r}: use {' or '.join(OPTIMIZERS)}")
    found = find_block_list(model)
    in_blocks = {id(p) for p in found[1].parameters()} if found else set()
    matrices = [p for p in params if p.dim() == 2 and id(p) in in_blocks]
    rest = [p for p in params if id(p) not in {id(m) for m in matrices}]
    out: list[torch.optim.Optimizer] = []
    if matrices:
        out.append(torch.optim.Muon(matrices, lr=1e-4))
    if rest:
        out.append(torch.optim.AdamW(rest, lr=1e-4))
    return out


class _SavedTensors:
    """saved_tensors_hooks plus forward hooks: saved bytes per running module."""

    def __init__(self, model: nn.Module) -> None:
        self.stack: list[str] = []
        self.saved: dict[str, int] = defaultdict(int)
        self.copies: dict[str, int] = defaultdict(int)  # autocast's casts of parameters
        self.param_ids = {id(p) for p in model.parameters()}
        self.seen: set[tuple[int, str]] = set()
        self.params = {self._key(p) for p in model.parameters()}
        self.handles: list[Any] = []
        for name, module in model.named_modules():
            self.handles.append(module.register_forward_pre_hook(self._enter(name)))
            self.handles.append(module.register_forward_hook(self._leave, always_call=True))
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    @staticmethod
    def _key(t: torch.Tensor) -> tuple[int, str]:
        return (t.untyped_storage().data_ptr(), str(t.device))

    def _enter(self, name: str):
        def hook(_m: nn.Module, _args: tuple) -> None:
            self.stack.append(name)

        return hook

    def _leave(self, _m: nn.Module, _args: tuple, _out: Any) -> None:
        if self.stack:
            self.stack.pop()

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        if t.device.type == "meta":  # no storage to tell apart
            return t
        key = self._key(t)
        if key not in self.params and key not in self.seen:
            self.seen.add(key)
            into = self.copies if self._is_weight_copy(t) else self.saved
            into[self.stack[-1] if self.stack else OUTSIDE] += t.untyped_storage().nbytes()
        return t

    def _is_weight_copy(self, t: torch.Tensor) -> bool:
        """A cast of a parameter (autocast's, or a model's own `weight.to(x.dtype)`), or a
        view of one (a Linear saves the transposed weight)."""
        fn = (t._base if t._is_view() and t._base is not None else t).grad_fn
        if fn is None or type(fn).__name__ != "ToCopyBackward0" or not fn.next_functions:
            return False
        source = fn.next_functions[0][0]
        return id(getattr(source, "variable", None)) in self.param_ids

    def close(self) -> None:
        for h in self.handles:
            h.remove()


@contextmanager
def training_precision(
    model: nn.Module, autocast: torch.dtype | None, family: str | None
) -> Iterator[None]:
    """The step's precision as the family trains: autocast, and for nanochat its embeddings
    stored in the compute dtype (not fp16). The weights' own tensors are put back after."""
    cast: list[tuple[nn.Parameter, torch.Tensor]] = []
    if autocast is not None and autocast != torch.float16 and family == "nanochat":
        for m in model.modules():
            if isinstance(m, nn.Embedding) and m.weight.dtype != autocast:
                cast.append((m.weight, m.weight.data))
                m.weight.data = m.weight.data.to(autocast)
    device = model_device(model)
    try:
        with torch.autocast(device.type, autocast or torch.float32, enabled=bool(autocast)):
            yield
    finally:
        for p, data in cast:
            p.data = data


def measure_step(
    model: nn.Module,
    batch: int,
    block: int,
    optimizer: str = "adamw",
    vocab_size: int | None = None,
    seed: int = 0,
    autocast: torch.dtype | None = None,
    family: str | None = None,
) -> StepMemory:
    """One real training step at (batch, block) on random tokens, in the precision the
    family trains with (see `training_precision`); the weights, gradients and mode are put
    back afterwards."""
    device = model_device(model)
    if vocab_size is None:
        emb = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
        vocab_size = emb.num_embeddings if emb is not None else 2
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab_size, (batch, block), generator=gen).to(device)
    y = torch.randint(0, vocab_size, (batch, block), generator=gen).to(device)
    owners = _owner_of_params(model)
    cuda = device.type == "cuda"
    with training_precision(model, autocast, family), restored(model):
        model.train()
        for p in model.parameters():
            p.grad = None
        opts = make_optimizer(model, optimizer)
        targets = wants_targets(model, x)
        saved = _SavedTensors(model)
        try:
            baseline = 0
            if cuda:  # the peak above what is held now (weights, the copy `restored` keeps)
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                baseline = torch.cuda.memory_allocated(device)
            with saved.hooks:
                logits = training_logits(model, x, y, targets)
                loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))
            loss.backward()
            del logits, loss
            for opt in opts:
                opt.step()
            peak_cuda = torch.cuda.max_memory_allocated(device) - baseline if cuda else 0
        except torch.OutOfMemoryError:
            raise MemoryError_(
                f"batch {batch} x {block} tokens does not fit on {device}: "
                "try a smaller --batch or --block"
            ) from None
        finally:
            saved.close()
        per: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
        seen: set[int] = set()
        for p in model.parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            row = per[owners[id(p)]]
            row[0] += p.nbytes
            row[1] += p.grad.nbytes if p.grad is not None else 0
            for opt in opts:
                state = opt.state.get(p, {})
                row[2] += sum(v.nbytes for v in state.values() if torch.is_tensor(v) and v.dim())
        for name, nbytes in saved.saved.items():
            per[name][3] += nbytes
        for name, nbytes in saved.copies.items():
            per[name][4] += nbytes
        for p in model.parameters():
            p.grad = None
    order = [n for n, _ in model.named_modules()] + [OUTSIDE]
    modules = tuple(ModuleMemory(n, *per[n]) for n in order if n in per)
    step = StepMemory(batch, block, modules, 0, "measured tensors")
    if cuda:  # the weights were already there: add them back
        peak = step.total("params") + peak_cuda
        return StepMemory(batch, block, modules, peak, "cuda max_memory_allocated")
    return StepMemory(
        batch, block, modules, step.fixed + step.total("activations"), "measured tensors"
    )


def _solve(t1: int, r1: float, t2: int, r2: float) -> tuple[float, float]:
    """a, b with a·T + b·T² = r through (t1, r1) and (t2, r2) (b = 0 if one T)."""
    if t1 == t2:
        return (r1 + r2) / (2 * t1), 0.0
    det = t1 * t2 * t2 - t2 * t1 * t1
    return (r1 * t2 * t2 - r2 * t1 * t1) / det, (t1 * r2 - t2 * r1) / det


def fit_lengths(block: int, context: int | None) -> tuple[int, int]:
    """Two distinct lengths to fit through: half of `block` and `block`, or for a block of 1
    lengths 1 and 2 (the same length twice when the context is 1 token)."""
    if block >= 2:
        return block // 2, block
    return (1, 2) if context is None or context >= 2 else (1, 1)


def fit_sizes(block: int, context: int | None) -> tuple[tuple[int, int], ...]:
    """The (batch, length) steps `fit_memory` measures, in order: both lengths at batch 2,
    `block` at batch 3 (what grows with the batch), and the check: batch 3 at the other
    length (batch 4 when there is one length)."""
    t1, t2 = fit_lengths(block, context)
    other = t1 if block == t2 else t2
    check = (3, other) if other != block else (4, block)
    return (2, t1), (2, t2), (3, block), check


def batch_line(two: StepMemory, three: StepMemory) -> StepMemory:
    """The rows at batch 1 on the line through batches 2 and 3: per module, one batch row's
    activations (what batch 3 added) and batch_free (batch 2's less two such rows)."""
    at = [{m.name: m for m in s.modules} for s in (two, three)]
    rows = []
    for name in dict.fromkeys([*at[0], *at[1]]):  # a module saving only at batch 3 too
        m = at[0].get(name) or replace(at[1][name], activations=0)
        per_row = at[1].get(name, replace(m, activations=0)).activations - m.activations
        rows.append(replace(m, activations=m.activations - per_row,
                            batch_free=m.activations - 2 * per_row))  # fmt: skip
    return StepMemory(1, two.block, tuple(rows), 2 * two.peak - three.peak, two.peak_source)


def fit_memory(
    model: nn.Module,
    block: int,
    optimizer: str = "adamw",
    vocab_size: int | None = None,
    *,
    context: int | None = None,
    autocast: torch.dtype | None = None,
    family: str | None = None,
) -> tuple[MemoryFit, StepMemory]:
    """Measure the `fit_sizes`, fit, and check. Returns the fit and the `batch_line` at
    `block`, whose modules (with their batch_free) are the per-module breakdown."""
    (_, t1), (_, t2), (_, tb), (cb, ct) = fit_sizes(block, context)
    steps: dict[tuple[int, int], StepMemory] = {}

    def measured(b: int, t: int) -> StepMemory:
        if (b, t) not in steps:
            steps[b, t] = measure_step(model, b, t, optimizer, vocab_size, 0, autocast, family)
        return steps[b, t]

    two, three = measured(2, tb), measured(3, tb)
    line = batch_line(two, three)
    fixed = float(two.fixed)
    per_row = three.peak - two.peak  # at tb: what one more batch row adds
    shared = (two.peak - fixed - 2 * per_row) / tb  # per token, grown with T but not with B
    other = t1 if tb == t2 else t2  # the length measured at batch 2 only
    a, b = _solve(tb, per_row, other, (measured(2, other).peak - fixed - shared * other) / 2)
    points = ((2, t1, measured(2, t1).peak), (2, t2, measured(2, t2).peak), (3, tb, three.peak))
    check = measured(cb, ct)
    fit = MemoryFit(fixed, a, b, points, (cb, ct, check.peak), 0.0, shared)
    error = abs(fit.forecast(cb, ct) - check.peak) / max(check.peak, 1)
    return replace(fit, check_error=error), line


def memory_report(
    session: Session,
    batch: int,
    block: int,
    *,
    optimizer: str = "adamw",
    budget_gib: float | None = None,
    autocast: str | None = None,
) -> MemoryReport:
    """Per-module memory of a training step at (batch, block), and the forecast; raises a
    one-line error for a length beyond the context or a batch beyond the budget."""
    if session.device.type == "meta":
        raise MemoryError_("memory is measured in a real step; --device meta has none (use cpu)")
    if optimizer not in OPTIMIZERS:
        raise MemoryError_(f"unknown optimizer {optimizer!r}: use {' or '.join(OPTIMIZERS)}")
    context = session.context_len
    if context is not None and block > context:
        raise MemoryError_(f"--block {block} is longer than the model's context ({context})")
    if budget_gib is not None and budget_gib <= 0:
        raise MemoryError_(f"--fit {budget_gib:g}: give a budget above 0 GiB")
    amp = check_autocast(session.device, autocast)
    vocab = session.vocab_size
    fit, step = fit_memory(
        session.model, block, optimizer, vocab, context=context, autocast=amp,
        family=session.family,
    )  # fmt: skip
    modules = tuple(m.at_batch(batch) for m in step.modules)
    forecast = fit.forecast(batch, block)
    budget = budget_gib * GIB if budget_gib is not None else None
    if budget is None and session.device.type == "cuda":
        budget = float(torch.cuda.get_device_properties(session.device).total_memory)
    largest = fit.largest_batch(budget, block) if budget is not None else None
    if budget is not None and forecast > budget:
        where = f"--fit {budget_gib:g} GiB" if budget_gib is not None else f"{session.device}"
        fits = f"the largest batch that fits is {largest}" if largest else "not even batch 1 fits"
        raise MemoryError_(
            f"batch {batch} x {block} tokens needs about {forecast / GIB:.3g} GiB, more than "
            f"{where}: {fits} (or shorten --block)"
        )
    return MemoryReport(
        str(session.device), optimizer, batch, block, step, modules, fit, forecast, budget,
        largest, precision(session.model, amp, session.family),
    )  # fmt: skip


def check_autocast(device: torch.device, name: str | None) -> torch.dtype | None:
    """The autocast dtype `name` names (None: float32, no autocast), checked on `device`."""
    dtype = autocast_dtype(name)
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise MemoryError_(f"--dtype bfloat16: {device} has no bfloat16; use float16")
    return dtype


def precision(model: nn.Module, autocast: torch.dtype | None, family: str | None) -> str:
    """One line: what the step holds in which dtype."""
    weights = _short(next(model.parameters()).dtype)
    if autocast is None:
        return f"weights, grads, optimizer state and activations in {weights} (no autocast)"
    emb = ""
    if family == "nanochat" and autocast != torch.float16:
        emb = f" (embeddings {_short(autocast)}, as nanochat stores them)"
    return (
        f"weights, grads and optimizer state {weights}{emb}; activations under "
        f"{_short(autocast)} autocast"
    )


def _short(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
