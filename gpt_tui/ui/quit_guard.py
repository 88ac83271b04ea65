"""q asks once before it throws work away: a paused pass or a move still running.

A user who meant to type in a box (the Code tab's `q.shape`) but had the focus elsewhere
lost the paused pass to one key. Now the first quit says what would be lost and arms; the
very next key, if it quits again, quits; any other key disarms. With nothing to lose q
quits at once, as before. Ctrl+Q runs the same action, so it asks the same way.

Only a key pressed after the question was asked answers it: keys that arrived together with
the first q (a pasted `qq`, a key held down) were typed before it was on screen, so a q
among them is swallowed, neither quitting nor asking again, as a dialog ignores keys typed
ahead of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import events

from .intents import Intents

if TYPE_CHECKING:
    from textual.app import App

    from ..engine.core.debug_state import DebugState

    class GptTuiApp(App[int]):  # what the guard reads of the app (the app imports us)
        state: DebugState | None


# The running moves a quit would cut short, as a user names them.
MOVE_NAMES = {
    "stepper": "a step",
    "run": "the forward pass",
    "generating": "the generation",
    "training": "the training step",
    "evaluate": "an expression",
    "measure": "a measurement",
    "compare": "a comparison",
}


class QuitGuard:
    def __init__(self, app: GptTuiApp, intents: Intents) -> None:
        self._app = app
        self._intents = intents
        self._keys = 0  # keys pressed so far
        self._last_key = ""
        self._armed_at: int | None = None  # the key count when a quit asked to confirm

    def key(self, event: events.Key) -> None:
        """Every key the app receives, before it acts on it."""
        self._keys += 1
        self._last_key = event.key

    def at_stake(self) -> str | None:
        """What quitting now would lose, in a few words; None when nothing."""
        state = self._app.state
        if state is not None and state.paused_at is not None:
            return f"a pass is paused at {state.paused_at}"
        running = self._intents.running_move()
        if running is not None:
            return f"{MOVE_NAMES.get(running[0], running[0])} is still running"
        return None

    def should_quit(self) -> bool:
        """True to quit now; else the first quit of a pair was said and armed (or this one
        came in with the first and is swallowed)."""
        lost = self.at_stake()
        if lost is None or self._armed_at == self._keys - 1:
            return True
        if self._armed_at == self._keys:  # already here when the question was asked
            return False
        self._armed_at = self._keys
        key = self._last_key if self._last_key in self._quit_keys() else "q"
        self._app.notify(
            f"{lost}: {key} again to quit, any other key stays",
            title="quit?",
            severity="warning",
            timeout=6,
        )
        return False

    def _quit_keys(self) -> set[str]:
        """The keys bound to quit now (a config file may rebind q)."""
        return {
            key
            for key, active in self._app.screen.active_bindings.items()
            if active.binding.action == "quit"
        }
