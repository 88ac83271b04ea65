"""Keys pressed while the model opens: listed on the loading panel, replayed once it is open."""

from __future__ import annotations

from textual import events
from textual.app import App

from . import keys
from .widgets.help import key_name
from .widgets.loading import LoadingPanel


class KeyQueue:
    def __init__(self, app: App) -> None:
        self.app = app
        self.waiting: list[events.Key] = []

    def hold(self, event: events.Event) -> bool:
        """Keep a key pressed before the model is open (q and Ctrl keys act now)."""
        app = self.app
        if not isinstance(event, events.Key) or event.key in keys.NOW_WHILE_LOADING:
            return False
        if event.key.startswith("ctrl+") or app.screen is not app.screen_stack[0]:
            return False
        self.waiting.append(event)
        app.query_one(LoadingPanel).show_waiting([key_name(e.key) for e in self.waiting])
        return True

    def replay(self) -> None:
        """The keys kept, in order, now that the model is open."""
        waiting, self.waiting = self.waiting, []
        if waiting:
            self.app.run_worker(self._replay(waiting), group="replay", exit_on_error=False)

    async def _replay(self, waiting: list[events.Key]) -> None:
        # One at a time, each handled before the next (as a pilot presses keys): a key
        # that moves the focus (/ opens the filter) sends the keys after it there.
        from textual._wait import wait_for_idle

        for event in waiting:
            self.app.post_message(events.Key(event.key, event.character))
            await wait_for_idle(0)
