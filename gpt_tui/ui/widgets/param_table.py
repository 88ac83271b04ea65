"""The parameter table: grouped per block with subtotals, or sorted by size; tied marked."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.binding import Binding
from textual.reactive import reactive

from ... import formatting as fmt
from .tables import RowTable

if TYPE_CHECKING:
    from ...engine.analysis.init_rules import ModelFacts
    from ...engine.analysis.summary import ModelSummary
    from ...engine.core.trace import ParamRow

SHARE_WIDTH = 8


def short_name(name: str) -> str:
    """Without the `transformer.` most names share (the tied `lm_head.weight` keeps its)."""
    return name.removeprefix("transformer.")


def tied_name(name: str, other: str) -> str:
    """The other name of a shared tensor, without the last part both have: `lm_head` for
    `transformer.wte.weight` tied with `lm_head.weight` (at 80 columns the rest was cut)."""
    mine, theirs = name.rsplit(".", 1), other.rsplit(".", 1)
    same_kind = len(mine) == len(theirs) == 2 and mine[1] == theirs[1]
    return short_name(theirs[0] if same_kind else other)


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
        Binding(
            "i",
            "toggle_init",
            "Init/mode",
            id="params.init",
            tooltip="each parameter's std and the init rule that set it; train vs eval mode",
        ),
    ]

    summary: reactive[ModelSummary | None] = reactive(None, always_update=True)
    facts: reactive[ModelFacts | None] = reactive(None)
    by_size: reactive[bool] = reactive(False)
    show_init: reactive[bool] = reactive(False)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._duplicates: set[str] = set()

    def on_mount(self) -> None:
        self._fill()

    def action_toggle_sort(self) -> None:
        self.show_init = False
        self.by_size = not self.by_size

    def action_toggle_init(self) -> None:
        self.show_init = not self.show_init

    def watch_summary(self) -> None:
        self._fill()

    def watch_facts(self) -> None:
        self._fill()

    def watch_by_size(self) -> None:
        self._fill()

    def watch_show_init(self) -> None:
        self._fill()

    def _row(self, row: ParamRow, total: int) -> tuple[tuple, dict]:
        counted = row.name not in self._duplicates
        share = row.numel / total if total and counted else 0.0
        name = Text(short_name(row.name), style="" if counted else "dim")
        if row.tied_with:  # in the name's own column: a column of its own was cut at 80
            name.append(f" ⇄ {tied_name(row.name, row.tied_with)}", style="magenta")
        cells = (
            name,
            Text(f"{row.numel:,}", justify="right", style="" if counted else "dim"),
            Text(fmt.bar(share, SHARE_WIDTH) + f" {share * 100:4.1f}%", style="green"),
            Text(fmt.nbytes(row.nbytes), justify="right"),
            Text(fmt.shape(row.shape), style="cyan"),
        )
        return cells, _record(row.name, row.numel, share, row.nbytes,
                              list(row.shape), row.tied_with)  # fmt: skip

    def _fill(self) -> None:
        if not self.is_mounted:
            return
        if self.show_init:
            self.fill(("name", "std now", "init", "rule"), *_split(self._init_rows()))
            return
        # The numbers first: name, params and share fit in 80 columns; shape last.
        columns = ("name", "params", "share", "bytes", "shape")
        summary = self.summary
        self.fill(columns, *_split(self._size_rows(summary) if summary is not None else []))

    def _size_rows(self, summary: ModelSummary) -> list[tuple[tuple, dict]]:
        """Each row's cells and what E exports of it (full names, numbers)."""
        total = summary.total_params
        rows = list(summary.parameters)
        # The second name of a shared tensor is listed but not counted again.
        seen: set[str] = set()
        self._duplicates = set()
        for r in rows:
            if r.tied_with in seen:
                self._duplicates.add(r.name)
            seen.add(r.name)
        shown: list[tuple[tuple, dict]] = []
        if self.by_size:
            shown += [self._row(r, total) for r in sorted(rows, key=lambda r: -r.numel)]
        else:
            current: int | None = None
            for r in rows:
                if r.block != current and current is not None:
                    shown.append(self._subtotal(summary, current, total))
                current = r.block
                shown.append(self._row(r, total))
            if current is not None:
                shown.append(self._subtotal(summary, current, total))
        shown.append(
            (
                (
                    Text("total (shared once)", style="bold"),
                    Text(f"{total:,}", justify="right", style="bold"),
                    Text(fmt.bar(1.0, SHARE_WIDTH) + " 100%", style="bold green"),
                    Text(fmt.nbytes(summary.total_bytes), justify="right", style="bold"),
                    "",
                ),
                _record("total (shared once)", total, 1.0, summary.total_bytes),
            )
        )
        # Its own row, the count in the params column: in the last column it was clipped.
        n = summary.non_embedding_params
        share = n / total if total else 0.0
        shown.append(
            (
                (
                    Text("non-embedding", style="dim"),
                    Text(f"{n:,}", justify="right", style="dim"),
                    Text(fmt.bar(share, SHARE_WIDTH) + f" {share * 100:4.1f}%", style="dim green"),
                    "",
                    "",
                ),
                _record("non-embedding", n, share),
            )
        )
        return shown

    def _subtotal(self, summary: ModelSummary, block: int, total: int) -> tuple[tuple, dict]:
        n = summary.block_params.get(block, 0)
        nbytes = sum(
            r.nbytes
            for r in summary.parameters
            if r.block == block and r.name not in self._duplicates
        )
        share = n / total if total else 0.0
        cells = (
            Text(f"block {block} subtotal", style="bold cyan"),
            Text(f"{n:,}", justify="right", style="bold cyan"),
            Text(fmt.bar(share, SHARE_WIDTH) + f" {share * 100:4.1f}%", style="cyan"),
            Text(fmt.nbytes(nbytes), justify="right", style="cyan"),
            "",
        )
        return cells, _record(f"block {block} subtotal", n, share, nbytes)

    def _init_rows(self) -> list[tuple[tuple, dict]]:
        """Each parameter's std now beside what its family's init drew, then the mode."""
        facts = self.facts
        if facts is None:
            placeholder = (Text("reading the parameters…", style="dim"), "", "", "")
            return [(placeholder, {"name": "reading the parameters…"})]
        rows: list[tuple[tuple, dict]] = []
        for row in facts.init:
            drifted = row.std is not None and init_drifted(row.std, row.init_std)
            cells = (
                short_name(row.name),
                Text(
                    "—" if row.std is None else fmt.num(row.std),
                    justify="right",
                    style="yellow" if drifted else "",
                ),
                Text(row.init, style="cyan"),
                Text(row.rule, style="dim"),
            )
            data = dict(name=row.name, std=row.std, init=row.init, init_std=row.init_std,
                        rule=row.rule)  # fmt: skip
            rows.append((cells, data))
        mode = facts.mode
        line = mode.line()
        cells = (Text("mode", style="bold"), "", Text(mode.mode, style="bold"), line)
        rows.append((cells, dict(name="mode", init=mode.mode, rule=line)))
        rows += [
            (("", "", "", Text(change, style="dim")), dict(name="mode", rule=change))
            for change in mode.changes
        ]
        return rows


def init_drifted(std: float, init_std: float) -> bool:
    """The std now is far from what the init drew (training moved it, or another init)."""
    if init_std != init_std:  # no known rule
        return False
    return abs(std - init_std) > 0.25 * max(init_std, 1e-3)


def _record(
    name: str,
    params: int,
    share: float,
    nbytes: int | None = None,
    shape: list[int] | None = None,
    tied_with: str | None = None,
) -> dict:
    """A row as E exports it: the full module path and the numbers themselves."""
    return dict(name=name, params=params, share=share, bytes=nbytes, shape=shape,
                tied_with=tied_with)  # fmt: skip


def _split(rows: list[tuple[tuple, dict]]) -> tuple[list[tuple], list[dict]]:
    return [cells for cells, _ in rows], [data for _, data in rows]
