"""The stepper's field in the status bar, and x (abort).

The field says "running…" while a step move is queued or running ("aborting…" once x asked
to end it), then the last failure until the next stepper move, else where the stepper
stands. x cancels a running move at its next module without waiting for the engine; a move
that paused just as x arrived, and a paused pass, are ended by the abort intent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .intents import Intents
from .widgets.status import StatusBar

if TYPE_CHECKING:
    from textual.app import App

    from ..engine.core.debug_state import DebugState
    from ..engine.debugger import Debugger

    class GptTuiApp(App[int]):  # what the stepper line reads of the app (the app imports us)
        debugger: Debugger | None
        state: DebugState | None


class StepperLine:
    def __init__(self, app: GptTuiApp, intents: Intents) -> None:
        self._app = app
        self._intents = intents
        self._abort_move: int | None = None  # a step move asked to abort while running
        self._error: str | None = None  # the last failure, until the next stepper move
        self._told_run_passes: set[str] = set()  # the kinds of stop r said it runs past

    @property
    def stepping(self) -> bool:
        """A step move is queued or running."""
        return self._intents.busy("stepper")

    def show(self) -> None:
        if self.stepping:
            aborting = self._abort_move == self._intents.latest("stepper")
            text = "aborting…" if aborting else "running…"
        else:
            state = self._app.state
            text = self._error or (state.stepper_line if state else "idle")
        self._app.query_one(StatusBar).stepper = text

    def failed(self, error: str) -> None:
        self._error = f"error · {error}"
        self.show()

    def arrived(self, state: DebugState, name: str) -> None:
        """A snapshot from the intent `name`, before it is rendered."""
        if name in ("stepper", "run"):
            self._error = None
        debugger = self._app.debugger
        if state.move == self._abort_move and state.status == "paused" and debugger is not None:
            # x arrived just as the move paused: end the paused pass as asked.
            self._intents.start("abort", lambda move: debugger.abort(move=move))

    def abort(self) -> None:
        debugger = self._app.debugger
        assert debugger is not None
        running = self._intents.running_move()
        # A generation keeps the tokens taken so far; a training step puts the weights back.
        if running is not None and debugger.cancel(running[1]):
            if running[0] == "stepper":
                self._abort_move = running[1]
                self.show()
            return
        self._intents.call("abort", "abort")

    def run_note(self) -> str | None:
        """What r (the whole pass) runs past that c would stop at, said once per kind
        (breakpoints, the NaN watch): r stays the whole pass."""
        state = self._app.state
        passes = state.run_passes if state is not None else {}
        if not set(passes) - self._told_run_passes:
            return None
        self._told_run_passes |= set(passes)
        assert state is not None
        them = "them" if len(passes) > 1 or len(state.breakpoints) > 1 else "it"
        return f"r runs the whole pass, past {' and '.join(passes.values())}; c stops at {them}"
