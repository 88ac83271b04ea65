"""The loading panel: phase and bar from the engine's progress events, fed from a thread."""

from __future__ import annotations

import threading

from textual.app import App, ComposeResult
from textual.widgets import Label, ProgressBar
from ui_helpers import settle, tiny_app

from gpt_tui.models.progress import OpenProgress
from gpt_tui.ui.widgets.loading import LoadingPanel


class Host(App[None]):
    def compose(self) -> ComposeResult:
        yield LoadingPanel()


async def test_events_from_another_thread_move_the_bar_and_name_the_phase() -> None:
    app = Host()
    async with app.run_test() as pilot:
        panel = app.query_one(LoadingPanel)
        posted: list[LoadingPanel.Progressed] = []
        original = panel.post_message
        panel.post_message = lambda m: (posted.append(m), original(m))[1]  # type: ignore[method-assign]
        listener = panel.listener()

        def opening() -> None:
            for done in range(0, 1001):  # a thousand events: at most one message per percent
                listener(OpenProgress("initialising", done, 1000, "parameters"))
            listener(OpenProgress("moving to device", 512, 2048, "bytes"))

        worker = threading.Thread(target=opening)
        worker.start()
        worker.join()
        await pilot.pause()
        progressed = [m for m in posted if isinstance(m, LoadingPanel.Progressed)]
        assert len(progressed) == 102  # 0..100 percent of one phase, then the next phase
        text = str(app.query_one("#loading-phase", Label).render())
        assert text.startswith("Opening the model: moving to device")
        assert "512" in text and "2.0" in text  # 512 B of 2.0 KiB
        assert app.query_one("#loading-bar", ProgressBar).progress == 25


async def test_the_app_hides_the_panel_once_the_model_is_open() -> None:
    app = tiny_app()
    async with app.run_test() as pilot:
        await settle(pilot)
        assert app.debugger is not None
        assert not app.query_one(LoadingPanel).display
