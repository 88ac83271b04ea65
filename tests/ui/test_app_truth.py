"""Pilot tests: a failed intent is shown once and never starts itself again; q leaves."""

from __future__ import annotations

import asyncio
import sys
import threading
import types

import torch
from ui_helpers import press, settle, tiny_app

from gpt_tui.live import run_inspector
from gpt_tui.models import build_model, make_config
from tests.engine.test_debugger import Gate

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
        errors = [n for n in app._notifications if n.title == "Training step failed"]
        assert len(calls) == 1 and len(errors) == 1
        assert "at least two tokens" in errors[0].message
        # said in the tab too, at once, with the fix (no "loading the batch…" left up)
        head = str(app.query_one("#train-head").render())
        assert "Training step failed: a batch from the prompt needs at least two" in head
        assert "it has 1: give a longer prompt" in head and "p changes the prompt" in head
        await press(pilot, "1", "6")  # coming back to the tab asks again, once
        assert len(calls) == 2
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0


async def test_a_failed_step_hides_the_last_batchs_step_and_a_good_one_shows_it() -> None:
    """The one-token prompt's error sat above the previous prompt's batch and gradients."""
    app = tiny_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await press(pilot, "6")
        parts = ["#train-batch", "#train-current", "#train-grads"]
        assert all(app.query_one(p).display for p in parts)
        assert "ROMEO" in str(app.query_one("#train-batch").render())
        await press(pilot, "p", "ctrl+u", "A", "enter", "6")
        await settle(pilot)
        assert "Training step failed" in str(app.query_one("#train-head").render())
        assert not any(app.query_one(p).display for p in parts + ["#train-health"])
        await press(pilot, "p", "ctrl+u", *"JULIET:", "enter", "6")
        await settle(pilot)
        assert all(app.query_one(p).display for p in parts)
        assert "JULIET" in str(app.query_one("#train-batch").render())


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
        # Paused, so q asks once; the second leaves while the expression still runs.
        await pilot.press("q", "q")
        await pilot.pause()
    assert app.return_code == 0
    # The expression never ends by itself: the teardown finishing means it was interrupted.
    assert await asyncio.to_thread(debugger.closed.wait, WAIT)
    assert not [t for t in threading.enumerate() if t.name == "gpt-tui-forward"]


def test_q_inside_inspect_waits_for_the_running_work_and_puts_the_model_back() -> None:
    """Inside `gpt_tui.inspect` the model must come back: q cancels the running health run,
    says it waits, and the call returns only once every hook is gone and the weights are
    the user's again."""
    model = build_model(make_config("tiny", "nanogpt"), "cpu", seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    idx = torch.tensor([[18, 47, 56, 57, 58, 1]])
    seen: dict = {}

    async def drive(app) -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            gate = Gate(model.transformer.h[1], on_call=2)  # inside a training step
            notify = app.notify

            def said(message: str, *args, **kwargs) -> None:
                seen.setdefault("said", []).append(message)
                if "waiting for the running work" in message:
                    gate.release.set()  # the work reaches its next check only now
                notify(message, *args, **kwargs)

            app.notify = said
            app._intents.call("training", "train_health", 5)
            assert await asyncio.to_thread(gate.reached.wait, WAIT)
            # The run would be cut short: q asks; the second returns once the model is back.
            await pilot.press("q", "q")
            seen["closed"] = app.debugger.closed.is_set()
            gate.remove()

    run_inspector(
        model, idx, tokenizer=None, targets=idx.roll(-1, 1), run=lambda a: asyncio.run(drive(a))
    )
    assert any("waiting for the running work" in m for m in seen["said"])
    assert seen["closed"]
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not (m._forward_hooks or m._forward_pre_hooks) for m in model.modules())
