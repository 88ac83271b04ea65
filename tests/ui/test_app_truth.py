"""Pilot tests: a failed intent is shown once and never starts itself again; q leaves."""

from __future__ import annotations

from ui_helpers import press, settle, tiny_app


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
