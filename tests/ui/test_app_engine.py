"""The app and the CLI drive the same Debugger; quitting never waits for long work."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading

from textual.widgets import Input
from ui_helpers import press, settle, tiny_app

from gpt_tui.ui.widgets.module_tree import ModuleTree

SIZE = (100, 30)


def select(app, path: str) -> None:
    tree = app.query_one(ModuleTree)
    node = tree._path_nodes[path]
    parent = node.parent
    while parent is not None:
        parent.expand()
        parent = parent.parent
    tree.move_cursor(node)
    app.selected_path = path


async def test_gpt_tui_step_and_the_app_stop_at_the_same_events() -> None:
    breakpoint_ = "transformer.h.1.mlp"
    cli = subprocess.run(
        [sys.executable, "-m", "gpt_tui", "step", "--config", "tiny", "--prompt", "ROMEO:",
         "--break", breakpoint_, "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    expected = json.loads(cli.stdout)
    app = tiny_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        select(app, breakpoint_)
        await press(pilot, "b", "c")
        state = app.state
        assert state is not None and state.paused_at == breakpoint_
        seen = [dict(index=e.index, name=e.name, phase=e.phase) for e in state.events]
    assert seen == expected["events"] and expected["event"]["name"] == breakpoint_
    assert expected["reason"] == state.reason == "breakpoint"


async def test_quit_during_a_long_generation_exits_at_once() -> None:
    """`q` during G on a model whose every block takes long: the app exits before the
    generation could have finished, with status 0, no forward thread and no hook left."""
    app = tiny_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "4")
        app.query_one("#gen-n", Input).value = "50"
        await press(pilot, "escape")
        model = app.debugger.session.model
        entered, never = threading.Event(), threading.Event()
        blocks_run = []

        def slow(_module, _args, _output) -> None:  # a block that takes a second
            blocks_run.append(1)
            entered.set()
            never.wait(1.0)

        handles = [block.register_forward_hook(slow) for block in model.transformer.h]
        await pilot.press("G")
        assert await asyncio.to_thread(entered.wait, 30)
        await pilot.press("q")  # returns once the app has closed the debugger
    for handle in handles:
        handle.remove()
    assert app.return_value == 0
    n_layer = len(model.transformer.h)
    assert len(blocks_run) < 50 * n_layer  # stopped long before 50 tokens were made
    assert len(blocks_run) <= 2 * n_layer  # at its next block, not its next token
    assert not [t for t in threading.enumerate() if t.name == "gpt-tui-forward"]
    for module in model.modules():  # only the test's own hooks were ever left, now gone
        assert not module._forward_pre_hooks and not module._forward_hooks


async def test_attention_tab_shows_the_engines_head_summaries() -> None:
    from textual.widgets import Static

    from gpt_tui.engine.attention import head_summaries
    from gpt_tui.ui.widgets.attention_heatmap import AttentionPanel

    app = tiny_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await press(pilot, "3", "]")  # layer 1
        view = app.query_one(AttentionPanel).view
        assert view is not None and view.pattern.layer == 1
        assert view.heads == head_summaries(view.pattern)
        title = str(app.query_one("#attn-title", Static).render())
        assert f"H {view.heads[0].mean_entropy:.2f} nats" in title
        await press(pilot, "v")
        table = str(app.query_one("#attn-overview-text", Static).render())
        for h in view.heads:
            assert (
                f"head {h.head:<2} H {h.mean_entropy:5.2f} nats  diag {h.diagonal_share:4.2f}"
                in table
            )
