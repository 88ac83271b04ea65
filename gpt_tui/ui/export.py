"""What `Y` copies and `E` exports: the focused value as text, a table as CSV / JSON, the
screen as SVG; and whether the terminal is likely to honour an OSC 52 copy.

Plain functions over widgets the app hands in; the files are written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.widget import Widget
from textual.widgets import DataTable, Input, Static, Tree

from ..config_file import config_path, export_dir_problem, write_atomically
from ..engine.core.trace import to_jsonable

if TYPE_CHECKING:
    from textual.app import App

    from ..engine.core.debug_state import DebugState

    class GptTuiApp(App[int]):  # what copy and export read of the app (the app imports us)
        state: DebugState | None
        selected_path: str | None


def cell_text(cell: object) -> str:
    return cell.plain if isinstance(cell, Text) else str(cell)


def table_rows(table: DataTable) -> tuple[list[str], list[list[str]]]:
    """The table's header and every row, as plain text."""
    header = [cell_text(column.label) for column in table.columns.values()]
    rows = [[cell_text(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
    return header, rows


def focused_text(widget: Widget | None) -> tuple[str, str] | None:
    """(what, text) to copy from the focused widget: a tree's module path, a table's cursor
    row (tab-separated), an input's text, a viewer's or a static's text."""
    if widget is None:
        return None
    if isinstance(widget, Tree):
        node = widget.cursor_node
        path = node.data if node is not None else None
        return ("module path", path or "(model)") if path is not None else None
    if isinstance(widget, DataTable):
        if not widget.row_count:
            return None
        _, rows = table_rows(widget)
        row = rows[min(widget.cursor_row, len(rows) - 1)]
        return "row", "\t".join(cell for cell in row if cell)
    if isinstance(widget, Input):
        return ("input", widget.value) if widget.value else None
    if isinstance(widget, Static):
        return "text", cell_text(widget.render())
    return "text", cell_text(widget.render())


def code_text(source: Widget, state: DebugState | None) -> tuple[str, str] | None:
    """In the Code tab's source: the last expression's result, else the cursor line."""
    if state is not None and state.evaluations:
        last = state.evaluations[-1]
        result = last.value.repr if last.value is not None else last.error or ""
        return f"{last.expr} →", result
    return focused_text(source)


def clipboard_note(env: Mapping[str, str] | None = None) -> str | None:
    """Why the terminal may not receive an OSC 52 copy, or None when nothing is known
    against it. tmux passes the sequence on only with `set-clipboard on` (its default,
    `external`, drops what applications send); over ssh the local terminal must allow it."""
    env = os.environ if env is None else env
    if env.get("TMUX"):
        setting = _tmux_clipboard()
        if setting != "on":
            return (
                f"tmux's set-clipboard is {setting or 'unknown'}: the copy reaches your "
                "terminal only after `tmux set -g set-clipboard on`"
            )
    if env.get("SSH_TTY") or env.get("SSH_CONNECTION"):
        return "over ssh the copy goes to your local terminal, if it allows OSC 52"
    return None


def _tmux_clipboard() -> str | None:
    tmux = shutil.which("tmux")
    if tmux is None:
        return None
    try:
        done = subprocess.run(
            [tmux, "show-options", "-gv", "set-clipboard"],
            capture_output=True,
            text=True,
            timeout=2,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def export_name(folder: Path, what: str) -> Path:
    """`folder/gpt-tui-params-20261206-061502` (an extension is added per file)."""
    return folder / f"gpt-tui-{what}-{time.strftime('%Y%m%d-%H%M%S')}"


def table_records(table: DataTable) -> list[dict[str, Any]]:
    """The table's rows as {column: value}: the data behind them when the pane gives it
    (full module paths, numbers as numbers), else the cells' text."""
    data = getattr(table, "records", None)
    if data is not None and len(data) == table.row_count:
        return [to_jsonable(record) for record in data]
    header, rows = table_rows(table)
    keys = [h or f"column {i}" for i, h in enumerate(header)]
    return [dict(zip(keys, row, strict=False)) for row in rows]


def _csv_cell(value: object) -> object:
    if isinstance(value, list):  # a shape as 1x6x32, names space-separated
        joiner = "x" if all(isinstance(v, int) for v in value) else " "
        return joiner.join(map(str, value))
    return "" if value is None else value


def write_table(table: DataTable, stem: Path) -> list[Path]:
    """The table as `stem.csv` and `stem.json` (a list of {column: value})."""
    records = table_records(table)
    header = list(dict.fromkeys(key for record in records for key in record))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows([_csv_cell(record.get(key)) for key in header] for record in records)
    csv_path, json_path = stem.with_suffix(".csv"), stem.with_suffix(".json")
    write_atomically(csv_path, out.getvalue())
    write_atomically(json_path, json.dumps(records, indent=2, ensure_ascii=False) + "\n")
    return [csv_path, json_path]


def write_svg(svg: str, stem: Path) -> Path:
    path = stem.with_suffix(".svg")
    write_atomically(path, svg)
    return path


def copy_focused(app: GptTuiApp) -> None:
    """Y: the focused module path, table row or value to the clipboard (OSC 52)."""
    from .widgets.code_pane import SourceView
    from .widgets.module_tree import ModuleTree

    focused = app.focused
    if isinstance(focused, SourceView):  # the last expression's result, or the line
        found = code_text(focused, app.state)
    elif isinstance(focused, ModuleTree):
        found = ("module path", app.selected_path or "(model)")
    else:
        found = focused_text(focused)
    if found is None or not found[1]:
        app.notify("nothing to copy here", timeout=2)
        return
    what, text = found
    app.copy_to_clipboard(text)
    shown = text if len(text) <= 60 else text[:59] + "…"
    note = clipboard_note()
    app.notify(f"{what}: {shown}" + (f"\n{note}" if note else ""), title="copied", timeout=6)


def export_screen(app: GptTuiApp, folder: Path, config_file: Path | None = None) -> None:
    """E: the screen as SVG, and the table in focus as CSV and JSON; the paths said.
    `config_file`: where export_dir is set, named when the folder cannot take the files."""
    from textual.widgets import TabbedContent

    problem = export_dir_problem(folder, config_file or config_path())
    if problem:
        app.notify(f"export failed: {problem}", severity="error", timeout=10)
        return
    stem = export_name(folder, app.query_one(TabbedContent).active or "screen")
    try:
        paths = [write_svg(app.export_screenshot(), stem)]
        if isinstance(app.focused, DataTable):
            paths += write_table(app.focused, stem)
    except OSError as err:
        app.notify(f"export failed: {err}", severity="error", timeout=8)
        return
    app.notify("\n".join(str(p) for p in paths), title="saved", timeout=10)
