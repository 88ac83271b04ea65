"""The Debugger's line-level intents (frames.py): pdb-style line breakpoints, line moves,
expressions at the paused line and the tensor viewer's data.

A mixin of `Debugger` (debugger.py), which owns the state these methods read and write.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import FrameType
from typing import TYPE_CHECKING

from ..analysis.tensors import TensorView
from .debug_state import DebugState
from .frames import (
    LINE_MOVES,
    EvaluateError,
    Evaluation,
    ExpressionInterrupted,
    model_files,
    resolve_breakpoints,
    view_in_frame,
)
from .runner import MoveRunner, cancellable

if TYPE_CHECKING:
    from .session import Session
    from .stepping import ForwardStepper


class LineIntents:
    """Line stepping, as Debugger intents."""

    session: Session
    _stepper: ForwardStepper | None
    _line_breakpoints: frozenset[str]
    _evaluations: tuple[Evaluation, ...]
    _tensor_view: TensorView | None
    runner: MoveRunner
    _snapshot: Callable[..., DebugState]
    _advance: Callable[..., DebugState]

    def set_line_breakpoints(self, specs: Iterable[str], *, move: int | None = None) -> DebugState:
        """pdb-style `FILE:LINE` / `FUNCTION` breakpoints in the model's own code. One that
        matches nothing raises `BreakpointError` and the old set stays."""
        with self.runner.moving(move) as mid:
            specs = frozenset(specs)
            resolve_breakpoints(specs, model_files(self.session.model))
            self._line_breakpoints = specs
            if self._stepper is not None:
                self._stepper.set_line_breakpoints(specs)
            return self._snapshot(mid)

    def toggle_line_breakpoint(self, spec: str, *, move: int | None = None) -> DebugState:
        return self.set_line_breakpoints(self._line_breakpoints ^ {spec}, move=move)

    @cancellable
    def step_line(self, how: str, *, move: int | None = None) -> DebugState:
        """A line move (`next`, `into`, `return`, `continue`), starting a pass if needed."""
        if how not in LINE_MOVES:
            raise ValueError(f"unknown line move {how!r}: one of {', '.join(LINE_MOVES)}")
        return self.runner.intent(
            move, lambda mid: self._advance(mid, lambda s: s.step_line(how)), "step"
        )

    @cancellable
    def evaluate(self, expr: str, *, move: int | None = None) -> DebugState:
        """pdb's `p expr` in the paused frame, run in the forward thread. An error is one
        line in the evaluation (and the message); the pass stays paused."""
        with self.runner.moving(move) as mid:
            try:
                result = self._paused_stepper().evaluate(expr)
            except ExpressionInterrupted:  # a cancel or a quit stopped it
                result = Evaluation(expr, None, "interrupted")
            self._evaluations = (*self._evaluations, result)
            shown = result.error or (result.value.repr if result.value else "")
            interrupted = result.error == "interrupted"
            note = "; the pass is still paused" if interrupted else ""
            return self._snapshot(mid, f"{expr} → {shown}{note}", cancelled=interrupted)

    @cancellable
    def view_tensor(
        self,
        expr: str,
        fixed: tuple[int, ...] = (),
        *,
        row_start: int = 0,
        col_start: int = 0,
        move: int | None = None,
    ) -> DebugState:
        """The tensor viewer's data for a local or an expression at the paused line."""

        def view(frame: FrameType) -> TensorView:
            return view_in_frame(frame, expr, fixed, row_start=row_start, col_start=col_start)

        with self.runner.moving(move) as mid:
            try:
                self._tensor_view = self._paused_stepper().in_frame(view)
            except ExpressionInterrupted:
                return self._snapshot(mid, f"{expr}: interrupted", cancelled=True)
            return self._snapshot(mid, f"{expr}: {self._tensor_view.summary}")

    def _paused_stepper(self) -> ForwardStepper:
        stepper = self._stepper
        if stepper is None or stepper.frame is None:
            raise EvaluateError("expressions need a pass paused at a line (a line breakpoint)")
        return stepper
