"""The attention pane: a Line API heatmap of one layer and head, and all heads at a glance.

`AttentionHeatmap` is a `ScrollView` whose `render_line(y)` draws two query rows per
terminal line with the upper half block "▀" (foreground = upper row, background = lower
row). Line 0 is the key-token axis and the first columns the query-token axis; both stay
put while the matrix scrolls under them. Strips are cached per line and dropped when the
data, the mode or the cursor's lines change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Static

from ... import formatting as fmt
from ..messages import IntentRequested
from .attention_pictures import ALLOWED, MASKED, legend_text, overview_text, ramp, rgb, top_keys

if TYPE_CHECKING:
    from ...engine.core.debug_state import AttentionView

MODES = ("pattern", "mask", "overlay")
CURSOR = Style.parse("#00ffff")
LABEL = Style(dim=True)


class AttentionHeatmap(ScrollView, can_focus=True):
    """One head's (Tq, Tk) pattern; arrows move the cursor cell. Any matrix can be shown
    the same way, with its own row labels and colour scale (the patching sweep is)."""

    BINDINGS = [
        Binding("up", "move(-1, 0)", "Up", show=False),
        Binding("down", "move(1, 0)", "Down", show=False),
        Binding("left", "move(0, -1)", "Left", show=False),
        Binding("right", "move(0, 1)", "Right", show=False),
    ]

    @dataclass
    class CursorMoved(Message):
        row: int
        col: int

    class Scrolled(Message):
        """Other query rows or key columns came into view (see `visible`)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.weights: np.ndarray | None = None  # (Tq, Tk)
        self.mask: np.ndarray | None = None  # (Tq, Tk) bool
        self.tokens: tuple[str, ...] = ()
        self.mode = "pattern"
        self.cursor = (0, 0)
        self._cache: dict[int, tuple[int, int, Strip]] = {}  # line -> (scroll x, width, strip)
        self.zoom = 1  # terminal cells (columns, half lines) per matrix entry
        self._label_width = 0
        self.rows: tuple[str, ...] | None = None  # row labels; None: query index and token
        self.colour: Callable[[float], tuple[int, int, int]] = ramp
        self.corner = " q \\ k"

    def show(
        self,
        weights: np.ndarray,
        mask: np.ndarray | None,
        tokens: tuple[str, ...],
        mode: str,
        *,
        rows: tuple[str, ...] | None = None,
        colour: Callable[[float], tuple[int, int, int]] = ramp,
        corner: str = " q \\ k",
    ) -> None:
        """New data (attributes down from the pane); keeps the cursor where it fits.
        `rows` labels the rows instead of the query tokens, `colour` maps a value to its
        colour, `corner` names the axes."""
        self.weights, self.mask, self.tokens, self.mode = weights, mask, tokens, mode
        self.rows, self.colour, self.corner = rows, colour, corner
        tq, tk = weights.shape
        self.cursor = (min(self.cursor[0], tq - 1), min(self.cursor[1], tk - 1))
        if rows is not None:
            # two rows may share a line: "L2/L3"
            self._label_width = max(len(corner), 2 * max(map(len, rows), default=1) + 1) + 1
        else:
            width = max((len(fmt.printable_token(t)[:6]) for t in tokens), default=1)
            self._label_width = 5 + 2 * width + 2
        self._layout()

    def _layout(self) -> None:
        """Pick the zoom (cells per matrix entry) that fills the view, then the sizes."""
        if self.weights is None:
            return
        tq, tk = self.weights.shape
        cols = self.size.width - self._label_width
        half_rows = 2 * (self.size.height - 1)
        zoom = max(1, min(6, cols // tk if tk else 1, half_rows // tq if tq else 1))
        # An even zoom gives every query row the same number of terminal lines.
        self.zoom = zoom - 1 if zoom > 1 and zoom % 2 else zoom
        z = self.zoom
        self.virtual_size = Size(self._label_width + tk * z, 1 + (tq * z + 1) // 2)
        self._cache.clear()
        self.refresh()
        # What is visible is known once the scrollbars this size brings are laid out.
        self.call_after_refresh(self.post_message, self.Scrolled())

    def on_resize(self) -> None:
        self._layout()
        self.post_message(self.Scrolled())

    def watch_scroll_x(self, old: float, new: float) -> None:
        super().watch_scroll_x(old, new)
        if round(old) != round(new):
            self.post_message(self.Scrolled())

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if round(old) != round(new):
            self.post_message(self.Scrolled())

    def visible(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """(first, last) query row and (first, last) key column on screen, wholly or in part."""
        if self.weights is None:
            return (0, -1), (0, -1)
        tq, tk = self.weights.shape
        cols, lines = self._view_size()
        x, y = self.scroll_offset
        z = self.zoom
        rows = (2 * y // z, min(tq - 1, (2 * (y + lines) - 1) // z))
        return rows, (x // z, min(tk - 1, (x + cols - 1) // z))

    # -- drawing -------------------------------------------------------------------------

    def _color(self, q: int, k: int) -> tuple[int, int, int] | None:
        weights = self.weights
        assert weights is not None
        tq, tk = weights.shape
        if q >= tq or k >= tk:
            return None
        allowed = True if self.mask is None else bool(self.mask[q, k])
        if self.mode == "mask":
            return ALLOWED if allowed else MASKED
        if self.mode == "overlay" and not allowed:
            return MASKED
        return self.colour(float(weights[q, k]))

    def _label(self, line: int) -> str:
        """The query rows that start on this line: index and token(s)."""
        z = self.zoom
        starts = [r // z for r in (2 * line, 2 * line + 1) if r % z == 0]
        tq = self.weights.shape[0] if self.weights is not None else 0
        starts = [q for q in starts if q < tq]
        if not starts:
            return ""
        if self.rows is not None:
            return "/".join(self.rows[q] for q in starts)

        def tok(i: int) -> str:
            return fmt.printable_token(self.tokens[i])[:6] if i < len(self.tokens) else ""

        half = (self._label_width - 7) // 2
        if len(starts) == 1:
            return f"{starts[0]:>4} {tok(starts[0]):>{half}}"
        return f"{starts[0]:>4} {tok(starts[0]):>{half}}/{tok(starts[1]):<{half}}"

    def _view_size(self) -> tuple[int, int]:
        """Columns and lines the matrix can use: the widget minus its scrollbars (a long
        prompt brings a horizontal one that hides the bottom line) and the key axis line."""
        size = self.scrollable_content_region.size
        return max(1, size.width - self._label_width), max(1, size.height - 1)

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        if self.weights is None:
            return Strip.blank(width)
        scroll_x, scroll_y = self.scroll_offset
        if y == 0:
            return self._axis_line(scroll_x, width)
        line = y - 1 + scroll_y
        cached = self._cache.get(line)
        if cached is not None and cached[:2] == (scroll_x, width):
            return cached[2]
        tq, tk = self.weights.shape
        z = self.zoom
        q_up, q_lo = (2 * line) // z, (2 * line + 1) // z
        if q_up >= tq:
            return Strip.blank(width)
        label = self._label(line).ljust(self._label_width)[: self._label_width]
        segments = [Segment(label, LABEL)]
        cols = max(0, width - self._label_width)
        cq, ck = self.cursor
        for c in range(scroll_x, min(tk * z, scroll_x + cols)):
            k = c // z
            upper = self._color(q_up, k)
            lower = self._color(q_lo, k)
            fg = CURSOR.color if (cq, ck) == (q_up, k) else None
            bg = CURSOR.color if (cq, ck) == (q_lo, k) else None
            style = Style(
                color=fg or (rgb(upper) if upper else None),
                bgcolor=bg or (rgb(lower) if lower else None),
            )
            segments.append(Segment("▀", style))
        strip = Strip(segments).adjust_cell_length(width)
        self._cache[line] = (scroll_x, width, strip)
        return strip

    def _axis_line(self, scroll_x: int, width: int) -> Strip:
        """Key tokens, one character per column (the cursor's key in full below)."""
        assert self.weights is not None
        tk = self.weights.shape[1]
        cols = max(0, width - self._label_width)
        ck = self.cursor[1]
        segments = [Segment(self.corner.ljust(self._label_width)[: self._label_width], LABEL)]
        z = self.zoom
        for c in range(scroll_x, min(tk * z, scroll_x + cols)):
            k, offset = divmod(c, z)
            label = fmt.printable_token(self.tokens[k]) if k < len(self.tokens) else ""
            if z == 1:
                char = label[:1]
            else:  # the token's first z-1 characters, then a gap before the next key
                char = label[offset] if offset < min(len(label), z - 1) else " "
            style = Style(bold=True, color="cyan") if k == ck else Style(dim=True)
            segments.append(Segment(char or " ", style))
        return Strip(segments).adjust_cell_length(width)

    # -- cursor --------------------------------------------------------------------------

    def action_move(self, dq: int, dk: int) -> None:
        if self.weights is None:
            return
        tq, tk = self.weights.shape
        old = self.cursor
        self.cursor = (min(max(old[0] + dq, 0), tq - 1), min(max(old[1] + dk, 0), tk - 1))
        z = self.zoom
        for q in (old[0], self.cursor[0]):
            for line in range(q * z // 2, (q * z + z - 1) // 2 + 1):
                self._cache.pop(line, None)
        self._scroll_to_cursor()
        self.refresh()
        self.post_message(self.CursorMoved(*self.cursor))

    def _scroll_to_cursor(self) -> None:
        q, k = self.cursor
        z = self.zoom
        first, last = q * z // 2, (q * z + z - 1) // 2  # the lines the row is drawn on
        cols, visible_lines = self._view_size()
        x, y = self.scroll_offset
        if first < y:
            y = first
        elif last >= y + visible_lines:
            y = last - visible_lines + 1
        if k * z < x:
            x = k * z
        elif (k + 1) * z > x + cols:
            x = (k + 1) * z - cols
        self.scroll_to(x, y, animate=False)


def head_table(view: AttentionView, current: int) -> Text:
    """One line per head: how spread its attention is (mean entropy), how much each
    query keeps to itself (diagonal share), and where the last query looks most."""
    text = Text(no_wrap=True, overflow="ellipsis")
    for h in view.heads:
        k = h.last_query_argmax
        token = fmt.printable_token(view.tokens[k]) if k < len(view.tokens) else "?"
        style = "bold reverse" if h.head == current else ""
        text.append(f"head {h.head:<2}", style=style)
        text.append(f" H {h.mean_entropy:5.2f} nats  diag {h.diagonal_share:4.2f}")
        text.append(f"  last q → k {k} {token} {h.last_query_weight:.2f}\n", style="dim")
    return text


class AttentionPanel(Vertical):
    """Title line, heatmap (or the all-heads overview), and the cursor's exact value."""

    BINDINGS = [
        Binding(
            "left_square_bracket",
            "layer(-1)",
            "Layer -",
            id="attn.layer_prev",
            tooltip="the previous layer",
        ),
        Binding(
            "right_square_bracket",
            "layer(1)",
            "Layer +",
            id="attn.layer_next",
            tooltip="the next layer",
        ),
        Binding("comma", "head(-1)", "Head -", id="attn.head_prev", tooltip="the previous head"),
        Binding("full_stop", "head(1)", "Head +", id="attn.head_next", tooltip="the next head"),
        Binding(
            "m",
            "mode",
            "Mode",
            id="attn.mode",
            tooltip="pattern / causal mask / pattern with the mask overlaid",
        ),
        Binding(
            "v",
            "overview",
            "All heads",
            id="attn.overview",
            tooltip="all heads of this layer as small multiples",
        ),
    ]

    view: reactive[AttentionView | None] = reactive(None, always_update=True)
    head: reactive[int] = reactive(0)
    mode: reactive[str] = reactive("pattern")
    overview: reactive[bool] = reactive(False)

    @dataclass
    class HeadChanged(Message):
        head: int

    def __init__(self, n_layer: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.n_layer = n_layer

    def compose(self) -> ComposeResult:
        yield Static("", id="attn-title")
        yield AttentionHeatmap(id="attn-heatmap")
        with VerticalScroll(id="attn-overview"):
            yield Static("", id="attn-overview-text")
        yield Static("", id="attn-legend")
        yield Static("", id="attn-cursor")

    def on_mount(self) -> None:
        self.query_one("#attn-overview").display = False

    # -- actions -------------------------------------------------------------------------

    def action_layer(self, delta: int) -> None:
        if self.view is not None and self.n_layer:
            layer = (self.view.pattern.layer + delta) % self.n_layer
            self.post_message(IntentRequested("attention", "attention", (layer,)))

    def action_head(self, delta: int) -> None:
        if self.view is not None:
            self.head = (self.head + delta) % self.view.pattern.weights.shape[0]
            self.post_message(self.HeadChanged(self.head))

    def action_mode(self) -> None:
        self.mode = MODES[(MODES.index(self.mode) + 1) % len(MODES)]

    def action_overview(self) -> None:
        self.overview = not self.overview

    # -- data down -----------------------------------------------------------------------

    def watch_view(self) -> None:
        self._redraw()

    def watch_head(self) -> None:
        self._redraw()

    def watch_mode(self) -> None:
        self._redraw()

    def watch_overview(self, overview: bool) -> None:
        if self.is_mounted:
            self.query_one("#attn-overview").display = overview
            self.query_one(AttentionHeatmap).display = not overview
            self._redraw()

    def _redraw(self) -> None:
        view = self.view
        if view is None or not self.is_mounted:
            return
        p = view.pattern
        n_head = p.weights.shape[0]
        head = min(self.head, n_head - 1)
        title = Text(no_wrap=True, overflow="ellipsis")
        # "layer 0/3" read as "0 of 3" for a 4-layer model: the range says it.
        title.append(f"layer {p.layer} (0–{self.n_layer - 1})", style="bold")
        title.append(f"  head {head} (0–{n_head - 1})", style="bold")
        if p.n_kv_head != n_head:
            title.append(f" (kv head {head // (n_head // p.n_kv_head)})", style="dim")
        # The verification figure before the mode, so that narrow screens show it too.
        title.append("  max|W·V−y| ", style="dim")
        ok = p.max_abs_error < 1e-3
        title.append(f"{p.max_abs_error:.1e}", style="green" if ok else "bold red")
        title.append(f"  mode {self.mode}", style="cyan")
        if p.window is not None:
            title.append(f"  window {p.window}", style="dim")
        if head < len(view.heads):
            summary = view.heads[head]
            title.append(f"  H {summary.mean_entropy:.2f} nats", style="magenta")
            title.append(f"  diag {summary.diagonal_share:.2f}", style="magenta")
        self.query_one("#attn-title", Static).update(title)
        heatmap = self.query_one(AttentionHeatmap)
        heatmap.show(p.weights[head], p.mask, view.tokens, self.mode)
        if self.overview:
            width = max(20, self.size.width - 2)
            picture = head_table(view, head) + overview_text(p.weights, width, current=head)
            self.query_one("#attn-overview-text", Static).update(picture)
        self._report(*heatmap.cursor)
        self._legend()

    def on_attention_heatmap_cursor_moved(self, event: AttentionHeatmap.CursorMoved) -> None:
        event.stop()
        self._report(event.row, event.col)

    def on_attention_heatmap_scrolled(self, event: AttentionHeatmap.Scrolled) -> None:
        event.stop()
        self._legend()

    def _legend(self) -> None:
        """The colour scale, then which query rows (and key columns) are on screen."""
        view = self.view
        if view is None or not self.is_mounted:
            return
        text = Text(no_wrap=True, overflow="ellipsis")
        if not self.overview:
            (r0, r1), (c0, c1) = self.query_one(AttentionHeatmap).visible()
            tq, tk = view.pattern.weights.shape[1:]
            text.append(f"rows {r0}–{r1} of {tq}", style="bold")
            if (c0, c1) != (0, tk - 1):
                text.append(f" · keys {c0}–{c1} of {tk}", style="bold")
            text.append("  ")
        text.append_text(legend_text(self.mode))
        self.query_one("#attn-legend", Static).update(text)

    def cursor_probability(self) -> float | None:
        """The exact weight under the cursor (what the cursor line prints)."""
        view = self.view
        if view is None:
            return None
        q, k = self.query_one(AttentionHeatmap).cursor
        head = min(self.head, view.pattern.weights.shape[0] - 1)
        return float(view.pattern.weights[head, q, k])

    def _report(self, q: int, k: int) -> None:
        """Two lines: the cell under the cursor, then where its query row looks most."""
        view = self.view
        if view is None:
            return
        p = self.cursor_probability()
        tokens = view.tokens

        def tok(i: int) -> str:
            return repr(tokens[i])[1:-1] if i < len(tokens) else "?"

        allowed = view.pattern.mask is None or bool(view.pattern.mask[q, k])
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(f"q {q} ", style="dim")
        line.append(tok(q), style="bold")
        line.append(" → ", style="dim")
        line.append(f"k {k} ", style="dim")
        line.append(tok(k), style="bold")
        line.append(f"  p = {p:.6f}", style="bold yellow")
        if not allowed:
            line.append("  (masked)", style="red")
        line.append("\n")
        line.append_text(self.top_keys_text(q))
        self.query_one("#attn-cursor", Static).update(line)

    def top_keys_text(self, q: int) -> Text:
        """`q 5 ':' looks at  k 4 'O' 0.61  k 0 'R' 0.20  k 3 'E' 0.09` for this head."""
        view = self.view
        assert view is not None
        head = min(self.head, view.pattern.weights.shape[0] - 1)
        tokens = view.tokens
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"q {q} ", style="dim")
        text.append(repr(tokens[q])[1:-1] if q < len(tokens) else "?", style="bold")
        text.append(" looks at", style="dim")
        for key, prob in top_keys(view.pattern.weights[head, q]):
            text.append(f"  k {key} ", style="dim")
            text.append(repr(tokens[key])[1:-1] if key < len(tokens) else "?", style="bold")
            text.append(f" {prob:.2f}", style="yellow")
        return text
