"""The stats pane: every probe's output statistics in execution order, and the residual
stream's rms across layers as a sparkline. `d` shows the change against the previous run.

While a stepped pass is paused the pane shows the records collected so far, modules'
inputs included (`(in)` rows), with the row paused at highlighted and scrolled into view.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.widgets import Label, Sparkline, Static

from ... import formatting as fmt
from ...engine.core.trace import FINITE_ONLY
from .tables import RowTable

if TYPE_CHECKING:
    from ...engine.core.debug_state import RunResult
    from ...engine.core.trace import ProbeRecord, TensorStats

# What you hunt a NaN with comes first, so that it fits at 80 columns.
COLUMNS = ("name", "shape", "NaN", "Inf", "mean", "std", "min", "max", "|max|", "rms", "zero%")
STAT_FIELDS = ("mean", "std", "min", "max", "abs_max", "rms")
DELTA_COLUMNS = ("mean", "std", "min", "max", "|max|", "rms")  # headed Δ in diff mode
_RESID = re.compile(r"\.(\d+)\.resid_(pre|post)$")


def residual_rms(records: tuple[ProbeRecord, ...]) -> list[float]:
    """The residual stream's rms entering block 0, then after every block."""
    points: list[tuple[float, float]] = []
    for r in records:
        match = _RESID.search(r.name)
        if match is None:
            continue
        layer, where = int(match.group(1)), match.group(2)
        if where == "pre" and layer == 0:
            points.append((-1.0, r.stats.rms))
        elif where == "post":
            points.append((float(layer), r.stats.rms))
    points.sort()
    return [v if math.isfinite(v) else 0.0 for _, v in points]


def short_name(name: str) -> str:
    return name.removeprefix("transformer.")


def row_name(record: ProbeRecord, paused: bool = False, aliases: tuple[str, ...] = ()) -> str:
    """The name column: without the `transformer.` every row has, `(in)` for inputs, and
    the other names of the same tensor (`h.0=resid_post=h.1.resid_pre`; no spaces, so
    that the NaN-hunting columns still fit beside the tree's rail at 120 columns)."""
    name = short_name(record.name)
    name += " (in)" if record.phase == "in" else ""
    parent = record.name.rpartition(".")[0]
    for alias in aliases:  # below this row's path from there, a sibling by its own name
        if alias.startswith(f"{record.name}."):
            alias = alias.removeprefix(f"{record.name}.")
        elif parent and alias.rpartition(".")[0] == parent:
            alias = alias.rpartition(".")[2]
        name += "=" + short_name(alias)
    return f"{fmt.PAUSED_MARK}{name}" if paused else name


@dataclass(frozen=True)
class Row:
    """One row of the table: a record, the other names of its tensor, and the indices of
    every record it stands for (itself and those aliases)."""

    index: int
    aliases: tuple[str, ...] = ()
    members: tuple[int, ...] = ()


def merge_aliases(records: tuple[ProbeRecord, ...]) -> list[Row]:
    """The rows to show. An output that is the same tensor as an earlier output is named
    on that output's row instead of repeating it."""
    rows: list[Row] = []
    row_of: dict[str, int] = {}  # name of an output shown as a row -> its position in rows
    for i, r in enumerate(records):
        head = row_of.get(r.same_as) if r.phase == "out" and r.same_as else None
        if head is not None:
            row = rows[head]
            rows[head] = Row(row.index, (*row.aliases, r.name), (*row.members, i))
            continue
        if r.phase == "out":
            row_of[r.name] = len(rows)
        rows.append(Row(i, (), (i,)))
    return rows


def token_strip(tokens: tuple[str, ...], ids: tuple[int, ...]) -> Text:
    """`T=6 (pos token id) │ 0 R 30  1 O 27 …`: each input position, its token and (when
    known) its id."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"T={len(tokens)}", style="bold")
    text.append(" (pos token id) │" if ids else " (pos token) │", style="dim")
    for pos, token in enumerate(tokens):
        text.append(f" {pos} ", style="dim")
        text.append(fmt.printable_token(token), style="bold")
        if pos < len(ids):
            text.append(f" {ids[pos]}", style="cyan")
        text.append(" ")
    return text


def _export_record(
    r: ProbeRecord, aliases: tuple[str, ...], prev: TensorStats | None, comparing: bool
) -> dict[str, object]:
    """A row as E exports it: full module paths, the numbers themselves (and, while the
    Δ columns show, each change from the previous run; None where that run lacks the row)."""
    s = r.stats
    record: dict[str, object] = dict(
        name=r.name, phase=r.phase, same_tensor_as=list(aliases), shape=list(r.shape),
        nan=s.nan_count, inf=s.inf_count,
        **{f: getattr(s, f) for f in STAT_FIELDS}, zero_frac=s.zero_frac,
    )  # fmt: skip
    if comparing:
        for f in STAT_FIELDS:
            record[f"delta_{f}"] = None if prev is None else getattr(s, f) - getattr(prev, f)
    return record


def _cell(value: float, bad: bool = False) -> Text:
    style = "bold red" if bad or not math.isfinite(value) else ""
    return Text(fmt.num(value), justify="right", style=style)


def _count(n: int) -> Text:
    return Text(str(n), justify="right", style="bold red" if n else "dim")


def _delta(now: float, before: float | None) -> Text:
    if before is None:
        return Text("new", justify="right", style="dim")
    change = now - before
    if not math.isfinite(change):
        return Text(fmt.num(change), justify="right", style="bold red")
    style = "green" if change > 0 else ("magenta" if change < 0 else "dim")
    sign = "+" if change > 0 else ""
    return Text(sign + fmt.num(change), justify="right", style=style)


class StatsPanel(Vertical):
    """Sparkline on top, the probe table below."""

    BINDINGS = [
        Binding(
            "d",
            "toggle_delta",
            "Diff",
            id="stats.delta",
            tooltip="Show the change of each statistic against the previous run",
        ),
    ]

    run: reactive[RunResult | None] = reactive(None, always_update=True)
    previous: reactive[RunResult | None] = reactive(None, always_update=True)
    show_delta: reactive[bool] = reactive(False)

    def compose(self) -> ComposeResult:
        with Horizontal(id="stats-spark-row"):
            yield Label("resid rms ", id="stats-spark-label")
            yield Sparkline([], id="stats-spark")
            yield Label("", id="stats-spark-range")
        yield Static("", id="stats-tokens")
        yield Static("", id="stats-delta")
        yield Static("", id="stats-finite")  # what the moments of a NaN/Inf row are
        # No cell padding: every column is sized to its widest cell plus one space, so
        # that name, shape, NaN, Inf, mean, std, min and max fit in 80 columns.
        yield RowTable(id="stats-table", cell_padding=0)

    def action_toggle_delta(self) -> None:
        self.show_delta = not self.show_delta

    def watch_run(self) -> None:
        self._fill()

    def watch_show_delta(self) -> None:
        self._fill()

    def _fill(self) -> None:
        if not self.is_mounted:
            return
        table = self.query_one("#stats-table", RowTable)
        table.clear(columns=True)
        run = self.run
        if run is None:
            table.add_column("", width=48)
            table.add_row(Text("press r to run the forward pass on the prompt", style="dim"))
            return
        self.query_one("#stats-tokens", Static).update(token_strip(run.tokens, run.token_ids))
        rms = residual_rms(run.records)
        self.query_one("#stats-spark", Sparkline).data = rms
        span = f" {fmt.num(min(rms))}…{fmt.num(max(rms))}" if rms else ""
        self.query_one("#stats-spark-range", Label).update(span)
        compare = self._compared()
        before: dict[tuple[str, str], TensorStats] = {}
        if compare is not None:
            before = {(r.name, r.phase): r.stats for r in compare.records}
        shown = merge_aliases(run.records)
        paused_row = None
        rows = []
        records = []
        for n, row in enumerate(shown):
            r = run.records[row.index]
            s = r.stats
            prev = before.get((r.name, r.phase)) if compare is not None else None
            records.append(_export_record(r, row.aliases, prev, compare is not None))
            if compare is not None:
                values = [
                    _delta(getattr(s, f), getattr(prev, f) if prev else None) for f in STAT_FIELDS
                ]
            else:
                values = [_cell(getattr(s, f)) for f in STAT_FIELDS]
            paused = run.paused in row.members  # `logits` is paused at on lm_head's row
            if paused:
                paused_row = n
            name = row_name(r, paused, row.aliases)
            if paused:
                label = Text(name, style="bold black on yellow")
            else:
                label = Text(name, style="bold red" if not s.finite else "")
                if "=" in name:  # the tensor's other names
                    label.stylize("dim", name.index("="))
            rows.append(
                (
                    label,
                    Text(fmt.short_shape(r.shape), style="cyan"),
                    _count(s.nan_count),
                    _count(s.inf_count),
                    *values,
                    Text(f"{s.zero_frac * 100:.1f}", justify="right"),
                )
            )
        # Explicit widths (auto-sizing measures nothing while the tab is hidden): the
        # widest cell and one space; numbers are right-aligned, so the space leads.
        for c, label in enumerate(COLUMNS):
            if compare is not None and label in DELTA_COLUMNS:
                label = f"Δ{label}"
            width = max([len(label), *(row[c].cell_len for row in rows)]) + 1
            justify = "left" if c < 2 else "right"
            table.add_column(Text(label, justify=justify), width=width)
        for i, row in enumerate(rows):
            table.add_row(*row, key=str(i))
        table.records = records
        finite_note = self.query_one("#stats-finite", Static)
        finite_note.display = any(not r.stats.finite for r in run.records)
        finite_note.update(Text(f"red rows hold NaN or Inf: {FINITE_ONLY}", style="dim"))
        if paused_row is not None:
            table.move_cursor(row=paused_row, animate=False)

    def _compared(self) -> RunResult | None:
        """The run the Δ columns are taken against, None when not comparing; the line
        above the table says which, or why not (runs of different lengths are not)."""
        note = self.query_one("#stats-delta", Static)
        note.display = self.show_delta
        run, previous = self.run, self.previous
        if not self.show_delta or run is None:
            return None
        if previous is None:
            note.update(Text("Δ: no previous run to compare with yet", style="yellow"))
            return None
        if len(previous.tokens) != len(run.tokens):
            note.update(
                Text(
                    f"Δ not compared: the previous run had T={len(previous.tokens)} "
                    f"tokens, this one T={len(run.tokens)}",
                    style="yellow",
                )
            )
            return None
        note.update(Text(f"Δ against the previous run ({previous.prompt!r})", style="bold"))
        return previous
