"""The Debugger's line part (frames.py): pdb-style line breakpoints (numbered, with hit
and ignore counts, temporary, disabled and conditional ones), display expressions,
expressions at the paused line and the tensor viewer's data. The Debugger holds one and
runs its intents."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import astuple
from types import FrameType
from typing import TYPE_CHECKING

from ...errors import GptTuiError
from .debug_state import Display, LineView
from .frames import (
    EvaluateError,
    Evaluation,
    ExpressionInterrupted,
    evaluate_in,
    model_files,
    resolve_breakpoints,
    view_in_frame,
)
from .line_breakpoints import BreakpointInfo, BreakpointTable
from .line_commands import run_line_command

if TYPE_CHECKING:
    from .session import Session
    from .stepping import ForwardStepper
    from .tensors import TensorView

MAX_DISPLAYS = 20  # each is evaluated at every line pause


class DisplayError(GptTuiError):
    """A display expression that is not one, or an undisplay that names none."""


class Lines:
    """The Debugger's line part: it owns the line breakpoints, the display expressions and
    what was read at the current pause (expressions, displays, the tensor viewer's data,
    the breakpoint stopped at). The Debugger passes in its stepped pass; each intent
    returns the message to show and whether it was cut short."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._table = BreakpointTable()
        self._evaluations: tuple[Evaluation, ...] = ()
        self._tensor_view: TensorView | None = None
        self._displays: dict[str, int] = {}  # expr -> its number (never reused, as pdb's)
        self._next_display = 1
        # at this pause: expr -> (its evaluation, the last line pause's if it changed)
        self._shown: dict[str, tuple[Evaluation, Evaluation | None]] = {}
        self._last: dict[str, Evaluation] = {}  # each display at the last line pause
        self._hit: BreakpointInfo | None = None

    def view(self) -> LineView:
        displays = tuple(
            Display(number, expr, *self._display_now(expr))
            for expr, number in self._displays.items()
        )
        return LineView(
            self._table.enabled,
            self._evaluations,
            self._tensor_view,
            self._table.view(),
            displays,
            self._hit,
        )

    def _display_now(self, expr: str) -> tuple[Evaluation | None, bool, Evaluation | None]:
        evaluation, previous = self._shown.get(expr, (None, None))
        return evaluation, previous is not None, previous

    # -- breakpoints --------------------------------------------------------------------

    @property
    def breakpoints(self) -> frozenset[str]:
        """Every one, disabled too."""
        return self._table.specs

    def attach(self, stepper: ForwardStepper) -> None:
        """A new pass counts hits in this part's table and stops at its enabled
        breakpoints (a disabled one arms no line events)."""
        stepper.lines.table = self._table
        if self._table.enabled:
            stepper.set_line_breakpoints(self._table.enabled)

    def count_hits(self, stepper: ForwardStepper, on: bool) -> None:
        """Off while a pass is re-run to where it was (a replay): hits, ignore counts and
        temporary breakpoints are left as the first run left them."""
        stepper.lines.table = self._table if on else None

    def set_breakpoints(self, specs: Iterable[str], stepper: ForwardStepper | None) -> None:
        """One that matches nothing raises `BreakpointError` and the old set stays. New
        ones are numbered in the order given."""
        specs = list(specs)
        self._resolve(specs)
        self._table.set(specs)
        self._sync(stepper)

    def add_breakpoint(self, spec: str, temporary: bool, stepper: ForwardStepper | None) -> str:
        self._resolve([spec])
        row = self._table.add(spec, temporary)
        self._sync(stepper)
        return f"{'temporary ' if temporary else ''}breakpoint {row.number} at {row.spec}"

    def ignore(self, number: int, count: int) -> str:
        """pdb's `ignore`: the next `count` hits of breakpoint `number` pass."""
        row = self._table.ignore(number, count)
        if count == 0:
            return f"breakpoint {number} will stop the next time it is reached"
        hits = "hit" if count == 1 else f"{count} hits"
        return f"will ignore the next {hits} of breakpoint {number} ({row.spec})"

    def enable(self, numbers: Iterable[int], on: bool, stepper: ForwardStepper | None) -> str:
        """pdb's `enable N...` and `disable N...`: a disabled breakpoint keeps its number
        and counts but neither stops nor counts hits."""
        rows = self._table.enable(numbers, on)
        self._sync(stepper)
        verb = "enabled" if on else "disabled"
        return "; ".join(f"{verb} breakpoint {r.number} at {r.spec}" for r in rows)

    def condition(self, number: int, expr: str | None, stepper: ForwardStepper | None) -> str:
        """pdb's `condition N [EXPR]`: replaced, or removed without EXPR."""
        row = self._table.condition(number, expr)
        self._sync(stepper)
        where, _, held = row.spec.partition(" if ")
        if not held:
            return f"breakpoint {number} is now unconditional ({where})"
        return f"breakpoint {number} stops at {where} only if {held}"

    def _resolve(self, specs: Iterable[str]) -> None:
        resolve_breakpoints(specs, model_files(self._session.model))

    def _sync(self, stepper: ForwardStepper | None) -> None:
        if stepper is not None:
            stepper.set_line_breakpoints(self._table.enabled)

    # -- pauses -------------------------------------------------------------------------

    def forget_pause(self) -> None:
        """What was read at a pause is valid for that pause only."""
        self._evaluations, self._tensor_view = (), None
        self._shown, self._hit = {}, None

    def paused(self, stepper: ForwardStepper) -> str:
        """A new pause: the breakpoint it stopped at (a temporary one is gone now) and,
        at a line, every display expression evaluated in the frame. The note to show."""
        hit, frame = self._table.take_hit(), stepper.frame  # taken always: none left stale
        self._hit = hit if frame is not None and frame.reason == "breakpoint" else None
        note = ""
        if self._hit is not None and self._hit.error is not None:
            note = f"; error in breakpoint {self._hit.number}'s condition: {self._hit.error}"
        if self._hit is not None and self._hit.temporary and self._hit.error is None:
            stepper.set_line_breakpoints(stepper.lines.breakpoints.specs - {self._hit.spec})
            note += f"; deleted temporary breakpoint {self._hit.number} at {self._hit.spec}"
        if stepper.frame is None or not self._displays:
            return note
        evaluations = _evaluate_all(stepper, list(self._displays))
        cut = False
        for ev in evaluations:
            if ev.error == "interrupted":  # no value: the last one stays the one to compare
                self._shown[ev.expr], cut = (ev, None), True
                continue
            last = self._last.get(ev.expr)
            changed = last is not None and _key(last) != _key(ev)
            self._shown[ev.expr] = (ev, last if changed else None)
            self._last[ev.expr] = ev
        return note + ("; display interrupted" if cut else "")

    # -- display expressions ------------------------------------------------------------

    def display(self, expr: str, stepper: ForwardStepper | None) -> tuple[str, bool]:
        """pdb's `display EXPR`: evaluated at every line pause from now on, and now if the
        pass is paused at a line."""
        expr = expr.strip()
        try:
            compile(expr, "<display>", "eval")
        except SyntaxError as err:
            raise DisplayError(
                f"display {expr!r}: not a Python expression ({err.msg}); display takes an "
                "expression such as 'x.norm()' (run a statement with !STATEMENT)"
            ) from None
        if expr not in self._displays:
            if len(self._displays) >= MAX_DISPLAYS:
                raise DisplayError(
                    f"at most {MAX_DISPLAYS} display expressions; undisplay one first"
                )
            self._displays[expr], self._next_display = self._next_display, self._next_display + 1
        if stepper is None or stepper.frame is None:
            return f"display {expr}: shown at the next pause at a line", False
        (ev,) = _evaluate_all(stepper, [expr])
        self._shown[expr] = (ev, None)
        cut = ev.error == "interrupted"
        if not cut:
            self._last[expr] = ev
        shown = ev.error or (ev.value.repr if ev.value else "")
        return f"display {expr}: {shown}", cut

    def undisplay(self, which: str | int | None) -> str:
        """pdb's `undisplay [EXPR]`, also by number (the others keep theirs); None or ""
        clears every one."""
        if which is None or str(which).strip() == "":
            self._displays, self._shown = {}, {}
            return "no display expressions"
        text = str(which).strip()
        numbered = {str(n): e for e, n in self._displays.items()}
        expr = numbered.get(text) or (text if text in self._displays else None)
        if expr is None:
            listed = ", ".join(f"{n} {e}" for e, n in self._displays.items())
            raise DisplayError(
                f"undisplay {text}: no such display expression ({listed or 'none is set'})"
            )
        del self._displays[expr]
        self._shown.pop(expr, None)
        self._last.pop(expr, None)
        return f"undisplay {expr}"

    # -- expressions and the tensor viewer ------------------------------------------------

    def evaluate(self, expr: str, stepper: ForwardStepper | None) -> tuple[str, bool]:
        """An expression, `!STATEMENT` or one of pdb's words (line_commands.py) at the
        paused line."""
        paused = _paused(stepper)
        snapshot = paused.frame
        assert snapshot is not None
        displays = [(n, e, _shown_as(self._display_now(e)[0])) for e, n in self._displays.items()]
        try:
            result = paused.in_frame(
                lambda frame: run_line_command(frame, expr, snapshot, displays)
            )
            if expr.lstrip().startswith("!") and result.error is None:
                _reread(paused)  # the statement may have changed the locals shown
        except ExpressionInterrupted:  # a cancel or a quit stopped it
            result = Evaluation(expr, None, "interrupted")
        self._evaluations = (*self._evaluations, result)
        shown = result.error or (result.value.repr if result.value else "")
        shown = " · ".join(shown.split("\n"))  # `where`'s lines: the message is one line
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


def _evaluate_all(stepper: ForwardStepper, exprs: Sequence[str]) -> tuple[Evaluation, ...]:
    """Each expression as `evaluate` runs it (the forward thread, the paused frame, no
    probe records), all in one task; a cancel interrupts the one running and the rest are
    not run: each says "interrupted"."""

    def task(frame: FrameType) -> list[Evaluation]:
        done: list[Evaluation] = []
        try:
            for expr in exprs:
                done.append(evaluate_in(frame, expr)[0])
        except ExpressionInterrupted:
            pass
        return done

    try:
        done = stepper.in_frame(task)
    except ExpressionInterrupted:
        done = []
    return (*done, *(Evaluation(e, None, "interrupted") for e in exprs[len(done) :]))


def _reread(stepper: ForwardStepper) -> None:
    """The paused frame's snapshot with its locals read again. The pass stays paused:
    the snapshot is replaced, not retaken (the stack, the source, `returned` stay)."""
    shown = stepper.frame
    if shown is not None:
        stepper.frame = stepper.in_frame(lambda frame: stepper.lines.reread(frame, shown))


def _shown_as(evaluation: Evaluation | None) -> str:
    if evaluation is None:
        return "(at the next pause at a line)"
    return evaluation.error or (evaluation.value.repr if evaluation.value else "")


def _key(evaluation: Evaluation) -> str:
    """What a display shows, to tell whether it changed (NaN statistics compare equal)."""
    return repr(astuple(evaluation.value)) if evaluation.value else str(evaluation.error)


def _paused(stepper: ForwardStepper | None) -> ForwardStepper:
    if stepper is None or stepper.frame is None:
        raise EvaluateError("expressions need a pass paused at a line (a line breakpoint)")
    return stepper
