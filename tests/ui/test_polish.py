"""Rough edges a new user met: byte tokens written one way, footer and help wording, the
tensor viewer's rows at 80x24, the Train tab's advice in the app's own terms."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import DataTable, Input, Static
from textual.widgets._footer import FooterKey

from gpt_tui.ui.tabs import TABS
from gpt_tui.ui.widgets.compare import ComparePanel
from gpt_tui.ui.widgets.generation import GeneratePanel
from gpt_tui.ui.widgets.help import HelpScreen
from gpt_tui.ui.widgets.tensor_viewer import TensorViewer
from gpt_tui.ui.widgets.train import TrainPanel
from tests.ui.test_code_pane import kernel_line, submit
from tests.ui.ui_helpers import press, settle, tiny_app


async def test_byte_tokens_read_as_the_cli_writes_them() -> None:
    app = tiny_app(overrides=["vocab_size=256"])  # the tiny model on a byte vocabulary
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await press(pilot, "4", "g", "g", "g")
        panel = app.query_one(GeneratePanel)
        view = panel.view
        assert view is not None
        table = panel.query_one("#gen-candidates", DataTable)
        cells = [str(table.get_row_at(i)[1]) for i in range(table.row_count)]
        # the candidates' labels exactly as `gpt-tui generate` prints them
        assert cells == [c.label for c in view.next_candidates]
        bytes_ = [c for c in view.next_candidates if c.token_id < 32 or c.token_id >= 127]
        drawn = {9: "⇥", 10: "⏎", 13: "␍"}
        assert bytes_ and all(drawn.get(c.token_id, "<0x") in c.label[:3] for c in bytes_)
        assert not any("\\" in cell for cell in cells)


async def test_footer_labels_never_read_as_another_key_and_help_tells_n_from_o() -> None:
    app = tiny_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        footer = list(app.query(FooterKey))
        keys = {k.key_display for k in footer}
        assert "G" in keys and "N" in keys
        for k in footer:  # "G Gen N N Line" read as if N were G's argument
            assert not keys & set(k.description.split()), (k.key_display, k.description)
        await press(pilot, "question_mark")
        assert isinstance(app.screen, HelpScreen)
        train = {key: what for key, _, what in dict(app.screen.sections)["Train"]}
        assert train["n"] != train["o"]


async def test_the_tensor_viewer_shows_all_of_q_at_80x24() -> None:
    """Paused at nanogpt's attention kernel, after one `p`: q[0, 0] is 6 × 16 (T × hs)."""
    app = tiny_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await press(pilot, "7")
        await submit(pilot, "#code-break", f"nanogpt.py:{kernel_line()}")
        await press(pilot, "escape", "C")
        await submit(pilot, "#code-eval", "p q.shape")
        await submit(pilot, "#code-eval", "v q[0,0]")
        viewer = app.query_one(TensorViewer)
        rows = app.state.tensor_view.values.shape[0]
        assert rows == len(app.prompt) == 6
        lines = str(viewer.render()).splitlines()
        head = next(i for i, line in enumerate(lines) if line.endswith("‖row‖"))
        labels = [line.split()[0] for line in lines[head + 1 : head + 1 + rows]]
        assert labels == [str(r) for r in range(rows)]  # every row, then the column norms
        assert lines[head + 1 + rows].lstrip().startswith("‖·‖")
        assert viewer.region.bottom <= app.query_one("#code-inputs").region.y <= 23


async def test_the_train_tabs_health_advice_says_how_in_the_app() -> None:
    """The tab has no --lr: its flag says the lr it steps with and where to try another."""
    app = tiny_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await press(pilot, "6", "h")
        view = app.query_one(TrainPanel).view
        assert view is not None and view.health is not None
        engine = [f for f in view.health.flags if f.startswith("update ratio")]
        assert engine and engine[0].endswith("--lr)")  # the CLI's words
        shown = str(app.query_one("#train-health", Static).render())
        assert "lower --lr" not in shown and "raise --lr" not in shown
        assert f"the learning rate: this tab steps adamw at lr {view.options.lr:g}" in shown


def test_docs_app_md_names_every_tab_and_its_key() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "app.md").read_text()
    first = " ".join(text.split("\n\n", 2)[1].split())  # the paragraph that lists the tabs
    assert f"({', '.join(tab.label for tab in TABS)})" in first
    assert f"| `1`–`{len(TABS)}` | tabs;" in text
    keys = {tab.key for tab in TABS}
    assert keys == {str(i) for i in range(1, len(TABS) + 1)}


async def test_the_diff_tab_says_the_prompts_differ() -> None:
    app = tiny_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await press(pilot, "8")
        panel = app.query_one(ComparePanel)
        panel.query_one("#compare-b-prompt", Input).value = "JULIET"  # A's is ROMEO:
        await pilot.click("#compare-diff")
        await settle(pilot)
        head = str(panel.query_one("#compare-head", Static).render())
        assert head.startswith("first divergence: the prompts differ at token 0 ('R' vs 'J')")
        assert "lost in code" not in head
