"""Pilot tests: the app driven by keys, checked against the engine computing directly."""

from __future__ import annotations

import asyncio
import math
import threading

import torch
from textual.widgets import DataTable, Input, Static, TabbedContent
from ui_helpers import press, select, settle, tiny_app

from gpt_tui.engine.analysis.interventions import Interventions, inject_nonfinite
from gpt_tui.engine.analysis.probes import Probes
from gpt_tui.engine.core.session import ModelSpec
from gpt_tui.engine.core.stepping import ForwardStepper
from gpt_tui.engine.generation.sampling import generate_steps
from gpt_tui.ui.app import GptTuiApp
from gpt_tui.ui.widgets.attention_heatmap import AttentionPanel
from gpt_tui.ui.widgets.diagram import Diagram
from gpt_tui.ui.widgets.footer import FooterKey
from gpt_tui.ui.widgets.generation import GeneratePanel, token_text
from gpt_tui.ui.widgets.help import HelpScreen
from gpt_tui.ui.widgets.layer_stats import StatsPanel, merge_aliases, row_name
from gpt_tui.ui.widgets.module_tree import ModuleTree
from gpt_tui.ui.widgets.param_table import ParamTable
from gpt_tui.ui.widgets.status import StatusBar
from gpt_tui.ui.widgets.train import TrainPanel

SIZE = (100, 30)


def prompt_ids(app: GptTuiApp) -> torch.Tensor:
    session = app.debugger.session
    return torch.tensor([session.encode(app.prompt)], dtype=torch.long)


async def test_every_tab_renders(arch: str) -> None:
    app = tiny_app(arch)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        status = app.query_one(StatusBar)
        assert status.info is not None and status.info.family == arch
        assert app.prompt == "ROMEO:"
        tree = app.query_one(ModuleTree)
        assert "transformer.h.1.mlp" in tree._path_nodes
        await press(pilot, "r")
        # The stats table: one row per probe of a plain recorded pass, with its shape.
        with Probes(app.debugger.session.model) as probes:
            probes.run(prompt_ids(app))
            probes.flush()
            expected = [r for r in probes.records if r.phase == "out" and r.same_as is None]
        table = app.query_one("#stats-table", DataTable)
        assert table.row_count == len(expected)
        for i, record in enumerate(expected):
            name, shape = table.get_row_at(i)[:2]
            assert record.name.endswith(str(name).split("=")[0])
            assert str(shape) == "×".join(map(str, record.shape))
        assert tree.shapes["transformer.h.0.mlp"] == (1, 6, 32)
        for key, widget in [
            ("1", StatsPanel),
            ("2", ParamTable),
            ("3", AttentionPanel),
            ("4", GeneratePanel),
            ("5", Diagram),
            ("6", TrainPanel),
        ]:
            await press(pilot, key)
            assert app.query_one(widget).is_mounted
        assert app.query_one(ParamTable).row_count > len(app.info.summary.parameters)
        train = app.query_one(TrainPanel).view
        assert train is not None and math.isfinite(train.loss)
        picture = str(app.query_one(Diagram).render())
        if arch == "nanochat":
            assert "rotary" in picture and "softcap" in picture and "ReLU²" in picture
        else:
            assert "wpe" in picture and "tied to wte" in picture and "GELU" in picture
        assert "(1, 6, 32)" in picture  # live shapes of the last run


def footer_keys(app: GptTuiApp) -> list[str]:
    """The keys the footer shows, left to right, each wholly inside the screen."""
    width = app.size.width
    keys = [k for k in app.query(FooterKey) if k.region.width and k.region.right <= width]
    return [k.key_display for k in sorted(keys, key=lambda k: k.region.x)]


def visible_columns(table: DataTable) -> list[str]:
    """The labels of the columns wholly inside the table's width, left to right."""
    room = table.scrollable_content_region.width
    out = []
    for column in table.ordered_columns:
        room -= column.get_render_width(table)
        if room < 0:
            break
        out.append(str(column.label))
    return out


async def test_stepping_follows_the_engine_event_order() -> None:
    app = tiny_app()
    async with app.run_test(size=(80, 24)) as pilot:  # the smallest supported terminal
        await settle(pilot)
        assert footer_keys(app)[:9] == ["r", "s", "n", "c", "b", "w", "g", "q", "?"]
        keys = ["s", "s", "s", "n", "s", "s", "n", "o"]
        moves = {"s": "step_into", "n": "step_over", "o": "step_out"}
        expected = []  # (event name, the records up to the pause)
        with ForwardStepper(app.debugger.session.model, prompt_ids(app)) as reference:
            for key in keys:
                name = getattr(reference, moves[key])().name
                expected.append((name, list(reference.probes.records)))
        tree = app.query_one(ModuleTree)
        table = app.query_one("#stats-table", DataTable)
        for key, (name, records) in zip(keys, expected, strict=True):
            await press(pilot, key)
            assert app.paused_at == name
            assert f"paused at {name}" in app.query_one(StatusBar).stepper
            if name in tree._path_nodes:
                assert tree.paused == name
                label = str(tree._path_nodes[name].label)
                assert label.startswith("→ " + name.rsplit(".", 1)[-1]) and "▶" not in label
            # The stats tab shows the records so far, the paused one highlighted.
            assert table.row_count == len(merge_aliases(tuple(records)))
            assert table.cursor_row == table.row_count - 1
            paused_row = str(table.get_row_at(table.cursor_row)[0])
            assert paused_row == row_name(records[-1], paused=True)
        assert footer_keys(app)[:11] == ["r", "s", "n", "o", "c", "b", "w", "g", "q", "?", "x"]
        # At 80 columns a focused tab takes the width: the NaN-hunting columns fit.
        await press(pilot, "1")
        assert not app.query_one("#left").display
        assert visible_columns(table)[:8] == [
            "name",
            "shape",
            "NaN",
            "Inf",
            "mean",
            "std",
            "min",
            "max",
        ]
        await press(pilot, "2")
        params = app.query_one(ParamTable)
        assert visible_columns(params)[:3] == ["name", "params", "share"]
        await press(pilot, "end")
        assert params.cursor_row == params.row_count - 1 and params.scroll_x == 0
        await press(pilot, "escape")  # the tree comes back with the focus
        assert app.query_one("#left").display and app.query_one(ModuleTree).has_focus
        # Esc then a key, fast, reaches the app as alt+key: both still count.
        await press(pilot, "p", "alt+2")
        assert app.query_one(TabbedContent).active == "params" and params.has_focus
        assert app.query_one("#prompt", Input).value == "ROMEO:"
        await press(pilot, "escape")
        await press(pilot, "c")  # no breakpoints: runs to the end
        assert app.paused_at is None
        assert "finished" in app.query_one(StatusBar).stepper


async def test_breakpoint_abort_and_watchpoint() -> None:
    """b stops at a breakpoint; x aborts a paused and a running pass; w finds a NaN."""
    app = tiny_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        select(app, "transformer.h.1.mlp")
        await press(pilot, "b")
        assert app.query_one(ModuleTree).breakpoints == {"transformer.h.1.mlp"}
        await press(pilot, "c")
        assert app.paused_at == "transformer.h.1.mlp"
        assert "breakpoint" in app.query_one(StatusBar).stepper
        await press(pilot, "x")
        assert app.paused_at is None
        assert "aborted" in app.query_one(StatusBar).stepper
        # x also stops a continue that is still running: hold the pass inside h.0.mlp.
        reached, release = threading.Event(), threading.Event()

        def hold(_module, _args, _output) -> None:
            if threading.current_thread().name == "gpt-tui-forward":
                reached.set()
                release.wait(30)

        mlp = app.debugger.session.model.transformer.h[0].mlp
        handle = mlp.register_forward_hook(hold)
        try:
            select(app, "transformer.h.1.mlp")
            await press(pilot, "b")  # the breakpoint off again: c runs into the hold
            await pilot.press("c")
            assert await asyncio.to_thread(reached.wait, 30)
            await pilot.pause()  # the worker's "running" state reaches the app
            assert app.stepping and "running" in app.query_one(StatusBar).stepper
            await pilot.press("x")
            release.set()
            await settle(pilot)
        finally:
            release.set()
            handle.remove()
        assert not app.stepping and app.paused_at is None
        assert "aborted" in app.query_one(StatusBar).stepper
        assert app.state.run is None  # the pass never finished: no whole run was recorded
        assert app.debugger.state().status == "aborted" and app.debugger._pass.stepper is None
        # w: the watchpoint stops where a NaN first appears.
        Interventions(app.debugger.session.model).add(inject_nonfinite("transformer.h.0.mlp"))
        await press(pilot, "w", "c")
        assert app.paused_at == "transformer.h.0.mlp"
        assert "non-finite" in app.query_one(StatusBar).stepper
        assert "transformer.h.0.mlp" in app.query_one(ModuleTree).nonfinite


async def test_attention_cursor_reports_the_engine_probability(arch: str) -> None:
    app = tiny_app(arch)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "3", "]", ".", "down", "down", "down", "right")
        panel = app.query_one(AttentionPanel)
        with Probes(app.debugger.session.model, attention_layers=[1]) as probes:
            probes.run(prompt_ids(app))
            weights = probes.pattern(1).weights
            expected = float(weights[1, 3, 1])
            probs, keys = torch.as_tensor(weights[1, 3]).topk(3)
        assert panel.view.pattern.layer == 1 and panel.head == 1
        assert panel.cursor_probability() == expected
        readout = str(app.query_one("#attn-cursor", Static).render())
        assert f"p = {expected:.6f}" in readout
        # The query row's top keys, most attended first, with the engine's probabilities.
        tokens = panel.view.tokens
        looks = "  ".join(
            f"k {k} {tokens[k]} {p:.2f}" for k, p in zip(keys.tolist(), probs.tolist(), strict=True)
        )
        assert f"q 3 {tokens[3]} looks at  {looks}" in readout
        await press(pilot, "v")  # all heads: each labelled, the current one highlighted
        picture = app.query_one("#attn-overview-text", Static).render()
        assert all(f"head {h}" in str(picture) for h in range(app.info.n_head))


async def test_generation_seeded_forced_and_lens() -> None:
    """Seeded text as the engine's; forcing a candidate; the logit lens of the next step."""
    app = tiny_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "4")
        app.query_one("#gen-seed", Input).value = "7"
        app.query_one("#gen-n", Input).value = "12"
        await press(pilot, "escape", "G")
        session = app.debugger.session
        steps = generate_steps(session.model, session.tokenizer, "ROMEO:", 12, seed=7)
        expected = "ROMEO:" + session.decode([s.token_id for s in steps])
        panel = app.query_one(GeneratePanel)
        assert panel.view.text == expected
        # Forcing the second candidate appends it.
        before = panel.view
        second = before.next_candidates[1]
        await press(pilot, "4", "down", "f")  # the tab gives the candidates table the focus
        after = panel.view
        assert after.step.forced and after.step.token_id == second.token_id
        assert after.text == before.text + session.decode([second.token_id])
        # The logit lens of the next step: the last layer's top token is the model's top.
        lens = after.lens
        assert lens is not None and [layer.layer for layer in lens.layers] == [-1, 0, 1]
        top = after.next_candidates[0]
        assert lens.layers[-1].tokens[0].token_id == top.token_id
        line = str(app.query_one("#gen-lens", Static).render())
        assert line.startswith("lens  emb ") and f"h1 {token_text(top.label)} " in line


async def test_keys_while_busy_never_crash_and_failures_reset_the_stepper() -> None:
    app = tiny_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("r", "r", "s", "g", "r")
        await settle(pilot)
        assert app.query_one("#stats-table", DataTable).row_count > 0
        assert app.is_running
        # A prompt the tokenizer rejects is refused where it is typed, in the user's words
        # (no exception class names); the runs keep the prompt in use, and the box shows
        # it again once left.
        await press(pilot, "p")
        app.clear_notifications()
        app.query_one("#prompt", Input).value = "héllo #x"
        await press(pilot, "enter")
        (toast,) = app._notifications
        assert toast.severity == "error" and toast.message.startswith("characters not in")
        assert app.prompt == "ROMEO:"
        box = app.query_one("#prompt", Input)
        assert box.has_focus and box.value == "héllo #x"  # kept, to be mended
        await press(pilot, "escape")  # left unmended: the box shows the prompt in use
        assert box.value == "ROMEO:" and not box.has_focus

        # A failing step (the model raises) leaves the stepper display true.
        def boom(_module, _args):
            raise RuntimeError("boom")

        handle = app.debugger.session.model.transformer.h[0].register_forward_pre_hook(boom)
        try:
            await press(pilot, "x")
            for key in ("c", "c"):  # c runs into h.0, where the model raises
                app.clear_notifications()
                await press(pilot, key)
                stepper = app.query_one(StatusBar).stepper
                assert not app.stepping and app.paused_at is None
                assert stepper.startswith("error · ") and "boom" in stepper
        finally:
            handle.remove()
        await press(pilot, "s")
        assert app.paused_at is not None and not app.query_one(StatusBar).loading


async def test_ablation_toggles_on_the_selected_mlp() -> None:
    """The rerun, the generation's candidates and lens, the tree and the Train tab all
    show the ablated model."""
    app = tiny_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "r", "4", "6")
        panel = app.query_one(GeneratePanel)
        before = panel.view
        path = "transformer.h.1.mlp"
        select(app, path)
        await press(pilot, "a")
        assert app.ablations and path in app.ablations[0]
        mlp = next(r for r in app.state.run.records if r.name == path)
        assert mlp.stats.abs_max == 0.0  # the rerun sees the ablated output
        expected, _ = app.debugger.session.generation(app.prompt, seed=0).peek()
        after = panel.view
        assert after.next_candidates == expected != before.next_candidates
        assert after.lens != before.lens
        tree = app.query_one(ModuleTree)
        assert str(tree._path_nodes[path].label).startswith("⊘ mlp")
        head = str(app.query_one("#train-head", Static).render())
        assert "ablations active" in head
        await press(pilot, "a")
        assert app.ablations == () and not tree.ablated
        assert "ablations active" not in str(app.query_one("#train-head", Static).render())
        assert panel.view.next_candidates == before.next_candidates


async def test_bad_config_shows_a_message_and_keeps_running() -> None:
    app = GptTuiApp(ModelSpec(config="nope"), show_memory=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        box = app.query_one("#message", Static)
        assert box.display
        assert "unknown config 'nope'" in str(box.render())
        await press(pilot, "r", "g", "question_mark")
        assert isinstance(app.screen, HelpScreen)
        await press(pilot, "escape", "q")
    assert app.return_value == 0


async def test_help_screen_and_command_palette_list_the_keys() -> None:
    app = tiny_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "question_mark")
        assert isinstance(app.screen, HelpScreen)
        listed = {pane: {row[0] for row in rows} for pane, rows in app.screen.sections}
        everywhere = {"r", "s", "n", "o", "c", "b", "w", "g", "G", "x", "a", "q", "?", "/"}
        assert everywhere | {"p", "Esc", "1–9", "N", "S", "U", "C", "T"} <= listed["Anywhere"]
        assert {"d", "Home", "End"} <= listed["Stats"] and "t" in listed["Params"]
        assert {"[", "]", ",", ".", "m", "v"} <= listed["Attention"]
        assert "f Enter" in listed["Generate"]
        assert {"b", "Enter", "v", "[", "]", "{", "}"} <= listed["Code"]
        assert {"Enter", "Numerics"} <= listed["Cost"]
        assert not any("_" in key for keys in listed.values() for key in keys)  # question_mark
        await press(pilot, "escape")
        await pilot.press("ctrl+p")
        await pilot.press(*"step over")
        await pilot.pause(0.3)  # the palette searches in a background task
        await pilot.press("enter")
        await settle(pilot)
        assert app.paused_at == "transformer.wte"
        assert app.query_one(TabbedContent).active == "stats"


async def test_first_frame_at_80_columns_gives_the_tabs_the_width() -> None:
    app = tiny_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        tabs = app.query_one(TabbedContent).query("Tab")
        assert [str(t.label) for t in tabs][-3:] == ["Code", "Diff", "Cost"]
        assert all(0 < t.region.right <= 80 for t in tabs)  # every tab name on screen
        await press(pilot, "r")
        table = app.query_one("#stats-table", DataTable)
        assert visible_columns(table)[:8] == [
            "name", "shape", "NaN", "Inf", "mean", "std", "min", "max"
        ]  # fmt: skip
