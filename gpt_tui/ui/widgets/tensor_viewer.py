"""The tensor viewer: a 2-D slice of a tensor at a line pause, as colour-scaled cells.

The engine returns the values (`TensorView`); this widget only draws them. Rows are the
tensor's second-to-last dimension, columns its last; `[` `]` and `{` `}` change the
index of the two dimensions before them (head and batch for `q`), which asks the engine
for a new view; the arrows scroll the cells held.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
from rich.color import Color
from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.css.scalar import Unit
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

from ...engine.core.tensors import TensorView
from ..messages import IntentRequested

CELL = 7  # characters per value, its space included
CHROME_LINES = 4  # title, histogram, column numbers and column norms around the rows
BARS = " ▁▂▃▄▅▆▇█"


def number(x: float) -> str:
    """A value in at most 6 characters: `0.123`, `-1.5`, `1.2e+04`, `nan`."""
    if not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if x == 0:
        return "0"
    if abs(x) < 1e-3 or abs(x) >= 1e4:
        return f"{x:.0e}"
    return f"{x:.3g}" if abs(x) >= 1 else f"{x:.3f}".replace("0.", ".", 1)


def cell_style(x: float, scale: float) -> Style:
    """Blue for negative, red for positive, stronger with |x| / scale; NaN/Inf yellow."""
    if not math.isfinite(x):
        return Style(color="black", bgcolor="yellow")
    t = min(abs(x) / scale, 1.0) if scale > 0 else 0.0
    base = (40, 90, 200) if x < 0 else (200, 60, 50)
    rgb = tuple(int(30 + (c - 30) * t) for c in base)
    return Style(color="white", bgcolor=Color.from_rgb(*rgb))


def histogram_line(counts: np.ndarray) -> str:
    peak = int(counts.max()) if counts.size else 0
    if peak == 0:
        return ""
    return "".join(BARS[math.ceil(int(c) / peak * (len(BARS) - 1))] for c in counts)


class TensorViewer(Widget, can_focus=True):
    """Draws `view`; asks for `view_tensor` when the leading indices change."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left_square_bracket", "index(-1, -1)", "Prev index", tooltip="previous head"),
        Binding("right_square_bracket", "index(-1, 1)", "Next index", tooltip="next head"),
        Binding(
            "left_curly_bracket",
            "index(-2, -1)",
            "Prev outer",
            show=False,
            tooltip="previous index of the dimension before (the batch)",
        ),
        Binding(
            "right_curly_bracket",
            "index(-2, 1)",
            "Next outer",
            show=False,
            tooltip="next index of the dimension before (the batch)",
        ),
        Binding("up", "scroll_cells(-1, 0)", "Up", show=False, tooltip="scroll the rows"),
        Binding("down", "scroll_cells(1, 0)", "Down", show=False, tooltip="scroll the rows"),
        Binding("left", "scroll_cells(0, -1)", "Left", show=False, tooltip="scroll the columns"),
        Binding("right", "scroll_cells(0, 1)", "Right", show=False, tooltip="scroll the columns"),
        Binding("g", "goto", "Go to", tooltip="scroll to an index: g COL or g ROW,COL"),
    ]

    class GotoAsked(Message):
        """`g`: the pane opens its box for the index to scroll to."""

    view: reactive[TensorView | None] = reactive(None, layout=True)  # its rows set its height
    expr: reactive[str] = reactive("")
    top = reactive(0)  # the first row and column drawn, within the values held
    left = reactive(0)

    def watch_view(self, old: TensorView | None, new: TensorView | None) -> None:
        if old is None or new is None or old.shape != new.shape:
            self.top = self.left = 0
            # Probabilities (no negative value) open at the largest, not at a corner of zeros.
            if new is not None and new.values.size and np.nanmin(new.values) >= 0:
                finite = np.where(np.isfinite(new.values), new.values, -1.0)
                row, col = np.unravel_index(int(np.argmax(finite)), finite.shape)
                self.goto(int(row) + new.row_start, int(col) + new.col_start)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        """The lines the rows held need, within what the pane's other parts leave: a
        flexible (fr) one keeps its min-height, the others the height they have."""
        needed = (self.view.values.shape[0] if self.view else 1) + CHROME_LINES
        if self.parent is None:
            return needed
        taken = 0
        for other in self.parent.children:
            if other is self or not other.display:
                continue
            height, least = other.styles.height, other.styles.min_height
            if height is not None and height.unit == Unit.FRACTION:
                taken += int(least.value) if least is not None else 1
            else:
                taken += other.outer_size.height
        return max(1, min(needed, container.height - taken))

    def _grid(self) -> tuple[int, int]:
        """Rows and columns of cells that fit."""
        view = self.view
        label_w = len(str(view.slice_shape[0] + view.row_start)) + 1 if view else 2
        width = max(self.size.width, 40)
        rows = max(1, self.size.height - CHROME_LINES + (not self._histogram_fits()))
        return rows, max(1, (width - label_w - CELL - 1) // CELL)

    def _histogram_fits(self) -> bool:
        """Whether the histogram line has room: short of it, the rows come first."""
        held = self.view.values.shape[0] if self.view else 0
        return self.size.height >= held + CHROME_LINES

    def goto(self, row: int, col: int) -> str | None:
        """Scroll so that (row, col) of the slice is in view, near the middle; what is
        wrong with the index, if anything."""
        view = self.view
        if view is None:
            return "no tensor in the viewer"
        rows, cols = view.slice_shape
        if not (0 <= row < rows and 0 <= col < cols):
            return f"index ({row}, {col}) is outside the slice's {rows}×{cols}"
        n_rows, n_cols = view.values.shape
        r, c = row - view.row_start, col - view.col_start
        if not (0 <= r < n_rows and 0 <= c < n_cols):
            return f"({row}, {col}) is beyond the {n_rows}×{n_cols} values held"
        height, width = self._grid()
        self.top = min(max(r - height // 2, 0), max(n_rows - height, 0))
        self.left = min(max(c - width // 2, 0), max(n_cols - width, 0))
        return None

    def action_goto(self) -> None:
        self.post_message(self.GotoAsked())

    def action_index(self, dim: int, delta: int) -> None:
        view = self.view
        if view is None or len(view.fixed) < -dim:
            return
        fixed = list(view.fixed)
        size = view.shape[len(view.fixed) + dim]
        fixed[dim] = (fixed[dim] + delta) % size
        self.post_message(IntentRequested("tensor_view", "view_tensor", (self.expr, tuple(fixed))))

    def action_scroll_cells(self, rows: int, cols: int) -> None:
        if self.view is None:
            return
        n_rows, n_cols = self.view.values.shape
        self.top = min(max(self.top + rows, 0), max(n_rows - 1, 0))
        self.left = min(max(self.left + cols, 0), max(n_cols - 1, 0))

    def on_focus(self) -> None:
        self.refresh()  # the hint of where its keys are

    def on_blur(self) -> None:
        self.refresh()

    def render(self) -> Text:
        view = self.view
        if view is None:
            return Text("Enter on a tensor in Variables opens it here.", style="dim")
        width = max(self.size.width, 40)
        lead = ", ".join(map(str, view.fixed))
        text = Text(no_wrap=True, overflow="ellipsis")
        title = f"{self.expr}[{lead}{', ' if lead else ''}:, :]"
        text.append(title, style="bold")
        text.append(f"  {view.summary}"[: max(width - len(title), 0)] + "\n", style="dim")
        if self._histogram_fits():
            lo, hi = view.hist_edges[0], view.hist_edges[-1]
            bars = histogram_line(view.hist_counts)
            text.append(f"hist {number(float(lo))} ", style="dim")
            text.append(bars, style="green")
            rows, columns = view.slice_shape
            # Its keys work where the focus is: from the expression box, say how to get here
            keys = "g go to · [ ] index · arrows" if self.has_focus else "shift+Tab: [ ] index"
            tail = f" {number(float(hi))}  {rows}×{columns}  {keys}"
            used = len(f"hist {number(float(lo))} ") + len(bars)
            text.append(tail[: max(width - used, 0)] + "\n", style="dim")
        label_w = len(str(view.slice_shape[0] + view.row_start)) + 1
        n_rows, n_cols = self._grid()
        values = view.values[self.top : self.top + n_rows, self.left : self.left + n_cols]
        finite = view.values[np.isfinite(view.values)]
        scale = float(np.abs(finite).max()) if finite.size else 0.0
        c0 = view.col_start + self.left
        text.append(" " * label_w)
        for j in range(values.shape[1]):
            text.append(f"{c0 + j:>{CELL - 1}} ", style="dim")
        text.append(f"{'‖row‖':>{CELL}}\n", style="dim")
        for i, row in enumerate(values):
            r = view.row_start + self.top + i
            text.append(f"{r:>{label_w - 1}} ", style="dim")
            for x in row:
                text.append(f"{number(float(x)):>{CELL - 1}}", style=cell_style(float(x), scale))
                text.append(" ")
            norm = float(view.row_norms[r])
            text.append(f"{number(norm):>{CELL}}\n", style=_norm_style(norm))
        cols = view.col_norms[c0 : c0 + values.shape[1]]
        text.append(f"{'‖·‖':>{label_w - 1}} ", style="dim")
        for x in cols:
            text.append(f"{number(float(x)):>{CELL - 1}} ", style=_norm_style(float(x)))
        return text


def _norm_style(norm: float) -> str:
    """A norm is NaN or inf when its row or column holds one: red, as those values are."""
    return "cyan" if math.isfinite(norm) else "bold red"
