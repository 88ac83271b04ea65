"""Pilot tests of single panes, each mounted alone in a small app with hand-made data."""

from __future__ import annotations

import math
import string
from dataclasses import replace

import numpy as np
import pytest
from textual.app import App, ComposeResult
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Static

from gpt_tui import formatting as fmt
from gpt_tui.engine.analysis.summary import summarize
from gpt_tui.engine.core.debug_state import (
    AttentionView,
    GenerationSettings,
    GenerationView,
    ModelInfo,
    RunResult,
)
from gpt_tui.engine.core.trace import AttentionPattern, ProbeRecord, TensorStats
from gpt_tui.engine.generation.sampling import GenerationSession
from gpt_tui.io.tokenizers import CharTokenizer
from gpt_tui.models import build_model, make_config
from gpt_tui.ui.widgets.attention_heatmap import AttentionHeatmap, AttentionPanel
from gpt_tui.ui.widgets.generation import GeneratePanel
from gpt_tui.ui.widgets.layer_stats import StatsPanel, row_name
from gpt_tui.ui.widgets.module_tree import ModuleTree
from gpt_tui.ui.widgets.status import StatusBar
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
        await pilot.press("down", "down")  # the keys, then the same action row by row
        assert heatmap.cursor == (2, 0)
        for _ in range(76):
            heatmap.action_move(1, 0)
            assert cursor_line_visible(heatmap), heatmap.cursor
        for _ in range(78):
            heatmap.action_move(0, 1)
        await pilot.pause()
        assert heatmap.cursor == (78, 78)
        assert cursor_line_visible(heatmap)
        for _ in range(78):
            heatmap.action_move(-1, 0)
            assert cursor_line_visible(heatmap), heatmap.cursor


def stats(value: float) -> TensorStats:
    return TensorStats(value, 1.0, 1.0, -1.0, 1.0, 1.0, 0.0, 0, 0, 768)


def record(name: str, order: int, phase: str = "out", same_as: str | None = None) -> ProbeRecord:
    kind = "resid" if "resid" in name else "block"
    return ProbeRecord(
        name, kind, phase, name.count("."), (1, 6, 128), "float32", "cpu",
        stats(order / 10), order, same_as,
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


@pytest.mark.parametrize("width", [29, 26, 44, 60])
async def test_tree_labels_never_cut_parameter_counts(width: int) -> None:
    # GPT-2 124M on `meta`: real counts, no memory used.
    model = build_model(make_config("gpt2"), "meta")
    summary = summarize(model)
    tree = ModuleTree()
    async with Host(tree).run_test(size=(width, 60)) as pilot:
        tree.summary = summary
        tree.shapes = {path: (1, 256, 384) for path in summary.modules}
        tree.name_filter = "h.0."  # every match and its ancestors expanded
        await pilot.pause()
        for path in ("transformer.h.0.mlp.c_fc", "transformer.h.0.attn", "transformer.h"):
            line = tree._path_nodes[path].line
            assert line >= 0
            drawn = "".join(s.text for s in tree.render_line(line - tree.scroll_offset.y))
            count = fmt.count(summary.modules[path].params)
            assert drawn.rstrip().endswith(count), (path, drawn)


async def test_attention_title_gives_layer_and_head_ranges() -> None:
    panel = AttentionPanel(n_layer=4)
    async with Host(panel).run_test(size=(80, 18)) as pilot:
        panel.view = attention_view(6, n_head=4, layer=3)
        await pilot.pause()
        title = str(panel.query_one("#attn-title", Static).render())
        assert title.startswith("layer 3 (0–3)  head 0 (0–3)")


def status_lines(bar: StatusBar) -> list[str]:
    return bar.render().plain.split("\n")


async def test_status_indicators_always_fit_at_80_columns() -> None:
    bar = StatusBar()
    async with Host(bar).run_test(size=(80, 4)) as pilot:
        bar.stepper = "paused at transformer.h.11.attn.c_attn (in) #123 · breakpoint"
        bar.prompt = "ROMEO: " + "x" * 80
        bar.memory = {"rss": 317 * 2**20}
        await pilot.pause()
        assert "●" not in status_lines(bar)[1]  # nothing switched on, nothing shown
        bar.breakpoints, bar.watch, bar.leaves, bar.ablations, bar.busy = 2, True, True, 1, True
        await pilot.pause()
        line = status_lines(bar)[1]
        assert len(line) <= 80
        assert line.rstrip().endswith("●2 ⚑NaN ◆leaf ⊘1 ⧗")
        assert "paused at transformer.h.11" in line


async def test_status_model_line_drops_the_source_before_the_memory() -> None:
    bar = StatusBar()
    model = build_model(make_config("gpt2"), "meta")
    info = ModelInfo(
        "gpt2-medium", "nanogpt", "/home/someone/checkpoints/ckpt.pt", "cpu", "float32",
        summarize(model, "nanogpt"), 12, 12, 12, 768, 1024, 50304, (), "ROMEO:",
    )  # fmt: skip
    async with Host(bar).run_test(size=(80, 4)) as pilot:
        bar.info, bar.memory = info, {"rss": 317 * 2**20}
        await pilot.pause()
        line = status_lines(bar)[0]
        assert len(line) <= 80
        assert "gpt2-medium" in line and "RSS 317.0 MiB" in line and "124.4M params" in line
        assert "ckpt.pt" not in line
        bar.styles.width = 140
        await pilot.pause()
        assert "ckpt.pt" in status_lines(bar)[0]


def boundary_records() -> tuple[ProbeRecord, ...]:
    """A stepped pass at a block boundary: h.0's output is four records of one tensor."""
    h0 = "transformer.h.0"
    return (
        record("transformer.h.0.mlp", 0),
        record(h0, 1),
        record(f"{h0}.resid_post", 2, same_as=h0),
        record("transformer.h.1", 3, "in", same_as=h0),
        record("transformer.h.1.resid_pre", 4, same_as=h0),
        record("transformer.h.1.attn", 5),
        record("lm_head", 6),
        record("logits", 7, same_as="lm_head"),
    )


def table_names(panel: StatsPanel) -> list[str]:
    table = panel.query_one(RowTable)
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


async def test_stats_shows_one_tensor_once_with_its_other_names() -> None:
    panel = StatsPanel()
    async with Host(panel).run_test(size=(100, 20)) as pilot:
        panel.run = RunResult("p", ("a",), boundary_records())
        await pilot.pause()
        assert table_names(panel) == [
            "h.0.mlp",
            "h.0=resid_post=h.1.resid_pre",
            "h.1 (in)",  # an input stays a row (the stepper stops there)
            "h.1.attn",
            "lm_head=logits",
        ]
        # Paused at an alias: its tensor's row is the paused one.
        panel.run = RunResult("p", ("a",), boundary_records(), paused=7)
        await pilot.pause()
        table = panel.query_one(RowTable)
        assert table.cursor_row == 4
        assert table_names(panel)[4] == "→ lm_head=logits"


@pytest.mark.parametrize("width", [120, 60])
async def test_generate_pane_shows_kv_shapes_and_memory_per_layer(width: int) -> None:
    """At 60 columns the line breaks between its ` · ` parts, never inside one (it broke
    `512.0 KiB, 0` / `B used`)."""
    chars = "\n !$&',-.3:;?" + string.ascii_uppercase + string.ascii_lowercase
    model = build_model(make_config("tiny"), "cpu")  # 2 layers, 32 wide
    session = GenerationSession(model, CharTokenizer(chars), [30, 27], seed=0)
    session.run(3)
    layers = session.cache_layers()
    cfg = model.config
    kv_shape = (1, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)
    assert layers == ((kv_shape, kv_shape, 2 * 4 * math.prod(kv_shape)),) * cfg.n_layer
    candidates, kept = session.peek()
    view = GenerationView(
        "RO", ("a", "b", "c"), tuple(session.steps), session.cache_fill, layers,
        GenerationSettings(), candidates, kept,
    )  # fmt: skip
    panel = GeneratePanel()
    async with Host(panel).run_test(size=(width, 30)) as pilot:
        panel.view = view
        await pilot.pause()
        kv_widget = panel.query_one("#gen-kv", Static)
        shown = [
            "".join(seg.text for seg in strip).rstrip()
            for strip in kv_widget.render_lines(kv_widget.outer_size.region)
        ]
        kv = " · ".join(shown)  # the line as one, wherever it broke
        shape = fmt.short_shape(kv_shape)
        each = fmt.nbytes(layers[0][2])
        used, size = session.cache_fill
        assert f"{used}/{size} · L0–{cfg.n_layer - 1} K {shape} V {shape} {each} each" in kv
        total = fmt.nbytes(layers[0][2] * cfg.n_layer)
        assert f" · {total}, " in kv and kv.endswith(" used")
        assert len(shown) == (1 if width == 120 else 2)
        if width == 60:
            assert shown[1].startswith(f"{total}, ") and shown[1].endswith(" used")


async def test_attention_legend_names_the_visible_rows_and_the_scale() -> None:
    panel = AttentionPanel(n_layer=4)
    async with Host(panel).run_test(size=(80, 18)) as pilot:
        panel.view = attention_view(79)
        await pilot.pause()
        heatmap = panel.query_one(AttentionHeatmap)
        heatmap.focus()
        for _ in range(40):
            await pilot.press("down")
        await pilot.pause()
        legend = str(panel.query_one("#attn-legend", Static).render())
        (r0, r1), (c0, c1) = heatmap.visible()
        assert legend.startswith(f"rows {r0}–{r1} of 79 · keys {c0}–{c1} of 79")
        assert "p 0 " in legend and " .25 " in legend and legend.rstrip().endswith(" 1")
        assert r0 > 0 and r0 <= 40 <= r1
        # The first and last matrix lines on screen are labelled with those rows.
        first = "".join(s.text for s in heatmap.render_line(1))
        lines = heatmap.scrollable_content_region.height - 1
        last = "".join(s.text for s in heatmap.render_line(lines))
        assert first.split()[0] == str(r0) and last.split()[0] in (str(r1), str(r1 - 1))
        await pilot.press("m")  # the mask's colours in mask mode
        legend = str(panel.query_one("#attn-legend", Static).render())
        assert "may attend" in legend and "masked" in legend and "p 0" not in legend


async def test_stats_token_strip_gives_position_token_and_id() -> None:
    panel = StatsPanel()
    async with Host(panel).run_test(size=(100, 20)) as pilot:
        records = boundary_records()
        panel.run = RunResult("RO:", ("R", "O", "␣"), records, token_ids=(30, 27, 1))
        await pilot.pause()
        strip = str(panel.query_one("#stats-tokens", Static).render())
        assert strip.startswith("T=3 (pos token id) │ 0 R 30  1 O 27  2 ␣ 1")
        panel.run = RunResult("RO:", ("R", "O", "␣"), records)  # ids not known
        await pilot.pause()
        strip = str(panel.query_one("#stats-tokens", Static).render())
        assert strip.startswith("T=3 (pos token) │ 0 R  1 O  2 ␣")


def column_labels(panel: StatsPanel) -> list[str]:
    return [str(c.label) for c in panel.query_one(RowTable).ordered_columns]


async def test_stats_diff_mode_is_marked_and_refuses_runs_of_other_lengths() -> None:
    panel = StatsPanel()
    records = boundary_records()
    async with Host(panel).run_test(size=(100, 20)) as pilot:
        note = panel.query_one("#stats-delta", Static)
        panel.run = RunResult("RO:", ("R", "O", ":"), records)
        await pilot.pause()
        assert not note.display and "mean" in column_labels(panel)
        panel.show_delta = True
        await pilot.pause()
        assert note.display and "no previous run" in str(note.render())
        # Same length: Δ headers, and each cell is the change.
        shifted = tuple(replace(r, stats=stats(r.stats.mean - 1.0)) for r in records)
        panel.previous = RunResult("RO!", ("R", "O", "!"), shifted)
        panel.run = RunResult("RO:", ("R", "O", ":"), records)
        await pilot.pause()
        labels = column_labels(panel)
        assert labels[:2] == ["name", "shape"] and "Δmean" in labels and "Δrms" in labels
        assert "Δ against the previous run ('RO!')" in str(note.render())
        mean = labels.index("Δmean")
        assert str(panel.query_one(RowTable).get_row_at(0)[mean]).strip() == "+1"
        # Another length: plain values and the reason.
        panel.previous = RunResult("ROMEO", tuple("ROMEO"), shifted)
        panel.run = RunResult("RO:", ("R", "O", ":"), records)
        await pilot.pause()
        assert "mean" in column_labels(panel) and "Δmean" not in column_labels(panel)
        assert "Δ not compared: the previous run had T=5 tokens, this one T=3" in str(note.render())
        panel.show_delta = False
        await pilot.pause()
        assert not note.display


async def test_tree_filter_selects_the_first_match() -> None:
    model = build_model(make_config("tiny"), "meta")
    tree = ModuleTree()
    async with Host(tree).run_test(size=(60, 40)) as pilot:
        tree.summary = summarize(model)
        tree.name_filter = "mlp"
        assert tree.select_first_match() == "transformer.h.0.mlp"
        await pilot.pause()
        assert tree.selected_path == "transformer.h.0.mlp"
        tree.name_filter = "nothing like it"
        assert tree.select_first_match() is None


def test_alias_names_are_short_for_children_and_siblings() -> None:
    proj = record("transformer.h.0.mlp.c_proj", 0)
    aliases = ("transformer.h.0.mlp.dropout", "transformer.h.0.mlp")
    assert row_name(proj, aliases=aliases) == "h.0.mlp.c_proj=dropout=h.0.mlp"
    block = record("transformer.h.0", 1)
    aliases = ("transformer.h.0.resid_post", "transformer.h.1.resid_pre")
    assert row_name(block, paused=True, aliases=aliases) == "→ h.0=resid_post=h.1.resid_pre"


def test_the_prompt_escapes_round_trip_and_show_control_characters() -> None:
    for prompt in ("ROMEO:\nJULIET:\t", "8+\x0145", "a\\x01b", "\u200b\U000e0001", "ok ünï"):
        assert fmt.unescape_prompt(fmt.escape_prompt(prompt)) == prompt
    assert fmt.escape_prompt("8+\x0145") == "8+\\x0145"
    assert fmt.escape_prompt("ünï 日本") == "ünï 日本"  # printable: as it is
    assert fmt.unescape_prompt("C:\\xfiles \\x4") == "C:\\xfiles \\x4"  # not an escape: kept


async def test_the_status_line_and_the_prompt_box_write_a_prompt_alike() -> None:
    """A control character reads `\\x01` in both (the status used repr, the box showed
    it raw, so they disagreed)."""
    from textual.widgets import Input

    from gpt_tui.ui.widgets.prompt_bar import PromptBar

    class Both(App[None]):
        def compose(self) -> ComposeResult:
            yield StatusBar()
            yield PromptBar()

    model = build_model(make_config("tiny"), "meta")
    info = ModelInfo(
        "tiny", "nanogpt", "config tiny", "cpu", "float32", summarize(model, "nanogpt"),
        2, 2, 2, 32, 16, 65, (), "ROMEO:",
    )  # fmt: skip
    app = Both()
    async with app.run_test(size=(80, 6)) as pilot:
        bar, prompt = app.query_one(StatusBar), app.query_one(PromptBar)
        bar.info = info
        bar.prompt = prompt.prompt = "8+\x0145\n"
        await pilot.pause()
        assert "prompt '8+\\x0145\\n'" in status_lines(bar)[1]
        assert app.query_one("#prompt", Input).value == "8+\\x0145\\n"
