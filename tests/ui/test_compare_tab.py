"""The Compare tab's panel drives the Debugger's comparison intents: a diff against a bf16
B, a patching sweep, an attribution, and a form that says what it misses. The panel is
hosted here as the app hosts a tab: its requests run on a worker thread, and the
snapshot's `compare` view is fed back."""

from __future__ import annotations

import asyncio

from rich.color import Color
from textual import on
from textual.app import App, ComposeResult
from textual.widgets import Input, Static
from ui_helpers import press, settle, tiny_app

from gpt_tui.engine.core.session import ModelSpec, Session
from gpt_tui.engine.debugger import Debugger
from gpt_tui.ui.messages import IntentRequested
from gpt_tui.ui.widgets.attention_heatmap import AttentionHeatmap
from gpt_tui.ui.widgets.attention_pictures import ramp, rgb
from gpt_tui.ui.widgets.compare import ComparePanel, signed_ramp
from gpt_tui.ui.widgets.generation import WHY_PARTS, GeneratePanel, token_text
from gpt_tui.ui.widgets.module_tree import DIVERGED_MARK, ModuleTree
from gpt_tui.ui.widgets.tables import RowTable


class Host(App):
    def __init__(self, debugger: Debugger) -> None:
        super().__init__()
        self.debugger = debugger
        self.errors: list[str] = []
        self.answered = asyncio.Event()  # set when a request's answer reached the panel

    def compose(self) -> ComposeResult:
        yield ComparePanel(id="compare-panel")

    @on(IntentRequested)
    def _requested(self, event: IntentRequested) -> None:
        method = getattr(self.debugger, event.method)

        def work() -> None:  # in a worker thread, as the app runs every intent
            try:
                state = method(*event.args, **event.kwargs)
            except Exception as err:  # the app shows a user error as a toast
                self.errors.append(str(err))
            else:
                self.call_from_thread(setattr, self.query_one(ComparePanel), "view", state.compare)
            self.call_from_thread(self.answered.set)

        self.run_worker(work, thread=True)


def view_tokens(debugger: Debugger) -> tuple[str, ...]:
    return debugger.state().compare.tokens


async def ask(pilot, button: str) -> None:
    """Press a button and wait until its request has been answered."""
    pilot.app.answered.clear()
    await pilot.click(button)
    await pilot.app.answered.wait()
    await pilot.pause()


async def test_compare_panel_diffs_patches_and_attributes() -> None:
    debugger = Debugger(Session.open(ModelSpec(config="tiny", device="cpu")))
    debugger.set_prompt("ROMEO:")
    app = Host(debugger)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            panel = app.query_one(ComparePanel)
            table = panel.query_one("#compare-table", RowTable)

            def head() -> str:
                return str(panel.query_one("#compare-head", Static).render())

            panel.query_one("#compare-b-dtype", Input).value = "bfloat16"
            await ask(pilot, "#compare-diff")
            view = debugger.state().compare
            assert view is not None and view.kind == "diff" and panel.view is view
            assert table.row_count == len(view.comparison.records) > 10
            assert "0.01 relative" in head() or "first divergence" in head()

            assert panel.request("patch") is None  # nothing filled in: it says what is missing
            assert "Patch needs B's prompt" in head() and debugger.state().compare is view

            panel.query_one("#compare-b-prompt", Input).value = "JULIET"
            panel.query_one("#compare-answer", Input).value = "A"
            panel.query_one("#compare-wrong", Input).value = "B"
            panel.query_one("#compare-b-dtype", Input).value = ""
            await ask(pilot, "#compare-patch")
            sweep = debugger.state().compare.sweep
            heatmap = panel.query_one("#compare-heatmap", AttentionHeatmap)
            assert sweep is not None and heatmap.display and not table.display
            assert heatmap.weights.shape == (len(sweep.layers), len(sweep.columns)) == (2, 6)
            assert heatmap.rows == ("L0", "L1") and heatmap.tokens == view_tokens(debugger)
            assert "1 = clean restored, 0 = still corrupted" in head()
            # a cell is drawn in the attention ramp's colour of its value (blue below 0)
            segments = list(heatmap.render_line(1))
            assert segments[0].text.startswith("L0")
            z = heatmap.zoom
            assert z >= 2 and segments[1 + z].style.color == Color.parse(
                rgb(signed_ramp(sweep.values[0][1]))
            )
            assert signed_ramp(0.5) == ramp(0.5) and signed_ramp(-0.5)[2] > signed_ramp(-0.5)[0]
            heatmap.focus()
            await pilot.press("down", "right", "right")
            cell = str(panel.query_one("#compare-cell", Static).render())
            assert f"L1 pos 2 'M'  {sweep.values[1][2]:+.4f}" in cell

            await ask(pilot, "#compare-attribute")
            result = debugger.state().compare.attribution
            assert result is not None and table.row_count == len(result.components)
            assert f"sum {result.total:.6g}" in head()

            panel.query_one("#compare-b-prompt", Input).value = "JULIET!"
            await ask(pilot, "#compare-patch")
            assert app.errors and "same token length" in app.errors[-1]
    finally:
        debugger.close()


async def test_the_tree_marks_the_first_divergence_of_the_last_diff() -> None:
    app = tiny_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await press(pilot, "8")
        tree = app.query_one(ModuleTree)
        assert tree.diverged is None
        panel = app.query_one(ComparePanel)
        panel.query_one("#compare-b-prompt", Input).value = "JULIET"  # A's is ROMEO's
        await pilot.click("#compare-diff")
        await settle(pilot)
        first = app.state.compare.comparison.first_divergence
        assert first is not None and first.name == "transformer.wte"
        assert tree.diverged == "transformer.wte"
        label = tree._path_nodes["transformer.wte"].label
        assert label.plain.startswith(DIVERGED_MARK) and DIVERGED_MARK in str(label)
        others = [p for p, node in tree._path_nodes.items() if p != "transformer.wte"]
        assert not any(tree._path_nodes[p].label.plain.startswith(DIVERGED_MARK) for p in others)

        panel.query_one("#compare-b-prompt", Input).value = ""  # B is A: nothing diverges
        await pilot.click("#compare-diff")
        await settle(pilot)
        assert app.state.compare.comparison.first_divergence is None
        assert tree.diverged is None
        assert not tree._path_nodes["transformer.wte"].label.plain.startswith(DIVERGED_MARK)


async def test_generate_tab_says_why_the_top_token_and_not_the_highlighted_one() -> None:
    app = tiny_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await press(pilot, "4", "g", "g")  # the attribution must see the generated tokens
        panel = app.query_one(GeneratePanel)
        why = panel.query_one("#gen-why", Static)
        assert not why.display
        await press(pilot, "y")  # the top candidate itself: nothing to compare
        assert not why.display and app.state.compare is None

        await press(pilot, "down", "down", "y")
        top, other = app.state.generation.next_candidates[0], panel.view.next_candidates[2]
        view = app.state.compare
        result = view.attribution
        assert view.kind == "attribute" and view.label.startswith("next token: ")
        assert (result.answer, result.wrong) == (top.token_id, other.token_id)
        # the logits the Generate tab shows are the ones attributed: its context is the
        # prompt and the generated tokens, not the prompt alone
        assert abs(result.model_logit_diff - (top.logit - other.logit)) < 1e-4
        assert abs(result.total - result.logit_diff) < 1e-4
        assert why.display
        lines = str(why.render()).splitlines()
        names = token_text(top.label), token_text(other.label)
        assert lines[0].startswith("why '{}' and not '{}'".format(*names))
        ranked = result.ranked()[:WHY_PARTS]
        assert len(lines) == 1 + len(ranked) == 1 + WHY_PARTS
        assert ranked[0].name in lines[1] and "█" in lines[1]

        await press(pilot, "g")  # a new step: that answer was about the last one
        assert not why.display


async def test_key_8_focuses_the_diff_table_not_a_text_box() -> None:
    app = tiny_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await press(pilot, "8")
        panel = app.query_one(ComparePanel)
        assert app.focused is panel.query_one("#compare-table", RowTable)
        await press(pilot, "N", "S")  # keys, not text in the B prompt
        assert panel.query_one("#compare-b-prompt", Input).value == ""


async def test_enter_in_a_box_runs_its_form() -> None:
    """Enter in B's boxes diffs (as the Cost and Code tabs' boxes run on Enter); in the
    answer box without B's prompt it attributes."""
    app = tiny_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await press(pilot, "8", "e")
        panel = app.query_one(ComparePanel)
        assert app.focused is panel.query_one("#compare-b-prompt", Input)
        await press(pilot, *"JULIE:", "enter")
        view = app.state.compare
        assert view is not None and view.kind == "diff" and "JULIE:" in view.label
        assert panel.query_one("#compare-table", RowTable).row_count == len(view.comparison.records)
        panel.query_one("#compare-b-prompt", Input).value = ""
        panel.query_one("#compare-answer", Input).focus()
        await press(pilot, "A", "enter")
        assert app.state.compare.kind == "attribute"


async def test_the_token_boxes_take_a_space_a_newline_and_escapes_as_meant() -> None:
    """The boxes were stripped: a space answer (the docs' own example) was refused, and
    B's prompt read \\n as two characters where the prompt bar reads a newline."""
    debugger = Debugger(Session.open(ModelSpec(config="tiny", device="cpu")))
    debugger.set_prompt("ROMEO:")
    app = Host(debugger)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            panel = app.query_one(ComparePanel)
            boxes = {
                name: panel.query_one(f"#compare-{name}", Input)
                for name in ("answer", "wrong", "b-prompt")
            }
            for typed, meant in ((" ", " "), ("␣", " "), ("\\n", "\n"), ("⏎", "\n"), ("a␣", "a␣")):
                boxes["answer"].value, boxes["wrong"].value = typed, "R"
                assert panel.request("attribute") == ("attribute_logit", (meant, "R"))
            boxes["answer"].value, boxes["b-prompt"].value = " ", "JULIET:\\n "
            assert panel.request("patch") == ("patch_runs", ("JULIET:\n ", " ", "R", "resid_pre"))
            await ask(pilot, "#compare-attribute")
            assert not app.errors and debugger.state().compare.attribution is not None
    finally:
        debugger.close()
