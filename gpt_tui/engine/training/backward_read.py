"""Backward read module by module: each probed module's grad_output and grad_input stats,
in the order autograd produces them, and the gradient watchpoint over them.

The stats rows stay on the device until the step's gradient norms are copied to the host,
which they ride along with (`post_backward`, then `backward_events`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..analysis.probe_points import find_probe_points, first_tensor
from ..core.model_access import unwrap_model
from ..core.stats import Parcel, stats_row
from ..core.trace import TensorStats


@dataclass(frozen=True)
class BackwardEvent:
    index: int
    name: str
    kind: str
    grad_output: TensorStats | None
    grad_input: TensorStats | None  # None: no input needs a gradient (token ids)


@dataclass
class BackwardRecord:
    """What the backward hooks saw, in the order autograd called them: per module its
    name, kind, and the stats rows and sizes of grad_output and grad_input."""

    rows: list[tuple[str, str, Any, int, Any, int]] = field(default_factory=list)


def _poison(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[-1] = math.nan
    return t


def _grad_input_at(args: tuple) -> int | None:
    """Where the module's grad_input comes from: its first positional tensor needing one."""
    return next(
        (i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad), None
    )


def grad_hooks(
    model: nn.Module,
    record: BackwardRecord,
    check: Callable[[], None] | None,
    target: nn.Module | None = None,
) -> list[torch.utils.hooks.RemovableHandle]:
    """Backward read through tensor hooks (cheaper than full backward hooks, which wrap
    every module's inputs and outputs in an autograd Function): the gradient of a module's
    output is its grad_output; its input is replaced by an alias (a view) that the module
    alone uses, whose gradient is its grad_input, however else the input is used.
    `target`'s grad_input is made NaN (--inject-grad-nan)."""

    def event(name: str, kind: str, go: torch.Tensor | None, gi: torch.Tensor | None) -> None:
        if check is not None:
            check()
        record.rows.append((
            name, kind,
            stats_row(go) if go is not None else None, go.numel() if go is not None else 0,
            stats_row(gi) if gi is not None else None, gi.numel() if gi is not None else 0,
        ))  # fmt: skip

    def alias(module: nn.Module, args: tuple) -> tuple | None:
        at = _grad_input_at(args)
        if at is None:
            return None
        x = args[at].view_as(args[at])
        if module is target:
            x.register_hook(_poison)
        return (*args[:at], x, *args[at + 1 :])

    handles = []
    for point in find_probe_points(model):
        module = point.module
        if module is None or module is unwrap_model(model):
            continue

        def after(_m: nn.Module, args: tuple, out: Any, name=point.name, kind=point.kind) -> None:
            y, at = first_tensor(out), _grad_input_at(args)
            if y is None or not y.requires_grad:
                return
            if at is None:  # no input gradient (token ids): the event is the output's
                y.register_hook(lambda g: event(name, kind, g, None))
                return
            seen: list[torch.Tensor] = []
            y.register_hook(seen.append)  # autograd reaches the output first
            args[at].register_hook(lambda g: event(name, kind, seen[0] if seen else None, g))

        if not isinstance(module, nn.Embedding):
            handles.append(module.register_forward_pre_hook(alias))
        handles.append(module.register_forward_hook(after))
    return handles


def post_backward(record: BackwardRecord) -> tuple[Parcel, list[tuple[int, int]]]:
    """The backward's stats rows, posted to ride with the gradient norms' transfer, and
    where each goes: (event, 0 for grad_output / 1 for grad_input)."""
    rows, numels, where = [], [], []
    for i, (_, _, go, n_go, gi, n_gi) in enumerate(record.rows):
        for slot, row, n in ((0, go, n_go), (1, gi, n_gi)):
            if n:
                rows.append(row)
                numels.append(n)
                where.append((i, slot))
    return Parcel(rows, numels).post(), where


def backward_events(
    record: BackwardRecord, parcel: Parcel, where: list[tuple[int, int]]
) -> tuple[BackwardEvent, ...]:
    stats: dict[tuple[int, int], TensorStats] = dict(zip(where, parcel.read(), strict=True))
    return tuple(
        BackwardEvent(i, name, kind, stats.get((i, 0)), stats.get((i, 1)))
        for i, (name, kind, *_) in enumerate(record.rows)
    )


def backward_watch(events: tuple[BackwardEvent, ...]) -> str | None:
    """The first module (backward order) whose grad_input is non-finite, grad_output finite."""
    for e in events:
        bad_in = e.grad_input is not None and not e.grad_input.finite
        if bad_in and (e.grad_output is None or e.grad_output.finite):
            return e.name
    return None
