"""The parameter table: grouped per block with subtotals, or sorted by size; tied marked."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.binding import Binding
from textual.reactive import reactive

from ... import formatting as fmt
from .tables import RowTable

if TYPE_CHECKING:
    from ...engine.summary import ModelSummary
    from ...engine.trace import ParamRow

SHARE_WIDTH = 8


def short_name(name: str) -> str:
    """Without the `transformer.` most names share (the tied `lm_head.weight` keeps its)."""
    return name.removeprefix("transformer.")


class ParamTable(RowTable):
    """One row per parameter tensor; a shared tensor's second name is marked, not counted."""

    BINDINGS = [
        Binding(
            "t",
            "toggle_sort",
            "Sort size/block",
            id="params.sort",
            tooltip="Sort the parameters by size, or group them per block",
        ),
    ]

    summary: reactive[ModelSummary | None] = reactive(None, always_update=True)
    by_size: reactive[bool] = reactive(False)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._duplicates: set[str] = set()

    def on_mount(self) -> None:
        # The numbers first: name, params and share fit in 80 columns; shape after.
        self.add_columns("name", "params", "share", "bytes", "shape", "tied with")

    def action_toggle_sort(self) -> None:
        self.by_size = not self.by_size

    def watch_summary(self) -> None:
        self._fill()

    def watch_by_size(self) -> None:
        self._fill()

    def _row(self, row: ParamRow, total: int) -> tuple:
        counted = row.name not in self._duplicates
        share = row.numel / total if total and counted else 0.0
        tied = Text(f"⇄ {short_name(row.tied_with)}", style="magenta") if row.tied_with else ""
        return (
            Text(short_name(row.name), style="" if counted else "dim"),
            Text(f"{row.numel:,}", justify="right", style="" if counted else "dim"),
            Text(fmt.bar(share, SHARE_WIDTH) + f" {share * 100:4.1f}%", style="green"),
            Text(fmt.nbytes(row.nbytes), justify="right"),
            Text(fmt.shape(row.shape), style="cyan"),
            tied,
        )

    def _fill(self) -> None:
        self.clear()
        summary = self.summary
        if summary is None or not self.columns:
            return
        total = summary.total_params
        rows = list(summary.parameters)
        # The second name of a shared tensor is listed but not counted again.
        seen: set[str] = set()
        self._duplicates = set()
        for r in rows:
            if r.tied_with in seen:
                self._duplicates.add(r.name)
            seen.add(r.name)
        if self.by_size:
            for r in sorted(rows, key=lambda r: -r.numel):
                self.add_row(*self._row(r, total))
        else:
            current: int | None = None
            for r in rows:
                if r.block != current and current is not None:
                    self._subtotal(summary, current, total)
                current = r.block
                self.add_row(*self._row(r, total))
            if current is not None:
                self._subtotal(summary, current, total)
        self.add_row(
            Text("total (shared once)", style="bold"),
            Text(f"{total:,}", justify="right", style="bold"),
            Text(fmt.bar(1.0, SHARE_WIDTH) + " 100%", style="bold green"),
            Text(fmt.nbytes(summary.total_bytes), justify="right", style="bold"),
            "",
            "",
        )
        # Its own row, the count in the params column: in the last column it was clipped.
        n = summary.non_embedding_params
        share = n / total if total else 0.0
        self.add_row(
            Text("non-embedding", style="dim"),
            Text(f"{n:,}", justify="right", style="dim"),
            Text(fmt.bar(share, SHARE_WIDTH) + f" {share * 100:4.1f}%", style="dim green"),
            "",
            "",
            "",
        )

    def _subtotal(self, summary: ModelSummary, block: int, total: int) -> None:
        n = summary.block_params.get(block, 0)
        nbytes = sum(
            r.nbytes
            for r in summary.parameters
            if r.block == block and r.name not in self._duplicates
        )
        share = n / total if total else 0.0
        self.add_row(
            Text(f"block {block} subtotal", style="bold cyan"),
            Text(f"{n:,}", justify="right", style="bold cyan"),
            Text(fmt.bar(share, SHARE_WIDTH) + f" {share * 100:4.1f}%", style="cyan"),
            Text(fmt.nbytes(nbytes), justify="right", style="cyan"),
            "",
            "",
        )
