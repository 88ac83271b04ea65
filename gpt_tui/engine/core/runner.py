"""Moves: how the Debugger runs intents, one at a time, each cancellable (`MoveRunner`).

Concurrency contract
--------------------
- Intents run one at a time (`_lock`); call them from worker threads, never a UI thread.
- Every intent is a *move* with an id: pass `move=debugger.new_move()` to name it before
  it starts, or let the intent take the next id. The snapshot carries the id.
- `cancel(move)` may be called from any thread, takes no intent lock and never waits.
  It stops the named move if it is still running (or any running move, given None):
  a stepped move unwinds at its next probe and reports "aborted"; a run, N generation
  steps or a training step stop at the next module and report `cancelled`. It returns
  False when that move is not running, e.g. it already paused: the paused pass is then
  left alone, so a snapshot never says "paused" for a dead pass. End a paused pass with
  the `abort()` intent.
- An expression or tensor view running at a pause is interrupted by `cancel` at its next
  Python line (an async exception in the forward thread); the pass stays paused.
- `close()` cancels whatever runs, refuses the intents still waiting for the lock, and
  returns at once: the teardown (the paused pass ended, every hook removed) runs now if
  no intent holds the lock, else in a daemon thread once it has unwound (`closed` is set
  then). `close(wait=True)` waits for that instead, for a model that must be put back.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

import torch

from ...errors import GptTuiError
from .model_access import find_block_list, raised_in_user_code, unwrap_model

if TYPE_CHECKING:
    from .debug_state import DebugState
    from .session import Session
    from .stepping import ForwardStepper


class ModelRaisedError(GptTuiError):
    """The user's own model code raised (an assert on the prompt length, a shape check)."""


def model_raised(err: BaseException, model: torch.nn.Module) -> ModelRaisedError | None:
    """`err` as one line naming where in the user's own model code it was raised (None
    when it was not raised there: then it is a bug of gpt-tui's)."""
    where = raised_in_user_code(err, model)
    if where is None:
        return None
    first = (str(err).strip().splitlines() or [""])[0]
    return ModelRaisedError(
        f"your model raised {type(err).__name__} at {where}: {first or '(no message)'}"
    )


class MoveCancelled(BaseException):
    """Raised in a cancelled move's forward by a block pre-hook; never leaves the Debugger."""


_Intent = TypeVar("_Intent", bound=Callable[..., "DebugState"])


def cancellable(intent: _Intent) -> _Intent:
    """Declares an intent that checks for cancel as it runs (within one module's compute
    or one chunk of host work), so a UI offers to stop it: `is_cancellable(method)`."""
    intent.cancellable = True  # type: ignore[attr-defined]
    return intent


def is_cancellable(method: Callable[..., object]) -> bool:
    return getattr(method, "cancellable", False)


class MoveRunner:
    """The lock, the move ids, snapshot numbers and cancellation that every Debugger
    intent goes through. Held by the Debugger (not a base class): `snapshot(mid, message,
    cancelled)` makes its snapshot and `stepper()` is the stepped pass a cancel must reach.
    """

    def __init__(
        self,
        session: Session,
        snapshot: Callable[[int, str, bool], DebugState],
        stepper: Callable[[], ForwardStepper | None],
    ) -> None:
        self.session = session
        self._snapshot = snapshot
        self._stepper = stepper
        self.lock = threading.Lock()  # one intent at a time
        self._move_lock = threading.Lock()  # guards _running / _cancel; never held long
        self._ids = itertools.count(1)
        self._seqs = itertools.count(1)  # snapshot numbers, taken under `lock`
        self._running: int | None = None  # the move holding the lock now
        self._cancel: int | None = None  # the move asked to stop
        self.closing = False
        self.closed = threading.Event()  # set once every hook is gone (see `close`)
        self._intent_thread: int | None = None  # the thread running the current intent
        self.last_move = 0  # id of the last intent that ran
        self.hooks = self._add_cancel_hooks()

    def seq(self) -> int:
        """The next snapshot's number: call it under `lock`, as the snapshot is taken."""
        return next(self._seqs)

    def new_move(self) -> int:
        """An id for the next intent, to name it in `cancel` before it starts."""
        return next(self._ids)

    @contextmanager
    def moving(self, move: int | None) -> Iterator[int]:
        """Hold the lock for move `move` (a new id if None), registered as running."""
        mid = move if move is not None else self.new_move()
        with self.lock:
            with self._move_lock:
                self._running = mid
                self._intent_thread = threading.get_ident()
            try:
                yield mid
            finally:
                with self._move_lock:
                    self._running = None
                self.last_move = max(self.last_move, mid)

    def intent(self, move: int | None, body: Callable[[int], DebugState], what: str) -> DebugState:
        """Run one intent under the lock; a cancelled one answers with the state it left."""
        with self.moving(move) as mid:
            if self.closing:
                return self._snapshot(mid, "closing", True)
            try:
                return body(mid)
            except Exception as err:
                raised = model_raised(err, self.session.model)
                if raised is None:
                    raise
                raise raised from err
            except MoveCancelled:
                self.clear_cancel()  # what follows (a view, a snapshot) may run freely
                return self._snapshot(mid, f"{what} cancelled", True)

    def stop_requested(self, mid: int) -> bool:
        """Move `mid` was asked to stop (or everything is closing)."""
        return self.closing or self._cancel == mid

    def clear_cancel(self) -> None:
        with self._move_lock:
            self._cancel = None

    def cancel(self, move: int | None = None) -> bool:
        """Stop `move` (any running move if None) if it is running now; see the module doc.

        True means the move was still running when asked; a stepped move may still have
        paused just before the request reached it (its snapshot then says so).
        """
        with self._move_lock:
            running = self._running
            if running is None or (move is not None and move != running):
                return False
            self._cancel = running
            stepper = self._stepper()
            if stepper is not None:
                stepper.request_abort()  # a stepped move unwinds at its next probe
                stepper.interrupt()  # an expression at the pause stops at its next line
            return True

    def arm(self, stepper: ForwardStepper, mid: int) -> None:
        """Let a cancel of move `mid` reach `stepper`, also one that came before this."""
        with self._move_lock:
            if self._running == mid:
                stepper.arm_move()
                if self._cancel == mid:
                    stepper.request_abort()

    def check(self, mid: int) -> Callable[[], None]:
        """A cancel check for host work of move `mid` (a chunk of a copy, a sweep's cell)."""

        def check() -> None:
            if self.stop_requested(mid):
                raise MoveCancelled

        return check

    @contextmanager
    def cancellable_model(self, model: torch.nn.Module) -> Iterator[None]:
        """Another model (run B) checks for cancel at each block while inside."""
        hooks = self._add_cancel_hooks(model)
        try:
            yield
        finally:
            for handle in hooks:
                handle.remove()

    def _add_cancel_hooks(
        self, model: torch.nn.Module | None = None
    ) -> list[torch.utils.hooks.RemovableHandle]:
        model = unwrap_model(model if model is not None else self.session.model)
        found = find_block_list(model)
        modules = list(found[1]) if found is not None else list(model.children())

        def check(module: torch.nn.Module, args: tuple) -> None:
            # Only a forward run by the intent itself: a stepped pass runs in its own
            # thread and unwinds through the stepper's abort instead.
            if threading.get_ident() != self._intent_thread:
                return
            if self.closing or (self._cancel is not None and self._cancel == self._running):
                raise MoveCancelled

        return [m.register_forward_pre_hook(check) for m in modules]

    def close(self, teardown: Callable[[], None], wait: bool) -> bool:
        """Cancel whatever runs (an expression at a pause is interrupted), refuse the
        intents still waiting, and run `teardown` under the lock: now if it is free (or
        once it is, with `wait`), else in a daemon thread once the intent has unwound.
        True if torn down before returning."""
        self.closing = True
        self.cancel()
        stepper = self._stepper()
        if stepper is not None:
            stepper.interrupt()
        if self.lock.acquire(blocking=wait):
            try:
                teardown()
            finally:
                self.lock.release()
            return True

        def when_free() -> None:
            with self.lock:
                teardown()

        threading.Thread(target=when_free, name="gpt-tui-close", daemon=True).start()
        return False

    def remove_hooks(self) -> None:
        for handle in self.hooks:
            handle.remove()
        self.hooks = []
