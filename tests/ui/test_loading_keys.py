"""Keys pressed while the model opens wait and run once it is open; q leaves at once, and
the process ends without waiting for the open to finish."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading

from textual.widgets import Input, Label, TabbedContent
from ui_helpers import settle, tiny_app

from gpt_tui.ui.widgets.module_tree import ModuleTree


def slow_open(monkeypatch) -> tuple[threading.Event, threading.Event]:
    """Session.open waits for `go` after setting `opening`."""
    from gpt_tui.engine.core.session import Session

    opening, go = threading.Event(), threading.Event()
    real_open = Session.open.__func__

    def open_when_told(cls, spec, progress=None):
        opening.set()
        assert go.wait(30)
        return real_open(cls, spec, progress)

    monkeypatch.setattr(Session, "open", classmethod(open_when_told))
    return opening, go


async def test_keys_pressed_while_the_model_opens_are_said_to_wait_and_run_after(
    monkeypatch,
) -> None:
    opening, go = slow_open(monkeypatch)
    app = tiny_app()
    async with app.run_test(size=(80, 24)) as pilot:
        try:
            assert await asyncio.to_thread(opening.wait, 30)
            await pilot.press("r", "2", "slash", "m", "l", "p")
            waiting = str(app.query_one("#loading-keys", Label).render())
            assert "keys wait: r 2 / m l p" in waiting
            assert app.state is None  # nothing ran yet
        finally:
            go.set()
        await settle(pilot)
        assert app.state is not None and app.state.run is not None  # r ran the pass
        assert app.query_one(TabbedContent).active == "params"  # 2 showed Params
        box = app.query_one("#tree-filter", Input)
        assert box.display and box.value == "mlp"  # / opened the filter, in view
        tree = app.query_one(ModuleTree)
        assert tree.name_filter == "mlp"


SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, threading
    sys.path.insert(0, {helpers!r})
    from gpt_tui.engine.core.session import Session
    from ui_helpers import tiny_app

    opening = threading.Event()

    def never_opens(cls, spec, progress=None):
        opening.set()
        threading.Event().wait()  # a model that never finishes loading

    Session.open = classmethod(never_opens)

    async def main():
        app = tiny_app()
        async with app.run_test() as pilot:
            assert await asyncio.to_thread(opening.wait, 30)
            await pilot.press("q")
        assert app.return_code == 0
        print("left")

    asyncio.run(main())
    """
)


def test_q_while_the_model_opens_ends_the_process_without_waiting_for_the_open() -> None:
    from pathlib import Path

    helpers = str(Path(__file__).parent)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(helpers=helpers)],
        capture_output=True,
        text=True,
        timeout=120,  # with the open in a joined thread, the process never ends
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "left"
