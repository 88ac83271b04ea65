"""The Cost tab's view: numerics, memory and FLOPs of the open model, each computed on
request by the same functions the `numerics`, `memory` and `cost` commands call."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...errors import GptTuiError
from .flops import CostReport, cost_report
from .memory import MemoryReport, memory_report
from .numerics import Cancels, NumericsReport, numerics

if TYPE_CHECKING:
    from ..core.session import Session

KINDS = ("numerics", "cost")


@dataclass(frozen=True)
class MeasuresView:
    """The last numerics report (on `prompt`) and the last memory and FLOPs reports."""

    numerics: NumericsReport | None = None
    memory: MemoryReport | None = None
    cost: CostReport | None = None


def measure(
    session: Session,
    prompt: str,
    view: MeasuresView | None,
    kind: str,
    *args: object,
    runner: Cancels | None = None,
    mid: int = 0,
) -> MeasuresView:
    """`view` with one part recomputed: ("numerics", dtype) on the prompt, or ("cost",
    batch, block) for memory and FLOPs of a training step of that size. `runner`, `mid`:
    the move whose cancel stops the numerics' model copies."""
    view = view or MeasuresView()
    if kind == "numerics":
        (dtype,) = args
        report = numerics(session, prompt, str(dtype), runner=runner, mid=mid)
        return dataclasses.replace(view, numerics=report)
    if kind == "cost":
        batch, block = (int(a) for a in args)  # type: ignore[call-overload]
        return dataclasses.replace(
            view,
            memory=memory_report(session, batch, block),
            cost=cost_report(session, batch, block),
        )
    raise GptTuiError(f"unknown measure {kind!r}: use {' or '.join(KINDS)}")
