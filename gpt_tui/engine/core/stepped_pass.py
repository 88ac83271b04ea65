"""The Debugger's stepped-pass part: the forward pass walked module by module or line by
line (stepping.py), on the prompt or on one generated token, and the whole runs recorded
on the prompt. The Debugger holds one and passes in what it owns: the runner, the probes
a new pass is set up with, its line and generation parts."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from .debug_state import Probes, RunResult, SteppedView, StepStatus
from .views import run_from_trace, stepped_run

if TYPE_CHECKING:
    from ..generation.intents import Generation
    from ..generation.sampling import GenerationSession
    from .frames import FrameSnapshot
    from .line_intents import Lines
    from .runner import MoveRunner
    from .session import Session
    from .stepping import ForwardStepper
    from .trace import StepEvent

MOVES = ("into", "over", "out", "continue")


def module_move(how: str) -> Callable[[ForwardStepper], object]:
    """The stepper's move named `how` (one of MOVES)."""

    def move(stepper: ForwardStepper) -> object:
        moves = {
            "into": stepper.step_into,
            "over": stepper.step_over,
            "out": stepper.step_out,
            "continue": stepper.continue_,
        }
        return moves[how]()

    return move


class SteppedPass:
    """The Debugger's stepped-pass part: it owns the pass under way (the one a cancel must
    reach), its status and events, and the last two whole runs. Each move returns the
    message to show."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._stepper: ForwardStepper | None = None
        self._status: StepStatus = "idle"
        self._events: tuple[StepEvent, ...] = ()
        self._stepping: RunResult | None = None
        self._run: RunResult | None = None
        self._previous_run: RunResult | None = None
        self._token_pass = False  # the pass is one token's, not the prompt's forward
        self._ids: tuple[int, ...] = ()
        self.breakpoints: frozenset[str] = frozenset()  # module globs; set_breakpoints
        self.watch = False  # the NaN/Inf watchpoint; set_watch

    def view(self) -> SteppedView:
        paused = self._stepper
        if paused is not None and (paused.current or paused.frame) is None:
            paused = None  # between moves or not started: nothing of a pause to show
        return SteppedView(
            status=self._status,
            event=paused.current if paused is not None else None,
            reason=paused.reason if paused is not None else None,
            events=self._events,
            stepping=self._stepping if paused is not None else None,
            run=self._run,
            previous_run=self._previous_run,
            frame=paused.frame if paused is not None else None,
        )

    @property
    def stepper(self) -> ForwardStepper | None:
        """The pass under way, if any (for a cancel, a new breakpoint, the line part)."""
        return self._stepper

    def set_breakpoints(self, breakpoints: Iterable[str], leaves: bool) -> str:
        """The pass under way (and every new one) stops at the module `breakpoints` from
        now on; the message names the globs that match no probe (they never stop)."""
        breakpoints = self.breakpoints = frozenset(breakpoints)
        if self._stepper is not None:
            self._stepper.breakpoints = sorted(breakpoints)
        names = self._session.probe_names(leaves=leaves)
        unseen = sorted(g for g in breakpoints if not fnmatch.filter(names, g))
        if not unseen:
            return ""
        hint = "" if leaves else "; leaf probes (l) stop at Linear, norm and activation layers"
        return f"{', '.join(unseen)}: no probe there, never stops{hint}"

    def set_watch(self, on: bool) -> None:
        """The NaN/Inf watchpoint, for the pass under way and every new one."""
        self.watch = on
        if self._stepper is not None:
            self._stepper.watch_nonfinite = on

    def record(self, prompt: str, layers: Iterable[int] | str, leaves: bool, lines: Lines) -> str:
        """A whole recorded forward pass (with the attention `layers`); a paused stepped
        pass gives way."""
        self.end("idle", lines)
        trace = self._session.trace(prompt, attention_layers=layers, leaves=leaves)
        self.set_run(run_from_trace(trace))
        return f"forward pass recorded {len(trace.records)} probes"

    @property
    def run(self) -> RunResult | None:
        return self._run

    def set_run(self, run: RunResult) -> None:
        """A whole run was recorded: the last one becomes the previous."""
        self._previous_run, self._run = self._run, run

    def drop_run(self) -> bool:
        """The model changed: the last run becomes the previous; True if there was one."""
        stale = self._run
        if stale is not None:
            self._previous_run, self._run = stale, None
        return stale is not None

    def rerecorded(self, run: RunResult) -> None:
        """The dropped run, recorded again on the changed model."""
        self._run = run

    def start_token(self, lines: Lines) -> None:
        """The next pass is one token's forward and sampling; a paused pass gives way."""
        self.end("idle", lines)
        self._token_pass = True

    def end_token_pass(self, lines: Lines) -> None:
        """A paused token step ends (unwound) before the generation changes under it."""
        if self._token_pass and self._stepper is not None:
            self.end("aborted", lines)

    def abort(self, lines: Lines) -> str:
        was_open = self._stepper is not None
        self.end("aborted" if was_open else self._status, lines)
        return "pass aborted" if was_open else ""

    def advance(
        self,
        mid: int,
        runner: MoveRunner,
        probes: Probes,
        move: Callable[[ForwardStepper], object],
        lines: Lines,
        generation: Generation,
    ) -> str:
        """One move of the pass (started on the prompt if none is under way)."""
        stepper = self._stepper or self._new_stepper(probes, generation.current, lines)
        runner.arm(stepper, mid)
        try:
            move(stepper)
        except BaseException:
            self.end("idle", lines)
            raise
        if stepper.aborted:  # cancel() unwound the pass mid-move
            self.end("aborted", lines)
            return "pass aborted"
        if stepper.finished and self._token_pass:
            self.end("finished", lines)
            generation.token_joined(probes.prompt)  # true at once, then re-peeked
            generation.refresh(probes.prompt)
            return f"sampled {stepper.returned.token_label!r}"
        if stepper.finished:
            self.set_run(
                stepped_run(stepper, self._session, probes.prompt, self._ids, finished=True)
            )
            self.end("finished", lines)
            return f"pass finished after {len(stepper.events)} events"
        return "paused" + self._record_pause(stepper, probes.prompt, lines)

    def _new_stepper(
        self, probes: Probes, gen: GenerationSession | None, lines: Lines
    ) -> ForwardStepper:
        gen = gen if self._token_pass else None
        ids = gen.pending if gen is not None else self._session.prompt_ids(probes.prompt)[0]
        stepper = self._session.stepper(
            ids,
            breakpoints=sorted(probes.breakpoints),
            watch_nonfinite=probes.watch,
            leaves=probes.leaves,
            call=gen.step if gen is not None else None,
        )
        self._stepper = stepper
        self._ids = tuple(ids)
        lines.attach(stepper)  # its line breakpoints, numbered, counting their hits
        return stepper

    def _record_pause(self, stepper: ForwardStepper, prompt: str, lines: Lines) -> str:
        """The pause, with the line part's: its display expressions evaluated in the
        paused frame (probes muted) and the breakpoint it stopped at. A note to show."""
        lines.forget_pause()
        self._status = "paused"
        self._events = tuple(stepper.events)
        self._stepping = stepped_run(stepper, self._session, prompt, self._ids)
        return lines.paused(stepper)

    def end(self, status: StepStatus, lines: Lines) -> None:
        """Close the pass. Its events stay in the view when it `finished` or was
        `aborted`; `idle` (a whole run took over) forgets them."""
        stepper = self._stepper
        if stepper is not None:
            self._events = tuple(stepper.events)
            self._session.release(stepper)
            self._stepper = None
        if status == "idle":
            self._events = ()
        self._stepping = None
        lines.forget_pause()
        self._status = status
        self._token_pass = False

    def replay(self, mid: int, runner: MoveRunner, probes: Probes, lines: Lines) -> None:
        """Re-run the paused pass to the event it was at (and on to the line, when it was
        paused at one), with the current probes and interventions (hooks added later see a
        replaced output only if they run after it, so a pass made before an ablation
        changed would show the old values)."""
        old = self._stepper
        if self._token_pass:  # the generation moved on inside it: no replay, unwind it
            self.end("aborted", lines)
            return
        if old is None or old.current is None:
            return
        target, at_line = old.current, old.frame
        self.end("idle", lines)
        names = [target.name]
        while "." in names[-1]:  # a leaf no longer probed: stop at its parent module
            names.append(names[-1].rsplit(".", 1)[0])
        tries = [(target.name, at_line)] if at_line is not None else []
        tries += [(name, None) for name in names]  # the line not met again: its module
        for name, line in tries:
            stepper = self._new_stepper(probes, None, lines)
            lines.count_hits(stepper, False)  # those on the way were counted the first time
            event = None
            while not stepper.aborted:
                runner.arm(stepper, mid)
                event = stepper.step_into()
                if event is None or (event.name, event.phase) == (name, target.phase):
                    break
            there = event is not None and (
                line is None or _back_to_line(stepper, runner, mid, line, event)
            )
            if there and not stepper.aborted:
                lines.count_hits(stepper, True)
                self._record_pause(stepper, probes.prompt, lines)
                return
            self.end("idle", lines)
            if stepper.aborted:
                return


def _stack(frame: FrameSnapshot) -> list[tuple[str, int, str, str | None]]:
    return [(e.file, e.line, e.function, e.module) for e in frame.stack]


def _back_to_line(
    stepper: ForwardStepper, runner: MoveRunner, mid: int, at: FrameSnapshot, event: StepEvent
) -> bool:
    """From `event`, the module event a line pause came after, line steps to that line
    with the same calls around it (the modules in the stack pin which block of a loop it
    was in); False if the pass moves past another module event or ends first."""
    where = _stack(at)
    while not stepper.aborted and not stepper.finished:
        runner.arm(stepper, mid)
        stepper.step_line("into")
        current, frame = stepper.current, stepper.frame
        if current is None or current.index != event.index:
            return False
        if frame is not None and _stack(frame) == where:
            return True
    return False
