"""Intents run in thread workers one after another, in the order the keys were pressed.

The Debugger's lock makes intents exclusive but not ordered (a lock is not a queue), so
each worker takes a ticket on the UI thread and waits for its turn. Closing lets every
waiting worker leave without running its intent. Each finished intent posts its snapshot
to the app as a `StateUpdated` message.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from textual.app import App
from textual.worker import WorkerState

from ..engine.core.runner import is_cancellable
from .messages import StateUpdated

if TYPE_CHECKING:
    from ..engine.core.debug_state import DebugState
    from ..engine.debugger import Debugger


class IntentQueue:
    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._issued = 0  # tickets handed out
        self._serving = 0  # the ticket whose turn it is
        self._closed = False

    def ticket(self) -> int:
        with self._cv:
            self._issued += 1
            return self._issued - 1

    @property
    def pending(self) -> int:
        """Intents asked for and not yet done (the running one included)."""
        with self._cv:
            return self._issued - self._serving

    @contextmanager
    def turn(self, ticket: int) -> Iterator[bool]:
        """Wait for `ticket`'s turn; yields False if the queue closed meanwhile."""
        with self._cv:
            self._cv.wait_for(lambda: self._serving == ticket or self._closed)
            open_ = not self._closed
        try:
            yield open_
        finally:
            with self._cv:
                self._serving = max(self._serving, ticket + 1)
                self._cv.notify_all()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()


class Intents:
    """The app's way to ask the Debugger: `call("run", "run")` runs `debugger.run(move=…)`
    in a worker, after the intents asked for before it; the snapshot comes back as a
    message. Names group workers: the latest move of a name that is still queued or
    running can be cancelled by `x` when its Debugger method is declared `cancellable`."""

    def __init__(self, app: App, debugger: Callable[[], Debugger | None]) -> None:
        """`debugger()`: the app's debugger once the model is open (None before)."""
        self._app = app
        self._debugger = debugger
        self._queue = IntentQueue()
        self._latest: dict[str, int] = {}  # name -> the move id it was last started with
        self._cancellable: dict[str, int] = {}  # the same, for cancellable intents only

    def busy(self, name: str) -> bool:
        """A worker of that name is queued or running (read from Textual's workers)."""
        live = (WorkerState.PENDING, WorkerState.RUNNING)
        return any(w.name == name and w.state in live for w in self._app.workers)

    def latest(self, name: str) -> int | None:
        return self._latest.get(name)

    def running_move(self) -> tuple[str, int] | None:
        """The first cancellable move still queued or running, if any: (name, move id)."""
        live = [(move, name) for name, move in self._cancellable.items() if self.busy(name)]
        return (min(live)[1], min(live)[0]) if live else None

    @property
    def pending(self) -> int:
        return self._queue.pending

    def start(
        self, name: str, intent: Callable[[int], DebugState], *, cancellable: bool = False
    ) -> int | None:
        """Run `intent` (called with its move id) in a worker; the move id."""
        app, debugger = self._app, self._debugger()
        if debugger is None:
            return None
        move = debugger.new_move()
        self._latest[name] = move
        if cancellable:
            self._cancellable[name] = move
        else:
            self._cancellable.pop(name, None)
        ticket = self._queue.ticket()

        def work() -> None:
            with self._queue.turn(ticket) as open_:
                if open_:
                    app.post_message(StateUpdated(intent(move), name))

        app.run_worker(work, name=name, group="engine", thread=True, exit_on_error=False)
        return move

    def call(self, name: str, method: str, *args: object, **kwargs: object) -> int | None:
        """`start` for one Debugger method, its arguments and the move id."""
        debugger = self._debugger()
        assert debugger is not None
        bound = getattr(debugger, method)
        intent = lambda move: bound(*args, move=move, **kwargs)  # noqa: E731
        return self.start(name, intent, cancellable=is_cancellable(bound))

    def close(self) -> None:
        self._queue.close()
