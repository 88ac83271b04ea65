"""The Cost tab (9) in the real app at 80x24: numerics of the prompt's pass fetched when the
tab opens, a dtype switched without recomputing, heads, and memory and FLOPs of a measured
training step, each table the engine's numbers."""

from __future__ import annotations

import pytest
from textual import events
from textual.widgets import Input, Static
from ui_helpers import press, settle, tiny_app

from gpt_tui.ui.widgets.cost import CostPanel
from gpt_tui.ui.widgets.tables import RowTable


async def test_cost_tab_shows_numerics_heads_memory_and_flops() -> None:
    app = tiny_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await press(pilot, "9")
        panel = app.query_one(CostPanel)
        table = panel.query_one("#cost-table", RowTable)

        def head() -> str:
            return str(panel.query_one("#cost-head", Static).render())

        view = app.state.measures
        assert view is not None and view.numerics is not None and panel.view is view
        assert view.numerics.dtype == "bfloat16"
        assert table.row_count == len(view.numerics.modules)
        assert "bf16: max 3.39e+38" in head() and "fp32 vs bf16" in head()
        w = view.numerics.what_if
        assert w is not None and f"fp32 vs bf16: {w.message}" in head()  # the CLI's sentence

        await pilot.click("#cost-dtype-float16")
        await settle(pilot)
        assert panel.dtype == "float16" and app.state.measures is view  # nothing recomputed
        assert "fp16: max 6.55e+04" in head()
        assert "press Numerics to check this dtype" in head()

        await pilot.click("#cost-view-numerics")  # runs the fp32 check in the shown dtype
        await settle(pilot)
        numerics = app.state.measures.numerics
        assert numerics.dtype == "float16" and "fp32 vs fp16" in head()
        assert "press Numerics" not in head()

        await pilot.click("#cost-view-heads")
        await settle(pilot)
        assert app.state.measures.numerics is numerics
        assert table.row_count == len(numerics.heads) == 4
        assert "largest pre-softmax logit" in head()

        panel.query_one("#cost-block", Input).value = "8"
        await pilot.click("#cost-measure")
        await settle(pilot)
        memory = app.state.measures.memory
        assert memory is not None and (memory.batch, memory.block) == (1, 8)
        assert panel.shown == "memory" and table.row_count == len(memory.modules)
        assert "forecast peak" in head()
        first = table.get_row_at(0)
        top = max(memory.modules, key=lambda m: m.total)
        assert first[0] == (top.name or "(model)")

        await pilot.click("#cost-view-flops")
        await settle(pilot)
        cost = app.state.measures.cost
        assert cost is not None and table.row_count == len(cost.modules)
        assert "MFU unknown" in head() and "nanoGPT estimate_mfu formula" in head()
        assert cost.formula is not None and cost.formula.parts  # the CLI's rows, each
        for part in cost.formula.parts:
            assert f"{part.label} {part.per_token:+,.0f}/token" in head()

        panel.query_one("#cost-block", Input).value = "x"
        await pilot.click("#cost-measure")
        await settle(pilot)
        assert "Measure needs a batch and a block" in head()


def test_cost_tab_numerics_80x24(snap_compare) -> None:
    async def run_before(pilot) -> None:
        await settle(pilot)
        await press(pilot, "9")
        await pilot.click("#cost-dtype-float8_e4m3fn")
        await settle(pilot)

    assert snap_compare(tiny_app(), terminal_size=(80, 24), run_before=run_before)


async def test_cost_tab_says_why_a_block_longer_than_the_context_fails() -> None:
    app = tiny_app()  # block_size 16
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await press(pilot, "9")
        panel = app.query_one(CostPanel)
        head = lambda: str(panel.query_one("#cost-head", Static).render())  # noqa: E731
        panel.query_one("#cost-block", Input).value = "10002"
        for view in ("flops", "memory"):
            await pilot.click(f"#cost-view-{view}")
            await pilot.click("#cost-measure")
            await settle(pilot)
            assert head() == "--block 10002 is longer than the model's context (16)"
            assert app._intents.pending == 0

        panel.query_one("#cost-block", Input).value = "8"  # the pane still measures
        await pilot.click("#cost-measure")
        await settle(pilot)
        assert app.state.measures.memory is not None and "forecast peak" in head()


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_numerics_values_sit_under_their_headers(size: tuple[int, int]) -> None:
    app = tiny_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await press(pilot, "9")
        await pilot.click("#cost-dtype-float8_e4m3fn")
        await settle(pilot)
        table = app.query_one(CostPanel).query_one("#cost-table", RowTable)
        header = table.render_line(0).text
        for y in range(1, 4):
            line = table.render_line(y).text
            for name in ("overflow", "flush+subnormal"):
                start = header.index(name)
                under = line[start : start + len(name)].strip()
                assert under[:1].isdigit(), (name, line)  # the value, not a bar or blank


def on_screen(app) -> str:
    """The screen as painted: what the terminal shows."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_a_dtype_switch_never_leaves_the_numerics_table_squashed(
    size: tuple[int, int],
) -> None:
    """The app may paint between the table's refill and its next idle: that paint must
    already give each column its width, since nothing repaints the table after (its size
    did not change). Before, the columns stayed as narrow as their labels ("transf")."""
    app = tiny_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await press(pilot, "9")
        panel = app.query_one(CostPanel)
        for dtype in ("float8_e4m3fn", "float16", "bfloat16"):
            panel.dtype = dtype  # as its button does: the table is refilled at once
            on_screen(app)  # a paint before the table idles
            await settle(pilot)
            lines = on_screen(app).splitlines()
            header = next(line for line in lines if "absmax" in line)
            assert header.index("absmax") > len(" transformer.h.0.attn.c_proj"), header
            assert any(" transformer.h.0.attn.c_proj " in line for line in lines), dtype


async def test_a_click_in_the_tabs_beside_the_tree_presses_what_was_under_the_pointer() -> None:
    """At 80 columns the tree has the room until a tab gets the focus: a mouse press on a
    button there moves the tab to the full width, and the button with it. The layout
    waits for the release, so the click still lands on the button it started on (it
    used to be lost: the first click on a dtype only moved the layout)."""
    app = tiny_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await press(pilot, "9", "escape")  # the tree has the focus and the room
        button = app.query_one("#cost-dtype-float16")
        x, y = button.region.center
        assert x > app.query_one("#left").region.right  # beside the tree
        for kind in (events.MouseDown, events.MouseUp):  # as the terminal sends them
            app.post_message(kind(None, x, y, 0, 0, 1, False, False, False, x, y))
            await pilot.pause()
        await settle(pilot)
        assert app.query_one(CostPanel).dtype == "float16"
        assert app.query_one("#body").has_class("-tabs-focused")  # then the tab gets the room
