"""Intents run in thread workers one after another, in the order the keys were pressed.

The Debugger's lock makes intents exclusive but not ordered (a lock is not a queue), so
each worker takes a ticket on the UI thread and waits for its turn. Closing lets every
waiting worker leave without running its intent.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


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
