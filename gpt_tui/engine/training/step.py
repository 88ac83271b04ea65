"""One training step laid open: forward -> loss -> backward -> optimizer, on one batch.

- Forward runs with grad under the probes (`inputs=True`), so the forward NaN watch is the
  stepper's: the first module whose output holds NaN/Inf while its input did not.
- The loss is cross-entropy per row and mean over the scored targets (`-1` is ignored, as
  nanoGPT / nanochat). With every target ignored the mean is 0/0: NaN, said in words.
- Backward: tensor hooks on every probed module's output and input (backward_read.py)
  record grad_output / grad_input stats in the order autograd produces them (the reverse
  of forward). The gradient watchpoint is the first module whose grad_input holds NaN/Inf
  while its grad_output was finite.
- After backward: per-parameter gradient norms, the global norm before and after clipping;
  then an AdamW (or SGD) step and each parameter's update ratio ||dw|| / ||w||.
- The weights, buffers and `.grad`s are put back bit-exactly unless `keep`.

Stats are computed on the device in the hooks and read back once per phase.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ...errors import GptTuiError
from ...io.batches import IGNORE, Batch
from ..analysis.interventions import get_module, inject_nonfinite
from ..analysis.probes import Probes
from ..core.model_access import model_device, output_logits, unwrap_model
from ..core.stats import to_host
from ..core.trace import ProbeRecord, TensorStats
from .backward_read import (
    BackwardEvent,
    BackwardRecord,
    backward_events,
    backward_watch,
    grad_hooks,
    post_backward,
)
from .held_values import HeldValues, held_text, module_parameters, nonfinite_parameters
from .snapshot import restored

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
    held: tuple[HeldValues, ...] = ()  # at a forward one: the module's non-finite weights

    @property
    def text(self) -> str:
        """`forward at transformer.h.1.mlp (….c_fc.weight already held 1 NaN …)`."""
        held = held_text(self.held, "at this forward")
        return f"{self.phase} at {self.where}" + (f" ({held})" if held else "")


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


# What `wants_targets` found, per model: asking costs a forward, and the answer is the
# model's (its forward's signature and what it returns), not the batch's.
_WANTS_TARGETS: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()


def wants_targets(model: nn.Module, x: torch.Tensor) -> bool:
    """True when the forward gives every position's logits only with targets, as upstream
    nanoGPT does (nanochat returns the loss alone then: it is called without)."""
    import inspect

    known = _WANTS_TARGETS.get(model)
    if known is not None:
        return known
    with torch.no_grad():
        logits = output_logits(model(x[:1]))
    every = logits.dim() == 3 and logits.shape[:2] == x[:1].shape
    wants = not every and "targets" in inspect.signature(model.forward).parameters
    _WANTS_TARGETS[model] = wants
    return wants


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


# `train_step`'s optimizer per model, put back to a fresh one's state before each step:
# AdamW's moments are twice the weights' size, and allocating them anew every step costs
# more than the update itself (the allocator hands back fresh pages, faulted in one by one).
_OPTIMIZERS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, torch.optim.Optimizer]] = (
    weakref.WeakKeyDictionary()
)


def _fits(state: dict[str, Any], p: torch.Tensor) -> bool:
    return all(
        v.dim() == 0 or (v.shape, v.dtype, v.device) == (p.shape, p.dtype, p.device)
        for v in state.values()
        if isinstance(v, torch.Tensor)
    )


def fresh_optimizer(
    model: nn.Module, params: list[nn.Parameter], opts: StepOptions
) -> torch.optim.Optimizer:
    """An optimizer as `make_optimizer` makes it, reusing the memory of the last one made
    here for the same model and settings: its state is zeroed, which is how a new AdamW's
    starts (step 0, both moments 0); any other optimizer is made anew."""
    key = (opts.optimizer, opts.lr, opts.betas, opts.weight_decay, tuple(map(id, params)))
    cached = _OPTIMIZERS.get(model)
    if opts.optimizer == "adamw" and cached is not None and cached[0] == key:
        optimizer = cached[1]
        states = [(optimizer.state[p], p) for p in params if p in optimizer.state]
        if all(_fits(state, p) for state, p in states):
            with torch.no_grad():
                for state, _ in states:
                    for v in state.values():
                        if isinstance(v, torch.Tensor):
                            v.zero_()
            return optimizer
    optimizer = make_optimizer(params, opts)
    if opts.optimizer == "adamw":
        _OPTIMIZERS[model] = (key, optimizer)
    return optimizer


class Stepper:
    """One model prepared for training steps: its optimizer, scaler and names.

    `step(batch)` takes one step (weights change); `train_step` wraps it in `restored`.
    `fresh` reuses the optimizer memory of the last such Stepper of the model: only for
    one Stepper at a time.
    """

    def __init__(self, model: nn.Module, opts: StepOptions, fresh: bool = False) -> None:
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
        make = fresh_optimizer if fresh else lambda _m, params, o: make_optimizer(params, o)
        self.optimizer = make(model, self.params, opts)
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
        record = BackwardRecord()
        with ExitStack() as stack:
            # Overflowing statistics are what is being debugged here: no numpy warnings.
            stack.enter_context(np.errstate(over="ignore", invalid="ignore"))
            if opts.inject_nan:  # before the probes, so that they see the NaN
                for h in inject_nonfinite(opts.inject_nan).install(unwrap_model(model)):
                    stack.callback(h.remove)
            probes = stack.enter_context(Probes(model, inputs=True))
            for h in grad_hooks(model, record, check, self._grad_nan_target()):
                stack.callback(h.remove)
            with torch.enable_grad():
                try:
                    with torch.autocast(self.device.type, self.dtype, enabled=bool(self.dtype)):
                        logits = training_logits(model, x, y, self._targets)
                except BaseException:
                    probes.abandon_pass()
                    raise
                loss, rows = row_losses(logits, y)
            # The phase's one transfer: the loss, its rows, the count scored, and the
            # probes' stats of the forward riding along.
            host = to_host(loss.detach(), rows, (y != IGNORE).sum())
            forward = tuple(probes.records)
            loss_value, row_values, scored = float(host[0]), tuple(host[1].tolist()), int(host[2])
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
        parcel, slots = post_backward(record)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        # The phase's one transfer: the gradient norms, the backward's stats riding along.
        (host_norms,) = to_host(_norms([g.detach().float() for g in grads]))
        norms = host_norms.tolist()
        events = backward_events(record, parcel, slots)
        where = backward_watch(events)
        if first is None and where is not None:
            first = NonFinite("backward", where)
        report.update(backward=events, first_nonfinite=first)
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
            torch._foreach_mul_(grads, coef)
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
        # The gradients are spent (their norms taken; `restored` puts the caller's back):
        # their memory takes the update, sparing a weights-sized allocation.
        for g, p, b in zip(grads, self.params, old, strict=True):
            torch.sub(p.detach(), b, out=g)
        diffs = [d.float() for d in grads]
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

    def _grad_nan_target(self) -> nn.Module | None:
        """The module whose grad_input --inject-grad-nan makes NaN, if asked."""
        path = self.opts.inject_grad_nan
        if not path:
            return None
        target = check_module(self.model, path, "--inject-grad-nan")
        if isinstance(target, nn.Embedding):
            raise TrainingError(
                f"--inject-grad-nan {path}: an embedding's input is token ids, "
                f"it has no input gradient (name a block, attn or mlp)"
            )
        return target

    def _forward_nonfinite(
        self, forward: tuple[ProbeRecord, ...], loss: float, note: str | None
    ) -> NonFinite | None:
        where = forward_watch(forward)
        if where is not None:  # one read, only now: does the module compute with a NaN weight?
            held = nonfinite_parameters(module_parameters(unwrap_model(self.model), where))
            return NonFinite("forward", where, held)
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
        return Stepper(model, opts, fresh=True).step(batch, check, saved)
