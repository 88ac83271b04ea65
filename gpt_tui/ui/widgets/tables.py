"""A row-cursor DataTable for the panes' tables: Home/End go to the first/last row."""

from __future__ import annotations

from typing import ClassVar

from textual import events
from textual.binding import Binding, BindingType
from textual.widgets import DataTable


class RowTable(DataTable):
    """`DataTable` with a row cursor, where Home/End move to the first/last row (the
    stock table scrolls to the far left/right, which in a table of rows is a surprise).
    The cursor row stays in view when the table is resized."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("home", "scroll_top", "First row", show=False),
        Binding("end", "scroll_bottom", "Last row", show=False),
    ]

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("cursor_type", "row")
        super().__init__(**kwargs)

    def on_resize(self, event: events.Resize) -> None:
        # A layout change (the tree rail folding away, a scrollbar appearing) or a table
        # filled while its tab was hidden would otherwise leave the cursor row out of view.
        if self.row_count:
            self.move_cursor(row=self.cursor_row, animate=False)
