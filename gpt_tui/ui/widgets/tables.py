"""A row-cursor DataTable for the panes' tables: Home/End go to the first/last row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from rich.text import Text
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
        # The data behind each row (full names, numbers), which E exports in place of the
        # cells' display text; None when the pane gives none.
        self.records: list[dict[str, Any]] | None = None

    def clear(self, columns: bool = False) -> RowTable:
        self.records = None
        return super().clear(columns)

    def fill(
        self,
        columns: Sequence[str],
        rows: Sequence[Sequence[object]],
        records: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        """Replace the columns and rows, each column as wide as its widest cell. The stock
        table measures new rows when it next idles, and when its size then comes out the
        same nothing repaints it: a screen painted in between kept every column as narrow
        as its label. `records`: the data behind the rows, one per row, for export."""
        self.clear(columns=True)
        for i, label in enumerate(columns):
            self.add_column(label, width=max([_width(label), *(_width(r[i]) for r in rows)]))
        self.add_rows(rows)
        self.records = list(records) if records is not None else None

    def on_resize(self, event: events.Resize) -> None:
        # A layout change (the tree rail folding away, a scrollbar appearing) or a table
        # filled while its tab was hidden would otherwise leave the cursor row out of view.
        if self.row_count:
            self.move_cursor(row=self.cursor_row, animate=False)


def _width(cell: object) -> int:
    """Cells as the table shows them: a str is markup, a float has two decimals."""
    if isinstance(cell, str):
        cell = Text.from_markup(cell)
    elif isinstance(cell, float):
        cell = Text(f"{cell:.2f}")
    return cell.cell_len if isinstance(cell, Text) else len(str(cell))
