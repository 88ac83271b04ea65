"""Pilot tests of single panes, each mounted alone in a small app with hand-made data."""

from __future__ import annotations

import numpy as np
from textual.app import App, ComposeResult
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Static

from gpt_tui.engine.trace import AttentionPattern, ProbeRecord, TensorStats
from gpt_tui.ui.driver import AttentionView, RunResult
from gpt_tui.ui.widgets.attention_heatmap import AttentionHeatmap, AttentionPanel
from gpt_tui.ui.widgets.layer_stats import StatsPanel
from gpt_tui.ui.widgets.tables import RowTable


class Host(App[None]):
    """One widget filling a small screen."""

    def __init__(self, widget: Widget) -> None:
        super().__init__()
        self.widget = widget

    def compose(self) -> ComposeResult:
        yield self.widget


def attention_view(t: int, n_head: int = 2, layer: int = 0) -> AttentionView:
    rng = np.random.default_rng(0)
    weights = np.tril(rng.random((n_head, t, t), dtype=np.float32))
    weights /= weights.sum(-1, keepdims=True)
    mask = np.tril(np.ones((t, t), dtype=bool))
    pattern = AttentionPattern(
        layer, f"h.{layer}.attn.pattern", weights, n_head, True, None, 0.0, mask
    )
    tokens = tuple("abcdefghij"[i % 10] for i in range(t))
    return AttentionView("".join(tokens), tokens, pattern)


def cursor_line_visible(heatmap: AttentionHeatmap) -> bool:
    """Whether the cursor's query row is drawn inside the visible matrix lines."""
    q = heatmap.cursor[0]
    first, last = q * heatmap.zoom // 2, (q * heatmap.zoom + heatmap.zoom - 1) // 2
    lines = heatmap.scrollable_content_region.height - 1  # below the key axis
    top = heatmap.scroll_offset.y
    return top <= first and last < top + lines


async def test_heatmap_cursor_stays_on_screen_with_a_long_prompt() -> None:
    # 79 tokens at 80 columns: the matrix is wider than the pane, so a horizontal
    # scrollbar takes the bottom line (the cursor used to go 1-2 lines below the view).
    panel = AttentionPanel(n_layer=4)
    async with Host(panel).run_test(size=(80, 18)) as pilot:
        panel.view = attention_view(79)
        await pilot.pause()
        heatmap = panel.query_one(AttentionHeatmap)
        heatmap.focus()
        for _ in range(78):
            await pilot.press("down")
            assert cursor_line_visible(heatmap), heatmap.cursor
        for _ in range(78):
            await pilot.press("right")
        await pilot.pause()
        assert heatmap.cursor == (78, 78)
        assert cursor_line_visible(heatmap)
        for _ in range(78):
            await pilot.press("up")
            assert cursor_line_visible(heatmap), heatmap.cursor


def stats(value: float) -> TensorStats:
    return TensorStats(value, 1.0, 1.0, -1.0, 1.0, 1.0, 0.0, 0, 0, 768)


def record(name: str, order: int, phase: str = "out", same_as: str | None = None) -> ProbeRecord:
    kind = "resid" if "resid" in name else "block"
    return ProbeRecord(
        name, kind, phase, name.count("."), (1, 6, 128), "float32", "cpu",
        stats(order / 10), order,
    )  # fmt: skip


class Beside(App[None]):
    """A widget beside a rail whose width changes, as the tree's does when focus moves."""

    CSS = "#rail { width: 4; } #rail.-wide { width: 30; }"

    def __init__(self, widget: Widget) -> None:
        super().__init__()
        self.widget = widget

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Static("", id="rail")
            yield self.widget


def row_visible(table: RowTable, row: int) -> bool:
    top = table.scroll_offset.y
    lines = table.scrollable_content_region.height - 1  # below the header
    return top <= row < top + lines


async def test_stats_paused_row_stays_in_view_after_a_layout_change() -> None:
    panel = StatsPanel()
    records = tuple(record(f"h.{i // 4}.x{i % 4}", i) for i in range(40))
    async with Beside(panel).run_test(size=(80, 20)) as pilot:
        panel.run = RunResult("p", ("a",), records, paused=30)
        await pilot.pause()
        table = panel.query_one(RowTable)
        assert table.cursor_row == 30 and row_visible(table, 30)
        pilot.app.query_one("#rail").add_class("-wide")  # narrower: a scrollbar appears
        await pilot.pause()
        await pilot.pause()
        assert row_visible(table, 30)
        pilot.app.query_one("#rail").remove_class("-wide")
        await pilot.pause()
        await pilot.pause()
        assert row_visible(table, 30)
