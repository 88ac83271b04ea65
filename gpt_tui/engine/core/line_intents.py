"""The Debugger's line part (frames.py): pdb-style line breakpoints, expressions at the
paused line and the tensor viewer's data. The Debugger holds one and runs its intents."""

from __future__ import annotations

from collections.abc import Iterable
from types import FrameType
from typing import TYPE_CHECKING

from .debug_state import LineView
from .frames import (
    EvaluateError,
    Evaluation,
    ExpressionInterrupted,
    model_files,
    resolve_breakpoints,
    view_in_frame,
)

if TYPE_CHECKING:
    from .session import Session
    from .stepping import ForwardStepper
    from .tensors import TensorView


class Lines:
    """The Debugger's line part: it owns the line breakpoints and what was read at the
    current pause (expressions, the tensor viewer's data). The Debugger passes in its
    stepped pass; each intent returns the message to show and whether it was cut short."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._line_breakpoints: frozenset[str] = frozenset()
        self._evaluations: tuple[Evaluation, ...] = ()
        self._tensor_view: TensorView | None = None

    def view(self) -> LineView:
        return LineView(self._line_breakpoints, self._evaluations, self._tensor_view)

    @property
    def breakpoints(self) -> frozenset[str]:
        return self._line_breakpoints

    def set_breakpoints(self, specs: Iterable[str], stepper: ForwardStepper | None) -> None:
        """One that matches nothing raises `BreakpointError` and the old set stays."""
        specs = frozenset(specs)
        resolve_breakpoints(specs, model_files(self._session.model))
        self._line_breakpoints = specs
        if stepper is not None:
            stepper.set_line_breakpoints(specs)

    def forget_pause(self) -> None:
        """What was read at a pause is valid for that pause only."""
        self._evaluations, self._tensor_view = (), None

    def evaluate(self, expr: str, stepper: ForwardStepper | None) -> tuple[str, bool]:
        try:
            result = _paused(stepper).evaluate(expr)
        except ExpressionInterrupted:  # a cancel or a quit stopped it
            result = Evaluation(expr, None, "interrupted")
        self._evaluations = (*self._evaluations, result)
        shown = result.error or (result.value.repr if result.value else "")
        interrupted = result.error == "interrupted"
        note = "; the pass is still paused" if interrupted else ""
        return f"{expr} → {shown}{note}", interrupted

    def view_tensor(
        self,
        expr: str,
        fixed: tuple[int, ...],
        row_start: int,
        col_start: int,
        stepper: ForwardStepper | None,
    ) -> tuple[str, bool]:
        def view(frame: FrameType) -> TensorView:
            return view_in_frame(frame, expr, fixed, row_start=row_start, col_start=col_start)

        try:
            self._tensor_view = _paused(stepper).in_frame(view)
        except ExpressionInterrupted:
            return f"{expr}: interrupted", True
        return f"{expr}: {self._tensor_view.summary}", False


def _paused(stepper: ForwardStepper | None) -> ForwardStepper:
    if stepper is None or stepper.frame is None:
        raise EvaluateError("expressions need a pass paused at a line (a line breakpoint)")
    return stepper
