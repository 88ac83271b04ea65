"""Numbers first: at 80 and 120 columns, a long repr in Variables is cut to the room the
number columns leave, and the Params total row's non-embedding count is not clipped."""

from __future__ import annotations

import pytest
from textual.widgets import Input
from ui_helpers import press, settle, tiny_app

from gpt_tui.ui.widgets.code_pane import VariablesTable
from gpt_tui.ui.widgets.param_table import ParamTable


def used_width(table) -> int:
    return sum(column.get_render_width(table) for column in table.columns.values())


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_long_reprs_leave_the_number_columns_on_screen(size: tuple[int, int]) -> None:
    app = tiny_app("nanochat")
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await press(pilot, "7")
        box = app.query_one("#code-break", Input)
        box.focus()
        box.value = "Block.forward"  # cos_sin, a tuple of two tensors, is a local there
        await press(pilot, "enter", "escape", "C")
        frame = app.state.frame
        assert frame is not None and frame.function == "Block.forward"
        long = next(v for v in frame.locals if v.name == "cos_sin")
        table = app.query_one(VariablesTable)
        table.focus()  # the tab takes the width, as when the user moves there
        await settle(pilot)
        assert used_width(table) <= table.scrollable_content_region.width
        row = next(
            table.get_row_at(i)
            for i in range(table.row_count)
            if table.get_row_at(i)[0] == "cos_sin"
        )
        assert row[1] == long.repr or long.repr.startswith(row[1].removesuffix("…"))
        x = next(
            table.get_row_at(i) for i in range(table.row_count) if table.get_row_at(i)[0] == "x"
        )
        assert all(cell for cell in x[:7])  # name, shape, dtype, mean, std, min, max


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_the_non_embedding_count_is_not_clipped(size: tuple[int, int]) -> None:
    app = tiny_app("nanogpt")
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await press(pilot, "2")
        table = app.query_one(ParamTable)
        total = app.info.summary.non_embedding_params
        last = [str(cell) for cell in table.get_row_at(table.row_count - 1)]
        assert last[0] == "non-embedding" and last[1] == f"{total:,}"
        params_end = sum(c.get_render_width(table) for c in list(table.columns.values())[:2])
        assert params_end <= table.scrollable_content_region.width
