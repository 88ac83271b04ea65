"""The app and the CLI drive the same Debugger; quitting never waits for long work."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading

from textual.widgets import Input
from ui_helpers import press, select, settle, tiny_app

from gpt_tui.ui.widgets.module_tree import ModuleTree

SIZE = (100, 30)


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
    generation could have finished, with status 0; the engine then unwinds at its next
    block and leaves no forward thread and no hook."""
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
        # A generation running: q asks once; the second leaves, the engine unwinds after.
        await pilot.press("q", "q")
    assert app.return_value == 0
    assert await asyncio.to_thread(app.debugger.closed.wait, 30)  # at its next block
    for handle in handles:
        handle.remove()
    n_layer = len(model.transformer.h)
    assert len(blocks_run) < 50 * n_layer  # stopped long before 50 tokens were made
    assert len(blocks_run) <= 2 * n_layer  # at its next block, not its next token
    assert not [t for t in threading.enumerate() if t.name == "gpt-tui-forward"]
    for module in model.modules():  # only the test's own hooks were ever left, now gone
        assert not module._forward_pre_hooks and not module._forward_hooks


async def test_attention_tab_shows_the_engines_head_summaries() -> None:
    from textual.widgets import Static

    from gpt_tui.engine.analysis.attention import head_summaries
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


async def test_prompt_box_keeps_its_text_takes_escapes_and_never_lies() -> None:
    app = tiny_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        box = app.query_one("#prompt", Input)
        await press(pilot, "p", "x")  # the first key edits the prompt, it does not wipe it
        assert box.value == "ROMEO:x"
        await press(pilot, "escape")  # left without Enter: the prompt in use is shown
        assert box.value == "ROMEO:" and app.prompt == "ROMEO:"
        await press(pilot, "p")
        box.value = "ROMEO:\\nJULIET:"
        await press(pilot, "enter")
        assert app.prompt == "ROMEO:\nJULIET:"
        assert box.value == "ROMEO:\\nJULIET:" and not box.has_focus
        await press(pilot, "r")
        assert app.state.run.token_ids == tuple(app.debugger.session.encode("ROMEO:\nJULIET:"))


async def test_new_sampling_settings_keep_the_text_and_repeek() -> None:
    from gpt_tui.ui.widgets.generation import GeneratePanel

    app = tiny_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "4", "g", "g")
        before = app.query_one(GeneratePanel).view
        assert len(before.steps) == 2 and before.next_kept > 1
        top_k = app.query_one("#gen-top-k", Input)
        top_k.focus()
        top_k.value = "1"
        await press(pilot, "enter")
        after = app.query_one(GeneratePanel).view
        assert after.steps == before.steps and after.text == before.text  # nothing lost
        assert after.next_kept == 1 and after.settings.top_k == 1  # candidates re-peeked
        await press(pilot, "escape", "g")
        third = app.query_one(GeneratePanel).view
        assert third.steps[:2] == before.steps
        assert third.steps[-1].token_id == after.next_candidates[0].token_id  # greedy now


def test_the_palette_names_keys_as_people_read_them() -> None:
    from gpt_tui.ui.commands import palette_commands

    titles = [title for title, _, _ in palette_commands()]
    assert "Help (?)" in titles and "Step into (s)" in titles and "Show tab: Stats (1)" in titles
    assert not any("question_mark" in t or "_" in t.split("(")[-1] for t in titles)


async def test_a_60x20_terminal_keeps_working() -> None:
    app = tiny_app()
    async with app.run_test(size=(60, 20)) as pilot:
        await settle(pilot)
        await press(pilot, "r", "s", "s", "3", "4", "g", "6", "question_mark", "escape", "x")
        assert app.is_running and app.state is not None and app.state.run is not None
        assert app.state.generation is not None and len(app.state.generation.steps) == 1
        await press(pilot, "q")
    assert app.return_value == 0


async def test_x_stops_a_running_generation_and_g_shows_progress() -> None:
    from gpt_tui.ui.widgets.generation import GeneratePanel

    app = tiny_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "4")
        app.query_one("#gen-n", Input).value = "500"
        await press(pilot, "escape")
        third, go = threading.Event(), threading.Event()
        calls = []

        def hold(_module, _args, _output) -> None:
            calls.append(1)
            if len(calls) == 3:  # inside the third token's forward (after two progress posts)
                third.set()
                go.wait(30)

        handle = app.debugger.session.model.transformer.h[0].register_forward_hook(hold)
        try:
            await pilot.press("G")
            assert await asyncio.to_thread(third.wait, 30)
            await pilot.pause()
            shown = app.query_one(GeneratePanel).view
            assert shown is not None and len(shown.steps) >= 1  # tokens appear as they come
            assert app.check_action("abort", ()) is True
            await pilot.press("x")
            go.set()
            await settle(pilot)
        finally:
            go.set()
            handle.remove()
        state = app.state
        assert state.cancelled and state.message.startswith("generation cancelled after 2 of 500")
        assert len(app.query_one(GeneratePanel).view.steps) == 2


async def test_a_bad_n_is_said_not_replaced() -> None:
    app = tiny_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "4")
        app.query_one("#gen-n", Input).value = "abc"
        app.clear_notifications()
        await press(pilot, "escape", "G")
        (toast,) = app._notifications
        assert "N 'abc'" in toast.message and app.state.generation.steps == ()


def test_the_app_command_exits_2_when_the_model_cannot_open(monkeypatch, capsys) -> None:
    import argparse

    from gpt_tui.cli.app_cmd import cmd_app
    from gpt_tui.ui.app import GptTuiApp

    def run_and_fail(self) -> None:  # what the screen does when the load fails, then q
        self.open_error = "rand.pt is not a PyTorch checkpoint"

    monkeypatch.setattr(GptTuiApp, "run", run_and_fail)
    monkeypatch.setattr("gpt_tui.cli.app_cmd.require_terminal", lambda what, instead: None)
    from gpt_tui.cli.parser import build_parser

    args = build_parser()[0].parse_args(["--config", "tiny"])
    assert isinstance(args, argparse.Namespace)
    assert cmd_app(args) == 2
    assert capsys.readouterr().err.strip() == "gpt-tui: error: rand.pt is not a PyTorch checkpoint"


async def test_escape_then_shift_key_fast_still_counts() -> None:
    """Esc then G within the terminal's escape delay reaches Textual as alt+shift+g."""
    app = tiny_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "4")
        app.query_one("#gen-n", Input).value = "3"
        await press(pilot, "alt+shift+g")
        assert len(app.state.generation.steps) == 3


async def test_filter_then_enter_lands_on_the_first_match() -> None:
    app = tiny_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "slash", "m", "l", "p", "enter")
        tree = app.query_one(ModuleTree)
        assert tree.has_focus and app.selected_path == "transformer.h.0.mlp"
        await press(pilot, "b")  # b acts on the match
        assert app.state.breakpoints == {"transformer.h.0.mlp"}


async def test_q_quits_at_once_while_a_big_model_is_still_opening(monkeypatch) -> None:
    from gpt_tui.engine.core.session import Session

    opening, go = threading.Event(), threading.Event()
    real_open = Session.open.__func__

    def slow_open(cls, spec, progress=None):
        opening.set()
        assert go.wait(30)  # a model that takes as long as the test lets it
        return real_open(cls, spec, progress)

    monkeypatch.setattr(Session, "open", classmethod(slow_open))
    app = tiny_app()
    try:
        async with app.run_test(size=SIZE) as pilot:
            assert await asyncio.to_thread(opening.wait, 30)
            await pilot.press("q")
            await pilot.pause()
            assert app.return_code == 0 and not go.is_set()  # quit before the open ended
    finally:
        go.set()  # let the opening thread finish
