"""Pilot test of the training debugger (the Train tab), checked against the engine."""

from __future__ import annotations

import asyncio
import math

import pytest
from textual.widgets import Static
from ui_helpers import press, settle, tiny_app

from gpt_tui.engine.training.step import StepOptions, train_step
from gpt_tui.io.batches import prompt_batch
from gpt_tui.ui.widgets.train import HEALTH_STEPS, TrainPanel
from gpt_tui.ui.widgets.train_parts import clip_names


def text_of(app, selector: str) -> str:
    return str(app.query_one(selector, Static).render())


async def test_the_train_tab_steps_a_training_step_at_80x24() -> None:
    app = tiny_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await press(pilot, "6")
        panel = app.query_one(TrainPanel)
        view = panel.view
        assert view is not None and view.phase == "batch"
        session = app.debugger.session
        ids, _ = session.prompt_ids(app.prompt)
        expected = train_step(session.model, prompt_batch(ids, 64))
        assert view.loss == expected.loss and math.isfinite(view.loss)
        assert "[batch]" in text_of(app, "#train-head")
        assert "in  ROMEO" in text_of(app, "#train-batch")
        grads = app.query_one("#train-grads")
        assert grads.row_count == len(expected.params)
        # n: to forward, then to the loss; s walks backward module by module.
        await press(pilot, "n", "n")
        assert panel.view.phase == "loss"
        seen = []
        for _ in expected.backward:
            await press(pilot, "s")
            seen.append(panel.view.current_module)
            assert text_of(app, "#train-current").startswith(f"backward {seen[-1]}")
        assert seen == [e.name for e in expected.backward]
        assert seen.index("transformer.h.1") < seen.index("transformer.h.0")
        await press(pilot, "s")
        assert panel.view.phase == "optimizer"
        assert "weights put back" in text_of(app, "#train-current")
        # Everything shown fits the 80 columns (the health box waits for h).
        assert not app.query_one("#train-health").display
        for child in panel.children:
            if child.display:
                assert child.region.right <= 80 and child.region.height > 0, child.id


async def test_continue_stops_at_the_gradient_watchpoint_and_health_draws_curves() -> None:
    app = tiny_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await press(pilot, "6")
        opts = StepOptions(inject_grad_nan="transformer.h.1.attn")
        await asyncio.to_thread(app.debugger.set_training_options, opts)
        await press(pilot, "escape", "w", "6", "c")  # the app's NaN watch, then continue
        panel = app.query_one(TrainPanel)
        assert app.state.message == "non-finite: backward at transformer.h.1.attn"
        assert panel.view.current_module == "transformer.h.1.attn"
        assert "first non-finite: backward at transformer.h.1.attn" in text_of(app, "#train-head")
        await asyncio.to_thread(app.debugger.set_training_options, StepOptions())
        await press(pilot, "h")
        health = panel.view.health
        assert health is not None and len(health.steps) == HEALTH_STEPS
        assert health.steps[-1].loss < health.steps[0].loss  # it learns the one batch
        curves = text_of(app, "#train-health")
        assert curves.startswith("loss") and "‖grad‖" in curves and "Δw/w h.0" in curves


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_health_names_the_layers_it_has_no_line_for(size) -> None:
    """Five layers' Δw/w curves: at 80x24 three lines, then `+2 more` naming the rest; at
    120x40 all of them. No layer goes unsaid."""
    app = tiny_app(overrides=["n_layer=4"])
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await press(pilot, "6", "h")
        layers = [k for k, _ in app.query_one(TrainPanel).view.health.steps[0].layer_ratios]
        assert layers == ["other", "h.0", "h.1", "h.2", "h.3"]
        curves = text_of(app, "#train-health").splitlines()
        drawn = [
            line.split()[1] for line in curves if line.startswith("Δw/w") and "more" not in line
        ]
        health = app.query_one("#train-health")
        assert health.region.height >= len(curves)  # every line on screen
        if size == (80, 24):
            assert drawn == ["other", "h.0", "h.1"]
            assert "Δw/w +2 more (h.2, h.3: a taller terminal shows them)" in curves
        else:
            assert drawn == layers and not any("more" in line for line in curves)


def test_the_more_line_cuts_long_lists_of_names() -> None:
    assert clip_names(["h.10", "h.11", "h.12"], 40) == "h.10, h.11, h.12"
    assert clip_names([f"h.{i}" for i in range(10, 40)], 20) == "h.10, h.11, h.12, …"
