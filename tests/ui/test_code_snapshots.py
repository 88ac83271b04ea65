"""Snapshot tests of the Code tab paused at a line (looked at before they were recorded)."""

from __future__ import annotations

from test_code_pane import kernel_line, submit
from textual.widgets import DataTable
from ui_helpers import press, settle, tiny_app


def paused_at_the_kernel(*then: str, viewer: bool = False):
    async def run_before(pilot) -> None:
        await settle(pilot)
        await press(pilot, "7")
        await submit(pilot, "#code-break", f"nanogpt.py:{kernel_line()}")
        await press(pilot, "escape", "C")
        if viewer:
            await submit(pilot, "#code-eval", "q.shape")
            table = pilot.app.query_one("#code-vars", DataTable)
            table.focus()
            names = [table.get_row_at(i)[0] for i in range(table.row_count)]
            table.move_cursor(row=names.index("q"))
            await press(pilot, "enter")
        await press(pilot, *then)

    return run_before


def test_code_tab_80x24(snap_compare) -> None:
    assert snap_compare(tiny_app(), terminal_size=(80, 24), run_before=paused_at_the_kernel())


def test_code_tab_viewer_120x40(snap_compare) -> None:
    run_before = paused_at_the_kernel(viewer=True)
    assert snap_compare(tiny_app(), terminal_size=(120, 40), run_before=run_before)
