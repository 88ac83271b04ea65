"""Pilot tests: a failed intent is shown once and never starts itself again; q leaves."""

from __future__ import annotations

import asyncio
import sys
import threading
import types

from ui_helpers import press, settle, tiny_app

WAIT = 30  # seconds before a stuck test fails instead of hanging


async def test_a_failing_train_tab_shows_one_error_and_does_not_loop() -> None:
    app = tiny_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        calls = []
        train_step = app.debugger.train_step
        app.debugger.train_step = lambda *a, **k: (calls.append(a), train_step(*a, **k))[1]
        await press(pilot, "p", "ctrl+u", "A", "enter")
        assert app.prompt == "A"
        await press(pilot, "6")
        for _ in range(3):  # a loop would start the step again after each refresh
            await settle(pilot)
        errors = [n for n in app._notifications if n.title == "training failed"]
        assert len(calls) == 1 and len(errors) == 1
        assert "at least two tokens" in errors[0].message
        await press(pilot, "1", "6")  # coming back to the tab asks again, once
        assert len(calls) == 2
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0


async def test_q_during_an_endless_expression_leaves_at_once(monkeypatch) -> None:
    started = threading.Event()
    signal = types.ModuleType("_app_truth_signal")
    signal.started = started
    monkeypatch.setitem(sys.modules, "_app_truth_signal", signal)
    endless = "__import__('_app_truth_signal').started.set() or [0 for _ in iter(int, 1)]"
    app = tiny_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        debugger = app.debugger
        await asyncio.to_thread(debugger.set_line_breakpoints, ["MLP.forward"])
        await asyncio.to_thread(debugger.step_line, "continue")
        app._intents.call("evaluate", "evaluate", endless)
        assert await asyncio.to_thread(started.wait, WAIT)
        await pilot.press("q")  # the app leaves while the expression still runs
        await pilot.pause()
    assert app.return_code == 0
    # The expression never ends by itself: the teardown finishing means it was interrupted.
    assert await asyncio.to_thread(debugger.closed.wait, WAIT)
    assert not [t for t in threading.enumerate() if t.name == "gpt-tui-forward"]
