"""A forward pass that pauses at every probe, driven from the caller's thread like a debugger.

The forward runs in its own daemon thread (under `torch.inference_mode()`, entered in that
thread because grad mode is thread-local). Every probe hook of that pass calls back into
the stepper, which decides *in the forward thread* whether this event is a stop: step
over, step out and continue therefore cost no thread switch per skipped event. At a stop
it reads the queued statistics back (one transfer per pause), publishes a `StepEvent` and
waits on a condition variable until the caller asks for more; nothing busy-waits.

Abort raises a private `BaseException` inside the paused hook, so the model's own
`except Exception` blocks cannot swallow it; the thread unwinds and is joined, and the
probes' hooks stay in place for the next run. `request_abort` (from another thread, no
join) is honoured only while a move is running: once the pass has paused it returns False
and changes nothing, so a paused pass is never unwound behind its caller's back.

Levels: every module event has the level of its module in the stack of probed modules
open at that moment (1 = not nested in another probed module; the model's `logits`
output is level 0). Step over from a module's "in" runs to the next "out" at the same
level (its own end); step out runs to the next "out" one level up (the parent's end, or
`logits`).

Line events (`frames.LineTracer`) join the same stream: while a line breakpoint or a line
move is armed, the forward thread traces the model's own files and pauses at lines exactly
as it pauses at probes; `sys.settrace` is set and cleared only in that thread, and is
cleared before the thread ends. `evaluate` and `in_frame` hand work to the paused forward
thread through the same condition variable and wait for its answer.
"""

from __future__ import annotations

import ctypes
import fnmatch
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

import torch
import torch.nn as nn

from ...errors import GptTuiError
from ..analysis.probe_points import ProbePoint, first_tensor
from ..analysis.probes import PendingRecord, Probes
from ..core.model_access import unwrap_model
from .frames import (
    LINE_MOVES,
    EvaluateError,
    ExpressionInterrupted,
    FrameSnapshot,
    LineTracer,
)
from .model_access import raised_in_user_code
from .trace import ProbeRecord, StepEvent

_T = TypeVar("_T")


class StepperError(GptTuiError, RuntimeError):
    """The model raised inside the stepped forward pass; `__cause__` is its exception."""


class _Abort(BaseException):
    """Raised inside the forward thread to unwind it; never reaches the caller."""


@dataclass(frozen=True)
class _Until:
    """What the forward thread runs to: the next event (level None) or an "out" at a level."""

    level: int | None


class ForwardStepper:
    """A pausable forward pass of `model` on `idx`.

    Args:
        model: the model (a `torch.compile` wrapper is unwrapped).
        idx: token ids (B, T) on the model's device.
        points: probe points to stop at (default: `find_probe_points(model, leaves)`).
            The stepper attaches its own probes and removes them in `close()`.
        breakpoints: module-path globs (`transformer.h.3.*`, `*.mlp`); a module's "in"
            event whose name matches stops every kind of run.
        watch_nonfinite: stop (once per run) at the first module whose output holds
            NaN/Inf while its input did not: the module where the NaN appears.
        attention_layers: layers whose "out" event of the attention module carries the
            recomputed pattern ("all" for every layer).
        forward_kwargs: extra keyword arguments for `model(idx, ...)`.
        call: run `call()` in the forward thread instead of `model(idx, ...)`, e.g. one
            generation step (its forward and its sampling, which line stepping can enter);
            what it returns is kept in `returned`.
    """

    def __init__(
        self,
        model: nn.Module,
        idx: torch.Tensor,
        *,
        points: Sequence[ProbePoint] | None = None,
        leaves: bool = False,
        breakpoints: Iterable[str] = (),
        watch_nonfinite: bool = False,
        attention_layers: Iterable[int] | str = (),
        forward_kwargs: dict[str, Any] | None = None,
        call: Callable[[], Any] | None = None,
    ) -> None:
        self.model = unwrap_model(model)
        self.call = call
        self.idx = idx
        self.breakpoints = list(breakpoints)
        self.watch_nonfinite = watch_nonfinite
        self.forward_kwargs = dict(forward_kwargs or {})
        self.probes = Probes(
            self.model, points, leaves=leaves, inputs=True, attention_layers=attention_layers
        )
        self.probes.listener = self._on_record
        self.lines = LineTracer(self.model, self._pause_at_line, outside=call is not None)
        self._cv = threading.Condition()
        self._reset()

    def _reset(self) -> None:
        self.events: list[StepEvent] = []
        self.residual: list[ProbeRecord] = []  # resid_pre/mid/post records up to the pause
        self.current: StepEvent | None = None
        self.frame: FrameSnapshot | None = None  # the line paused at (None at a module)
        self.reason: str | None = None  # why the last stop happened: step/breakpoint/watch
        self.finished = False
        self.aborted = False
        self.result: torch.Tensor | None = None
        self.returned: Any = None  # what `call()` returned
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._until: _Until | None = None
        self._paused = False
        self._moving = False  # a move is under way (between its request and its stop)
        self._aborting = False
        self._watch_fired = False
        self._converted = 0  # probe records already turned into events
        self._stack: list[PendingRecord] = []  # "in" records of the modules open now
        self._in_event: dict[int, StepEvent] = {}  # order of an "in" record -> its event
        self._levels: list[int] = []  # level of each event, by index
        self._error_where = "the model"
        self._task: Callable[[FrameType], Any] | None = None  # work for the paused frame
        self._task_done = False
        self._task_result: Any = None
        self._task_error: BaseException | None = None
        self._interrupt_lock = threading.Lock()  # a C lock: see `_run_task`
        self._task_running = False  # the forward thread is inside a task now
        self._interrupt_sent = False  # that task was asked to stop (once)

    # -- the caller's side ----------------------------------------------------------

    def step_into(self) -> StepEvent | None:
        """Run to the next event; None once the pass has finished."""
        return self._request(_Until(None))

    def step_over(self) -> StepEvent | None:
        """At a module's "in": run to its "out" (skipping what is inside); else next event."""
        cur = self.current
        if cur is None or cur.phase != "in":
            return self.step_into()
        return self._request(_Until(self._level_of(cur)))

    def step_out(self) -> StepEvent | None:
        """Run to the "out" of the module enclosing the current event (or to `logits`)."""
        cur = self.current
        if cur is None:
            return self.step_into()
        return self._request(_Until(self._level_of(cur) - 1))

    def continue_(self) -> StepEvent | None:
        """Run to the next breakpoint or watchpoint hit; None if the pass ends first."""
        return self._request(_Until(-1))  # no "out" event has level -1: run to the end

    def set_line_breakpoints(self, specs: Iterable[str]) -> None:
        """`FILE:LINE` / `FUNCTION` breakpoints in the model's files (raises
        `BreakpointError` for one that matches nothing). Call it while not moving."""
        self.lines.set_breakpoints(specs)

    def step_line(self, how: str) -> StepEvent | None:
        """A line move: next (over calls), into (the next model line), return (to the
        model caller) or continue. Module breakpoints and the watchpoint still stop it."""
        if how not in LINE_MOVES:
            raise ValueError(f"unknown line move {how!r}: one of {', '.join(LINE_MOVES)}")
        {
            "next": self.lines.set_next,
            "into": self.lines.set_step,
            "return": self.lines.set_return,
            "continue": self.lines.set_continue,
        }[how]()
        return self._request(_Until(-1))

    def in_frame(self, task: Callable[[FrameType], _T]) -> _T:
        """Run `task(frame)` in the forward thread on the frame paused at; its exception
        is raised here. Only at a line pause."""
        with self._cv:
            if not self._paused or self.frame is None:
                raise EvaluateError("expressions need a pause at a line (a line breakpoint)")
            self._task, self._task_done = task, False
            self._cv.notify_all()
            self._cv.wait_for(lambda: self._task_done or self.finished)
            result, error = self._task_result, self._task_error
            self._task = self._task_result = self._task_error = None
        if error is not None:
            raise error
        return result

    def interrupt(self) -> bool:
        """Stop the task running at the pause (a long expression) at its next Python
        line, from any thread, without waiting: its caller gets `ExpressionInterrupted`
        and the pass stays paused. False if no task is running."""
        with self._interrupt_lock:
            thread = self._thread
            if not self._task_running or self._interrupt_sent or thread is None:
                return False
            self._interrupt_sent = True
            _raise_in(thread, ExpressionInterrupted)
            return True

    def abort(self) -> None:
        """Unwind the forward thread and join it. The probes stay attached."""
        thread = self._thread
        if thread is None:
            return
        with self._cv:
            self._aborting = True
            self._cv.notify_all()
        self.interrupt()  # a running expression first, or the join would wait for it
        thread.join()
        self._thread = None

    def arm_move(self) -> None:
        """Mark a move as under way before it is requested, so that a `request_abort`
        between this call and the move's start is honoured (the Debugger calls it while it
        registers the move as running)."""
        with self._cv:
            if not self.finished:
                self._moving = True

    def request_abort(self) -> bool:
        """Ask a running move to unwind at its next probe, from any thread, without waiting.

        For a Debugger blocked in `continue_()`: that call then returns None with `aborted`
        set. True if a move was running; False (and nothing changes) if the pass is paused
        or over, so an abort that arrives just after a pause cannot kill the paused pass
        while its caller reports it as paused.
        """
        with self._cv:
            if not self._moving:
                return False
            self._aborting = True
            self._cv.notify_all()
            return True

    def close(self) -> None:
        """Abort, then remove the hooks."""
        self.abort()
        self.probes.close()

    def __enter__(self) -> ForwardStepper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, until: _Until) -> StepEvent | None:
        if self.finished:
            return None
        with self._cv:
            self._until = until
            self._paused = False
            self._moving = True
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="gpt-tui-forward", daemon=True
                )
                self._thread.start()
            else:
                self._cv.notify_all()
            self._cv.wait_for(lambda: self._paused or self.finished)
        if self.finished:
            self._thread.join()
            self._thread = None
            if self.error is not None:
                where = raised_in_user_code(self.error, self.model)
                at = f" at {where}" if where else ""
                raise StepperError(
                    f"the forward pass raised {type(self.error).__name__} in "
                    f"{self._error_where}{at}: {self.error}"
                ) from self.error
            return None
        return self.current

    def _level_of(self, event: StepEvent) -> int:
        return self._levels[event.index]

    # -- the forward thread's side --------------------------------------------------

    def _run(self) -> None:
        try:
            with torch.inference_mode():
                if self.lines.armed:
                    self.lines.sync()
                if self.call is not None:
                    self.returned = self.call()
                else:
                    self.result = first_tensor(self.model(self.idx, **self.forward_kwargs))
            self._convert()
        except _Abort:
            self.aborted = True
            self._convert()  # the events up to the abort stay readable
        except BaseException as exc:  # delivered to the caller by _request
            self.error = exc
            if self._stack:
                self._error_where = self._stack[-1].point.name
            self._convert()
        finally:
            self.lines.disarm()
            self.probes.abandon_pass()  # no-op unless the pass was unwound by _Abort
            with self._cv:
                self.finished = True
                self.frame = None
                self._moving = False
                self._cv.notify_all()

    def _on_record(self, rec: PendingRecord, x: torch.Tensor) -> None:
        if threading.current_thread() is not self._thread:
            return  # a model call elsewhere: only recorded
        if self._aborting:  # abort() from another thread while running, not paused
            raise _Abort
        point = rec.point
        opened: PendingRecord | None = None
        if point.kind == "resid":
            return
        if rec.phase == "in":
            self._stack.append(rec)
            level = len(self._stack)
        else:
            level = len(self._stack)
            opened = self._stack.pop() if self._stack and self._stack[-1].point is point else None
            if opened is None:
                level = 0  # an "out" with no "in": the model's output
        self._levels.append(level)
        reason = self._stop_reason(rec, level, opened)
        if reason is not None:
            self._pause(reason)

    def _stop_reason(
        self, rec: PendingRecord, level: int, opened: PendingRecord | None
    ) -> str | None:
        until = self._until
        if until is not None and (
            until.level is None or (rec.phase == "out" and until.level == level)
        ):
            return "step"
        if rec.phase == "in" and any(
            fnmatch.fnmatchcase(rec.point.name, g) for g in self.breakpoints
        ):
            return "breakpoint"
        if self.watch_nonfinite and not self._watch_fired and rec.phase == "out":
            self._convert()
            out_ok = self.events[-1].stats.finite
            in_event = self._in_event.get(opened.order) if opened is not None else None
            if not out_ok and (in_event is None or in_event.stats.finite):
                self._watch_fired = True
                return "watch"
        return None

    def _pause_at_line(self, frame: FrameType, reason: str) -> None:
        self._pause(reason, frame)

    def _pause(self, reason: str, frame: FrameType | None = None) -> None:
        """Publish the pause and wait (in the forward thread) for a move, an abort, or a
        task on the paused frame; then arm or disarm line tracing for what comes next."""
        self._convert()
        snapshot = self.lines.snapshot(frame, reason) if frame is not None else None
        with self._cv:
            # Decide and publish in one step: an abort that landed while the pause was
            # being prepared unwinds the pass now, so no caller ever sees it paused.
            if self._aborting:
                raise _Abort
            self.current = self.events[-1] if self.events else None
            self.frame = snapshot
            self.reason = reason
            self._until = None
            self._paused = True
            self._moving = False  # from here on, request_abort leaves the pause alone
            self._cv.notify_all()
        while True:
            with self._cv:
                self._cv.wait_for(
                    lambda: self._until is not None or self._aborting or self._task is not None
                )
                if self._aborting:
                    raise _Abort
                if self._until is not None:
                    break
                task = self._task
            self._run_task(task, frame)  # outside the lock: a cancel never waits for it
        self.lines.sync()

    def _run_task(self, task: Callable[[FrameType], Any], frame: FrameType | None) -> None:
        """Run the caller's task on the paused frame and hand back its outcome.

        `interrupt()` may raise `ExpressionInterrupted` here at any Python instruction
        while `_task_running`: what must run whatever happens is plain attribute stores
        and a C lock, which the interpreter never interrupts halfway."""
        assert frame is not None
        result: Any = None
        error: BaseException | None = None
        probes, completed = self.probes, False
        with self._interrupt_lock:
            self._task_running, self._interrupt_sent = True, False
        try:
            try:
                probes.muted = probes.capture.muted = True  # not the pass's: no record
                result = task(frame)
            except Exception as err:  # handed to the caller; the pass stays paused
                error = err
            finally:
                probes.muted = probes.capture.muted = False
            completed = True
            with self._interrupt_lock:
                self._task_running = False
                late = self._interrupt_sent
            if late:  # sent as the task ended: it is pending, take it in this loop
                for _ in range(1000):
                    pass
        except ExpressionInterrupted as err:
            if not completed:
                error = err
            with self._interrupt_lock:
                self._task_running = False
        with self._cv:
            self._task_result, self._task_error = result, error
            self._task_done = True
            self._task = None
            self._cv.notify_all()

    def _convert(self) -> None:
        """Read queued stats back (one transfer) and turn new records into events."""
        self.probes.flush()
        records = self.probes.records
        for rec in records[self._converted :]:
            if rec.kind == "resid":
                self.residual.append(rec)
                continue
            point = self.probes.point(rec.name)
            pattern = None
            if rec.kind == "attn" and rec.phase == "out" and point.layer is not None:
                captured = self.probes.has_pattern(point.layer)
                pattern = self.probes.pattern(point.layer) if captured else None
            event = StepEvent(
                index=len(self.events),
                name=rec.name,
                kind=rec.kind,
                phase=rec.phase,
                depth=rec.depth,
                shape=rec.shape,
                dtype=rec.dtype,
                stats=rec.stats,
                pattern=pattern,
            )
            if rec.phase == "in":
                self._in_event[rec.order] = event
            self.events.append(event)
        self._converted = len(records)


def _raise_in(thread: threading.Thread, exc: type[BaseException]) -> None:
    """Raise `exc` in `thread` at its next check of pending work (a call, a loop's jump).
    Never cancel one with NULL: CPython 3.11 then leaves its eval breaker set for good."""
    assert thread.ident is not None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(exc))
