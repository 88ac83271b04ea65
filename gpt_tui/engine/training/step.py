"""One training step laid open: forward -> loss -> backward -> optimizer, on one batch.

- Forward runs with grad under the probes (`inputs=True`), so the forward NaN watch is the
  stepper's: the first module whose output holds NaN/Inf while its input did not.
- The loss is cross-entropy per row and mean over the scored targets (`-1` is ignored, as
  nanoGPT / nanochat). With every target ignored the mean is 0/0: NaN, said in words.
- Backward: full backward hooks on every probed module record grad_output / grad_input
  stats in the order autograd calls them (the reverse of forward). The gradient watchpoint
  is the first module whose grad_input holds NaN/Inf while its grad_output was finite.
- After backward: per-parameter gradient norms, the global norm before and after clipping;
  then an AdamW (or SGD) step and each parameter's update ratio ||dw|| / ||w||.
- The weights, buffers and `.grad`s are put back bit-exactly unless `keep`.

Stats are computed on the device in the hooks and read back once per phase.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ...errors import GptTuiError
from ...io.batches import IGNORE, Batch
from ..analysis.interventions import get_module, inject_nonfinite
from ..analysis.probes import Probes, find_probe_points, first_tensor, unwrap_model
from ..core.model_access import model_device, output_logits
from ..core.stats import rows_to_stats, stats_row
from ..core.trace import ProbeRecord, TensorStats

Phase = Literal["forward", "loss", "backward", "optimizer"]
ZERO_TARGETS = "the loss averages over zero targets: NaN (every target is -1)"


class TrainingError(GptTuiError, ValueError):
    """A training step cannot run as asked (a bad module name, an unknown dtype)."""


@dataclass(frozen=True)
class StepOptions:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    optimizer: Literal["adamw", "sgd"] = "adamw"
    clip: float | None = 1.0  # max global grad norm (None: no clipping)
    dtype: str | None = None  # autocast dtype: "float16" | "bfloat16"
    watch_nan: bool = False  # stop the step at the first non-finite phase
    inject_nan: str | None = None  # a module whose forward output gets a NaN
    inject_grad_nan: str | None = None  # a module whose grad_input gets a NaN in backward
    keep: bool = False  # keep the updated weights
    train_mode: bool = False  # dropout on


@dataclass(frozen=True)
class NonFinite:
    phase: Phase
    where: str


@dataclass(frozen=True)
class BackwardEvent:
    index: int
    name: str
    kind: str
    grad_output: TensorStats | None
    grad_input: TensorStats | None  # None: no input needs a gradient (token ids)


@dataclass(frozen=True)
class ParamRow:
    name: str
    shape: tuple[int, ...]
    grad_norm: float
    param_norm: float
    update_ratio: float | None = None  # ||dw|| / ||w|| of the optimizer step


@dataclass(frozen=True)
class StepReport:
    """Everything one step saw, detached and on the host."""

    loss: float
    row_losses: tuple[float, ...]
    scored_targets: int
    loss_note: str | None
    forward: tuple[ProbeRecord, ...]  # module outputs in execution order
    backward: tuple[BackwardEvent, ...]  # in the order autograd ran them
    first_nonfinite: NonFinite | None
    params: tuple[ParamRow, ...] = ()  # in model order
    grad_norm: float = math.nan  # global, before clipping
    grad_norm_clipped: float = math.nan
    nonfinite_grads: int = 0  # gradient elements that are NaN/Inf
    phases_run: tuple[Phase, ...] = ()
    kept: bool = False
    scaler: str | None = None  # what the fp16 gradient scaler did, on CUDA

    @property
    def max_update_ratio(self) -> float:
        ratios = [p.update_ratio for p in self.params if p.update_ratio is not None]
        return max(ratios, default=math.nan)


@dataclass
class _Backward:
    """What the backward hooks saw, in the order autograd called them: per module its
    name, kind, and the stats rows and sizes of grad_output and grad_input."""

    rows: list[tuple[str, str, Any, int, Any, int]] = field(default_factory=list)


def check_module(model: nn.Module, path: str, what: str) -> nn.Module:
    try:
        return get_module(unwrap_model(model), path)
    except GptTuiError as err:
        raise TrainingError(f"{what}: {err}") from None


def autocast_dtype(name: str | None) -> torch.dtype | None:
    if name in (None, "", "float32"):
        return None
    dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16}
    if name not in dtypes:
        raise TrainingError(f"--dtype {name}: autocast takes float16 or bfloat16 (or float32)")
    return dtypes[name]


def _poison(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[-1] = math.nan
    return t


def _grad_hooks(
    model: nn.Module, opts: StepOptions, record: _Backward, check: Callable[[], None] | None
) -> list[torch.utils.hooks.RemovableHandle]:
    handles = []
    if opts.inject_grad_nan:
        target = check_module(model, opts.inject_grad_nan, "--inject-grad-nan")
        if isinstance(target, nn.Embedding):
            raise TrainingError(
                f"--inject-grad-nan {opts.inject_grad_nan}: an embedding's input is token ids, "
                f"it has no input gradient (name a block, attn or mlp)"
            )

        def inject(_m: nn.Module, grad_input: tuple, _grad_output: tuple) -> tuple:
            return tuple(None if g is None else _poison(g) for g in grad_input)

        handles.append(target.register_full_backward_hook(inject))
    for point in find_probe_points(model):
        if point.module is None or point.module is unwrap_model(model):
            continue

        def hook(_m: nn.Module, gin: tuple, gout: tuple, name=point.name, kind=point.kind) -> None:
            if check is not None:
                check()
            go, gi = first_tensor(gout), first_tensor(gin)
            rows = (
                stats_row(go) if go is not None else None,
                go.numel() if go is not None else 0,
                stats_row(gi) if gi is not None else None,
                gi.numel() if gi is not None else 0,
            )
            record.rows.append((name, kind, *rows))

        if isinstance(point.module, nn.Embedding):
            # Its input is token ids, with no gradient: a hook on its output's gradient.
            def on_output(_m: nn.Module, _args: tuple, out: Any, hook=hook) -> None:
                if isinstance(out, torch.Tensor) and out.requires_grad:
                    out.register_hook(lambda g, m=_m: hook(m, (None,), (g,)))

            handles.append(point.module.register_forward_hook(on_output))
        else:
            handles.append(point.module.register_full_backward_hook(hook))
    return handles


def _events(record: _Backward) -> tuple[BackwardEvent, ...]:
    rows, numels, where = [], [], []
    for i, (_, _, go, n_go, gi, n_gi) in enumerate(record.rows):
        for slot, row, n in ((0, go, n_go), (1, gi, n_gi)):
            if n:
                rows.append(row)
                numels.append(n)
                where.append((i, slot))
    stats: dict[tuple[int, int], TensorStats] = dict(
        zip(where, rows_to_stats(rows, numels), strict=True)
    )
    return tuple(
        BackwardEvent(i, name, kind, stats.get((i, 0)), stats.get((i, 1)))
        for i, (name, kind, *_) in enumerate(record.rows)
    )


def forward_watch(records: tuple[ProbeRecord, ...]) -> str | None:
    """The first module whose output holds NaN/Inf while its input was finite."""
    last_in: dict[str, TensorStats] = {}
    for r in records:
        if r.kind == "resid":
            continue
        if r.phase == "in":
            last_in[r.name] = r.stats
        elif not r.stats.finite and (r.name not in last_in or last_in[r.name].finite):
            return r.name
    return None


def backward_watch(events: tuple[BackwardEvent, ...]) -> str | None:
    """The first module (backward order) whose grad_input is non-finite, grad_output finite."""
    for e in events:
        bad_in = e.grad_input is not None and not e.grad_input.finite
        if bad_in and (e.grad_output is None or e.grad_output.finite):
            return e.name
    return None


def row_losses(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss (a graph tensor) and per-row losses, with -1 targets ignored."""
    nll = F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)),
        y.reshape(-1),
        ignore_index=IGNORE,
        reduction="none",
    ).view(y.shape)
    counts = (y != IGNORE).sum(dim=1)
    mean = nll.sum() / counts.sum()  # 0/0 = NaN when nothing is scored, as upstream
    return mean, nll.detach().sum(dim=1) / counts


def wants_targets(model: nn.Module, x: torch.Tensor) -> bool:
    """True when the forward gives every position's logits only with targets, as upstream
    nanoGPT does (nanochat returns the loss alone then: it is called without)."""
    import inspect

    with torch.no_grad():
        logits = output_logits(model(x[:1]))
    every = logits.dim() == 3 and logits.shape[:2] == x[:1].shape
    return not every and "targets" in inspect.signature(model.forward).parameters


def training_logits(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, targets: bool
) -> torch.Tensor:
    """Logits for every position, the model called as `wants_targets` said."""
    logits = output_logits(model(x, targets=y) if targets else model(x))
    if logits.dim() != 3 or logits.shape[:2] != x.shape:
        raise TrainingError(
            f"a training step needs logits for every position {tuple(x.shape)} + (V,); "
            f"the model returned {tuple(logits.shape)}"
        )
    return logits


# One snapshot buffer per model, reused step after step: copying into memory already
# mapped is about twice as fast as cloning into fresh pages. A nested `restored` of the
# same model (while the buffer is in use) gets fresh copies.
_SNAPSHOTS: weakref.WeakKeyDictionary[nn.Module, dict[str, torch.Tensor]] = (
    weakref.WeakKeyDictionary()
)
_IN_USE: set[int] = set()


def _snapshot(
    model: nn.Module, state: dict[str, torch.Tensor], check: Callable[[], None] | None
) -> dict[str, torch.Tensor]:
    """Copies of `state`, into the model's buffer when it fits; `check()` before each."""
    check = check or (lambda: None)
    buffers = _SNAPSHOTS.get(model) if id(model) not in _IN_USE else None
    fits = (
        buffers is not None
        and buffers.keys() == state.keys()
        and all(
            (b.shape, b.dtype, b.device) == (v.shape, v.dtype, v.device)
            for b, v in zip(buffers.values(), state.values(), strict=True)
        )
    )
    if not fits:
        buffers = {}
        for k, v in state.items():
            check()
            buffers[k] = v.detach().clone()
        if id(model) not in _IN_USE:
            _SNAPSHOTS[model] = buffers
        return buffers
    with torch.no_grad():
        for k, v in state.items():
            check()
            buffers[k].copy_(v.detach())
    return buffers


@contextmanager
def restored(
    model: nn.Module, keep: bool = False, check: Callable[[], None] | None = None
) -> Iterator[dict[str, torch.Tensor]]:
    """Parameters and buffers (bit-exact copies), `.grad`s and the mode put back on exit.
    `check()` runs before each tensor is saved: a cancel there has changed nothing. The
    copies it yields are valid inside the block only."""
    owner = id(model) not in _IN_USE
    saved = _snapshot(model, model.state_dict(keep_vars=True), check)
    _IN_USE.add(id(model))
    grads = {n: p.grad for n, p in model.named_parameters()}
    mode = model.training
    try:
        yield saved
    finally:
        if owner:
            _IN_USE.discard(id(model))
        if not keep:
            with torch.no_grad():
                for k, v in model.state_dict(keep_vars=True).items():
                    v.detach().copy_(saved[k])
        for n, p in model.named_parameters():
            p.grad = grads[n]
        model.train(mode)


def _norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of each tensor, as one tensor (one dispatch for all: `_foreach_norm`)."""
    return torch.stack(torch._foreach_norm(tensors)) if tensors else torch.zeros(0)


def make_optimizer(params: list[nn.Parameter], opts: StepOptions) -> torch.optim.Optimizer:
    if opts.optimizer == "sgd":
        return torch.optim.SGD(params, lr=opts.lr, weight_decay=opts.weight_decay)
    decay = [p for p in params if p.dim() >= 2]  # as nanoGPT: no decay on gains and biases
    rest = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": opts.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=opts.lr, betas=opts.betas)


class Stepper:
    """One model prepared for training steps: its optimizer, scaler and names.

    `step(batch)` takes one step (weights change); `train_step` wraps it in `restored`.
    """

    def __init__(self, model: nn.Module, opts: StepOptions) -> None:
        self.model = model
        self.opts = opts
        self.device = model_device(model)
        self.dtype = autocast_dtype(opts.dtype)
        if opts.inject_nan:
            check_module(model, opts.inject_nan, "--inject-nan")
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise TrainingError("no parameter requires grad: there is nothing to train")
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.optimizer = make_optimizer(self.params, opts)
        fp16_cuda = self.dtype == torch.float16 and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if fp16_cuda else None
        self._targets: bool | None = None

    def step(
        self,
        batch: Batch,
        check: Callable[[], None] | None = None,
        before: dict[str, torch.Tensor] | None = None,
    ) -> StepReport:
        """One step; `before` may hold copies of the weights as they are now (by name),
        which spares copying them again to measure the update."""
        opts, model = self.opts, self.model
        x, y = batch.x.to(self.device), batch.y.to(self.device)
        model.train(opts.train_mode)
        if self._targets is None:  # asked once, before any hook sees a forward
            self._targets = wants_targets(model, x)
        for p in self.params:
            p.grad = None
        record = _Backward()
        with ExitStack() as stack:
            # Overflowing statistics are what is being debugged here: no numpy warnings.
            stack.enter_context(np.errstate(over="ignore", invalid="ignore"))
            if opts.inject_nan:  # before the probes, so that they see the NaN
                for h in inject_nonfinite(opts.inject_nan).install(unwrap_model(model)):
                    stack.callback(h.remove)
            probes = stack.enter_context(Probes(model, inputs=True))
            for h in _grad_hooks(model, opts, record, check):
                stack.callback(h.remove)
            with torch.enable_grad():
                try:
                    with torch.autocast(self.device.type, self.dtype, enabled=bool(self.dtype)):
                        logits = training_logits(model, x, y, self._targets)
                except BaseException:
                    probes.abandon_pass()
                    raise
                forward = tuple(probes.records)
                loss, rows = row_losses(logits, y)
            scored = int((y != IGNORE).sum())
            loss_value, row_values = float(loss.detach()), tuple(rows.tolist())
            note = ZERO_TARGETS if scored == 0 else None
            first = self._forward_nonfinite(forward, loss_value, note)
            phases: list[Phase] = ["forward", "loss"]
            report = dict(
                loss=loss_value, row_losses=row_values, scored_targets=scored, loss_note=note,
                forward=forward, backward=(), first_nonfinite=first,
            )  # fmt: skip
            if first is not None and opts.watch_nan:
                return StepReport(**report, phases_run=tuple(phases))
            scaled = self.scaler.scale(loss) if self.scaler is not None else loss
            scaled.backward()
            phases.append("backward")
        events = _events(record)
        where = backward_watch(events)
        if first is None and where is not None:
            first = NonFinite("backward", where)
        report.update(backward=events, first_nonfinite=first)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        norms = _norms([g.detach().float() for g in grads]).tolist()  # one transfer
        total = math.sqrt(sum(n * n for n in norms))
        # Only a gradient whose norm is not finite can hold NaN/Inf: count those alone.
        bad = {i: int((~torch.isfinite(grads[i])).sum()) for i, n in enumerate(norms)
               if not math.isfinite(n)}  # fmt: skip
        if first is None and any(bad.values()):
            i = next(i for i, count in bad.items() if count)
            first = NonFinite("backward", f"the gradient of {self.names[i]}")
        report.update(first_nonfinite=first, grad_norm=total, nonfinite_grads=sum(bad.values()))
        clipped = total
        if opts.clip is not None and math.isfinite(total) and total > opts.clip:
            coef = opts.clip / (total + 1e-6)  # as torch's clip_grad_norm_
            for g in grads:
                g.mul_(coef)
            clipped = total * coef
        report["grad_norm_clipped"] = clipped
        if first is not None and opts.watch_nan:
            return StepReport(**report, params=self._rows(norms, None), phases_run=tuple(phases))
        saved = before or {}
        old = [saved[n] if n in saved else p.detach().clone()
               for n, p in zip(self.names, self.params, strict=True)]  # fmt: skip
        if self.scaler is not None:
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.scaler.get_scale() < scale:
                new = self.scaler.get_scale()
                report["scaler"] = f"fp16 overflow: step skipped, scale {scale:g} -> {new:g}"
        else:
            self.optimizer.step()
        phases.append("optimizer")
        now = [p.detach() for p in self.params]
        diffs = [d.float() for d in torch._foreach_sub(now, old)]
        updates = torch.stack([_norms(diffs), _norms([b.float() for b in old])], 1).tolist()
        if first is None:
            broken = [n for n, (d, _) in zip(self.names, updates, strict=True)
                      if not math.isfinite(d)]  # fmt: skip
            if broken:
                report["first_nonfinite"] = NonFinite("optimizer", f"the update of {broken[0]}")
        return StepReport(
            **report, params=self._rows(norms, updates), phases_run=tuple(phases),
            kept=opts.keep,
        )  # fmt: skip

    def _forward_nonfinite(
        self, forward: tuple[ProbeRecord, ...], loss: float, note: str | None
    ) -> NonFinite | None:
        where = forward_watch(forward)
        if where is not None:
            return NonFinite("forward", where)
        if not math.isfinite(loss):
            return NonFinite("loss", note or "cross-entropy of finite logits")
        return None

    def _rows(self, gn: list[float], updates: list[list[float]] | None) -> tuple[ParamRow, ...]:
        """Per parameter: grad norm, weight norm (before the update) and update ratio."""
        ratios: list[float | None] = [None] * len(gn)
        if updates is None:
            pn = torch.stack([p.detach().float().norm() for p in self.params]).tolist()
        else:
            ratios = [d / w if w > 0 else None for d, w in updates]
            pn = [w for _, w in updates]
        return tuple(
            ParamRow(n, tuple(p.shape), g, w, r)
            for n, p, g, w, r in zip(self.names, self.params, gn, pn, ratios, strict=True)
        )


def train_step(
    model: nn.Module,
    batch: Batch,
    opts: StepOptions | None = None,
    check: Callable[[], None] | None = None,
) -> StepReport:
    """One step on `batch`; the model is exactly as before unless `opts.keep`."""
    opts = opts or StepOptions()
    with torch.inference_mode(False), restored(model, opts.keep, check) as saved:
        return Stepper(model, opts).step(batch, check, saved)
