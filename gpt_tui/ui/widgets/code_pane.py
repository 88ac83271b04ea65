"""The Code pane: the forward pass paused at a line of the model's own code.

Where the pass stands and its stack, the paused function's source (current line, line
breakpoints, a cursor; `b` toggles a breakpoint at the cursor), the frame's locals
(Enter on a tensor opens the viewer), the display expressions and the expressions
evaluated at the pause, and a box to set a breakpoint by `FILE:LINE` or function name.
The two boxes take pdb's commands: `p`/`pp EXPR`, `whatis EXPR`, `where`, `display [EXPR]`
and `undisplay [EXPR|N]` in the expression box (the engine's line_commands.py reads most),
`tbreak SPEC`, `ignore N COUNT`, `clear N`, `disable N...`, `enable N...` and
`condition N [EXPR]` in the break-at box. The pane never calls the engine: it posts
messages and the app hands back the snapshot's parts through `show`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import PurePath
from typing import ClassVar

from rich.syntax import Syntax
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Static

from ...engine.core.debug_state import Display
from ...engine.core.frames import Evaluation, FrameSnapshot
from ...engine.core.line_breakpoints import BreakpointInfo
from ...engine.core.line_values import SMALL_NUMEL, Value
from ...engine.core.tensors import TensorView
from ..messages import IntentFailed, IntentRequested
from .code_evals import EvaluationLines
from .tables import RowTable
from .tensor_viewer import TensorViewer, number

NOT_PAUSED = (
    "Not paused at a line. In [b]break at[/]: a function ({function}) or FILE:LINE ({example}), "
    "Enter; [b]tbreak[/] SPEC stops once, [b]ignore[/] N COUNT passes hits, [b]disable[/] / "
    "[b]enable[/] N, [b]condition[/] N EXPR, [b]clear[/] N. "
    "C runs to it, N to the first line; [b]display[/] EXPR in the expression box shows EXPR "
    "at each pause."
)
BREAK_HINT = "break at: {example}, {function} · tbreak SPEC · ignore N COUNT · disable N"
EVAL_HINT = "q.shape · v EXPR: view · display EXPR · g col"


def breakpoint_lines(specs: frozenset[str], frame: FrameSnapshot) -> set[int]:
    """The lines of `frame`'s file that carry a `FILE:LINE` breakpoint (the file by its
    name or the end of its path), and the `def` line of the paused function when a
    `FUNCTION` breakpoint names it (either with its ` if COND`)."""
    lines = set()
    for whole in specs:
        spec = whole.partition(" if ")[0].strip()
        file, _, line = spec.rpartition(":")
        parts = PurePath(file).parts
        if file and line.isdigit() and PurePath(frame.path).parts[-len(parts) :] == parts:
            lines.add(int(line))
        elif not file and frame.source and f".{frame.function}".endswith(f".{spec}"):
            lines.add(frame.source[0].number)
    return lines


def value_cells(value: Value) -> tuple[str, ...]:
    """A local's row: name, shape (or repr), dtype, mean, std, min, max, NaN/Inf."""
    if value.kind != "tensor" or value.shape is None:
        return (value.name, value.repr, "", "", "", "", "", "")
    stats = [value.mean, value.std, value.min, value.max]
    cells = ["" if x is None else number(x) for x in stats]
    bad = (value.nan or 0) + (value.inf or 0)
    flag = f"{value.nan}/{value.inf}" if bad else ""
    shape = "(" + ", ".join(map(str, value.shape)) + ")"
    return (value.name, shape, value.dtype or "", *cells, flag)


class SourceView(RowTable):
    """The paused function's lines; the row cursor is the line `b` toggles."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("b", "toggle_line", "Line break", tooltip="toggle a breakpoint at this line"),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(show_header=False, **kwargs)
        self.frame: FrameSnapshot | None = None
        self._centre_row = 0
        self.add_columns("mark", "line", "code")

    def show(self, frame: FrameSnapshot | None, marks: set[int], off: set[int]) -> None:
        """`marks`: the lines with a breakpoint; `off`: those whose only ones are disabled."""
        moved = frame is None or self.frame is None or frame.where != self.frame.where
        cursor, scrolled = self.cursor_row, self.scroll_y
        self.frame = frame
        self.clear()
        if frame is None:
            return
        code = "\n".join(line.text for line in frame.source)
        lines = Syntax(code, "python", theme="ansi_dark").highlight(code).split("\n")
        for line, text in zip(frame.source, lines, strict=False):
            dot = "●" if line.number in marks else "○" if line.number in off else " "
            mark = ("→" if line.current else " ") + dot
            style = "bold yellow" if line.current else "red" if dot != " " else "dim"
            text.rstrip()
            if line.current:
                text.stylize("bold")
            self.add_row(Text(mark, style=style), Text(str(line.number), style=style), text)
        current = next((i for i, line in enumerate(frame.source) if line.current), 0)
        self.move_cursor(row=current if moved else cursor, animate=False)
        if moved:  # the current line in the middle, with what leads to it above
            self._centre_row = current
            self.call_after_refresh(self._centre)
        else:  # the same pause shown again (clear() scrolled to the top): stay put
            self.call_after_refresh(self.scroll_to, y=scrolled, animate=False, force=True)

    def on_resize(self, event: events.Resize) -> None:
        super().on_resize(event)
        if self.frame is not None:  # centred again once the layout has its final height
            self.call_after_refresh(self._centre)

    def _centre(self) -> None:
        height = self.scrollable_content_region.height
        self.scroll_to(y=max(self._centre_row - height // 2, 0), animate=False, force=True)

    def action_toggle_line(self) -> None:
        if self.frame is not None and self.frame.source:
            line = self.frame.source[min(self.cursor_row, len(self.frame.source) - 1)]
            spec = f"{self.frame.file}:{line.number}"
            self.post_message(IntentRequested("line_breakpoint", "toggle_line_breakpoint", (spec,)))


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


class VariablesTable(RowTable):
    """The frame's locals; Enter on a tensor asks for the viewer. The numbers come first:
    a long repr (a tuple of tensors, a cache object) is cut to the width the other columns
    leave, so dtype, mean, std, min, max and NaN/Inf stay on screen."""

    HEADERS = ("name", "shape / value", "dtype", "mean", "std", "min", "max", "NaN/Inf")
    MIN_VALUE_WIDTH = 12

    @dataclass
    class TensorChosen(Message):
        name: str

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.values: tuple[Value, ...] = ()
        self._fitted_to = 0  # the width the value column was cut for
        self.add_columns(*self.HEADERS)

    def show(self, values: tuple[Value, ...]) -> None:
        values = tuple(sorted(values, key=lambda v: v.kind != "tensor"))  # tensors first
        if values == self.values and self._fitted_to == self._width():
            return
        chosen = self.values[self.cursor_row].name if self.cursor_row < len(self.values) else ""
        self.values = values
        self.clear()
        rows = [value_cells(value) for value in values]
        self._fitted_to = width = self._width()
        room = self._value_room(rows, width)
        for cells in rows:
            self.add_row(cells[0], clip(cells[1], room), *cells[2:])
        names = [v.name for v in values]
        self.move_cursor(row=names.index(chosen) if chosen in names else 0, animate=False)

    def _width(self) -> int:
        """The table's width (the screen's while it has not been laid out)."""
        return self.size.width or self.app.size.width

    def _value_room(self, rows: list[tuple[str, ...]], width: int) -> int:
        """What the other columns, their padding and a scrollbar leave for the value."""
        pad = 2 * self.cell_padding
        others = sum(
            max([len(header)] + [len(cells[i]) for cells in rows]) + pad
            for i, header in enumerate(self.HEADERS)
            if i != 1
        )
        return max(width - others - pad - self.styles.scrollbar_size_vertical, self.MIN_VALUE_WIDTH)

    def on_resize(self, event: events.Resize) -> None:
        super().on_resize(event)
        if self.values and self._fitted_to != self._width():
            self.show(self.values)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.cursor_row < len(self.values) and self.values[event.cursor_row].kind == "tensor":
            self.post_message(self.TensorChosen(self.values[event.cursor_row].name))


def display_value(value: Value | None) -> str:
    """A display's value in a few words: a small tensor's values, a tensor's shape and
    range, or the short repr."""
    if value is None or value.kind != "tensor" or value.shape is None:
        return value.repr if value is not None else ""
    stat = ["?" if x is None else number(x) for x in (value.mean, value.min, value.max)]
    if math.prod(value.shape) <= SMALL_NUMEL:  # the repr lists the values
        return value.repr
    shape = "(" + ", ".join(map(str, value.shape)) + ")"
    bad = f" NaN {value.nan}" if value.nan else ""
    return f"{shape} {value.dtype} μ {stat[0]} [{stat[1]}, {stat[2]}]{bad}"


def displays_text(displays: tuple[Display, ...], table: tuple[BreakpointInfo, ...]) -> Text:
    """`1 x.shape: (1, 6, 32)` per display (yellow with its old value when it changed, as
    pdb's `[old: ...]`), then the numbered breakpoints (for ignore N and clear N)."""
    text = Text()
    for d in displays:
        ev = d.evaluation
        text.append(f"{d.number} {d.expr}: ", style="bold")
        if ev is None:
            text.append("(at the next pause at a line)", style="dim")
        elif ev.error is not None:
            text.append(ev.error, style="red")
        else:
            text.append(display_value(ev.value), style="yellow" if d.changed else "")
        old = d.previous
        if old is not None:
            text.append(f"  [old: {old.error or display_value(old.value)}]", style="dim")
        text.append("\n")
    if table:
        text.append("line breakpoints: " + " · ".join(b.line for b in table), style="dim")
    text.rstrip()
    return text


class CodePane(Vertical):
    """Fed with `show(frame, line_breakpoints, evaluations, tensor_view, displays, table,
    hit)`."""

    DEFAULT_CSS = """
    #code-displays {
        height: auto;
        max-height: 6;
        padding: 0 1;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("v", "toggle_viewer", "Vars/View", tooltip="switch Variables / tensor viewer"),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        # a line and a function of this model's own code to break at, as examples
        self.example, self.function = "FILE:LINE", "forward"
        self._shown: tuple | None = None  # the last `show` arguments
        self.table: tuple[BreakpointInfo, ...] = ()  # the numbered line breakpoints shown
        self._sent: str | None = None  # the break-at box's command, until a snapshot comes

    def set_example(self, example: str, function: str) -> None:
        """The model's own file and line (nanochat.py:187 for nanochat) and function
        (CausalSelfAttention.forward), for the break-at box."""
        if (example, function) == (self.example, self.function):
            return
        self.example, self.function = example, function
        self.query_one("#code-break", Input).placeholder = self._hint(BREAK_HINT)
        if self._shown is not None:
            self.show(*self._shown)

    def _hint(self, template: str) -> str:
        return template.format(example=self.example, function=self.function)

    def compose(self) -> ComposeResult:
        yield Static(self._hint(NOT_PAUSED), id="code-where")
        yield SourceView(id="code-source")
        yield VariablesTable(id="code-vars")
        yield TensorViewer(id="code-viewer")
        yield Static("", id="code-displays")
        yield EvaluationLines(id="code-evals")
        with Horizontal(id="code-inputs"):
            yield Input(
                placeholder=EVAL_HINT,
                id="code-eval",
                compact=True,
                select_on_focus=False,  # g leaves "g " in it to type the index after
            )
            yield Input(placeholder=self._hint(BREAK_HINT), id="code-break", compact=True)

    def on_mount(self) -> None:
        self.query_one("#code-viewer").display = False

    def show(
        self,
        frame: FrameSnapshot | None,
        line_breakpoints: frozenset[str],
        evaluations: tuple[Evaluation, ...],
        tensor_view: TensorView | None,
        displays: tuple[Display, ...] = (),
        table: tuple[BreakpointInfo, ...] = (),
        hit: BreakpointInfo | None = None,
    ) -> None:
        self._shown = (frame, line_breakpoints, evaluations, tensor_view, displays, table, hit)
        self._sent = None  # a snapshot came: the command did not fail (or is not the last)
        self.table = table
        where = self.query_one("#code-where", Static)
        if frame is None:
            where.update(self._hint(NOT_PAUSED))
        else:
            head = Text(f"{frame.where} ", style="bold yellow")
            head.append(f"{frame.function}", style="bold")
            module = (frame.module or "").strip("()")  # the root is `(model)`
            head.append(f" ({module})" if module else "", style="cyan")
            if frame.returned is not None:
                head.append(f"  returned {frame.returned.repr}", style="green")
            if hit is not None and (hit.temporary or len(table) > 1):  # else listed below
                gone = ", deleted (tbreak)" if hit.temporary and hit.error is None else ""
                head.append(f"  breakpoint {hit.number}, hit {hit.hits}{gone}", style="red")
            if hit is not None and hit.error is not None:  # stopped anyway, as pdb does
                head.append(f"  error in its condition: {hit.error}", style="bold red")
            head.append("\n" + frame.stack_line, style="dim")
            where.update(head)
        marks_in = breakpoint_lines(line_breakpoints, frame) if frame else set()
        disabled = frozenset(b.spec for b in table if not b.enabled)
        off = breakpoint_lines(disabled, frame) - marks_in if frame else set()
        self.query_one(SourceView).show(frame, marks_in, off)
        self.query_one(VariablesTable).show(frame.locals if frame else ())
        shown = self.query_one("#code-displays", Static)
        shown.update(displays_text(displays, table))
        shown.display = bool(displays or table)
        self.query_one(EvaluationLines).show(evaluations)
        viewer = self.query_one(TensorViewer)
        viewer.view = tensor_view
        if tensor_view is None and viewer.display:
            self._show_viewer(False)

    def _show_viewer(self, on: bool, focus: bool = True) -> None:
        self.query_one(TensorViewer).display = on
        self.query_one(VariablesTable).display = not on
        if focus:
            (self.query_one(TensorViewer) if on else self.query_one(VariablesTable)).focus()

    def action_toggle_viewer(self) -> None:
        viewer = self.query_one(TensorViewer)
        self._show_viewer(not viewer.display and viewer.view is not None)

    def on_tensor_viewer_goto_asked(self, event: TensorViewer.GotoAsked) -> None:
        event.stop()
        box = self.query_one("#code-eval", Input)
        box.value = "g "
        box.cursor_position = len(box.value)
        box.focus()

    def _goto(self, where: str) -> None:
        """`g 42` (a column) or `g 3,42` (row, column): the viewer scrolls there."""
        parts = [p.strip() for p in where.replace(" ", ",").split(",") if p.strip()]
        if not 1 <= len(parts) <= 2 or not all(p.lstrip("-").isdigit() for p in parts):
            self.notify("g takes a column (g 42) or a row and column (g 3,42)", timeout=4)
            return
        row, col = (0, int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
        viewer = self.query_one(TensorViewer)
        problem = viewer.goto(row, col)
        if problem is not None:
            self.notify(problem, timeout=4)
        else:
            viewer.focus()

    def on_variables_table_tensor_chosen(self, event: VariablesTable.TensorChosen) -> None:
        event.stop()
        self._open_viewer(event.name)

    def _open_viewer(self, expr: str, focus: bool = True) -> None:
        """`focus`: the viewer takes the keys; from the expression box it does not, so the
        next expression typed there is not read as app keys."""
        viewer = self.query_one(TensorViewer)
        viewer.expr = expr
        self._show_viewer(True, focus)
        self.post_message(IntentRequested("tensor_view", "view_tensor", (expr, ())))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        if not text:
            return
        if event.input.id == "code-eval":
            self._expression(text)
        elif not self._break_at(text):
            return  # a mistake, said in one line: the text stays to be fixed
        else:  # the source takes the keys: C runs to the breakpoint, as the hint says
            self.query_one(SourceView).focus()
        event.input.value = ""

    def on_intent_failed(self, event: IntentFailed) -> None:
        """The break-at box's command failed in the engine (its one line is in the status):
        it comes back into the empty box to be fixed."""
        box = self.query_one("#code-break", Input)
        sent, self._sent = self._sent, None
        if event.worker == "line_breakpoint" and sent and not box.value:
            box.value = sent
            box.cursor_position = len(sent)
            box.focus()

    def _expression(self, text: str) -> None:
        command, _, rest = text.partition(" ")
        rest = rest.strip()
        if command == "g" and self.query_one(TensorViewer).display:
            self._goto(rest)
        elif command in ("v", "view") and rest:  # an expression into the viewer
            self._open_viewer(rest, focus=False)
        elif command == "display" and rest:  # pdb's display: at every line pause
            self.post_message(IntentRequested("display", "display", (rest,)))
        elif command == "undisplay":  # by number, by expression, or all of them
            which = int(rest) if rest.isdigit() else rest or None
            self.post_message(IntentRequested("display", "undisplay", (which,)))
        else:  # an expression, !STATEMENT, or pdb's p, pp, whatis, where, bare display
            self.post_message(IntentRequested("evaluate", "evaluate", (text,)))

    def _break_at(self, text: str) -> bool:
        """pdb's `tbreak SPEC`, `break SPEC`, `ignore N COUNT`, `clear N`, `disable N...`,
        `enable N...` and `condition N [EXPR]`; a bare SPEC toggles that breakpoint. False
        for a mistake (said in one line, nothing sent)."""
        command, _, rest = text.partition(" ")
        rest = rest.strip()
        numbers = rest.split()
        if command in ("tbreak", "break", "b") and rest:
            kwargs = {"temporary": command == "tbreak"}
            self._ask("add_line_breakpoint", (rest,), kwargs)
        elif command == "ignore":
            if len(numbers) != 2 or not all(p.isdigit() for p in numbers):
                return self._mistake("ignore takes a breakpoint number and a count: ignore 1 3")
            self._ask("ignore_line_breakpoint", (int(numbers[0]), int(numbers[1])))
        elif command in ("disable", "enable"):
            if not numbers or not all(p.isdigit() for p in numbers):
                return self._mistake(f"{command} takes breakpoint numbers: {command} 1 2")
            on = {"on": command == "enable"}
            self._ask("enable_line_breakpoints", (tuple(map(int, numbers)),), on)
        elif command == "condition":
            number, _, expr = rest.partition(" ")
            if not number.isdigit():
                return self._mistake(
                    "condition takes a breakpoint number and an expression: condition 1 "
                    "i == 2 (without one, the breakpoint stops every time)"
                )
            self._ask("condition_line_breakpoint", (int(number), expr.strip() or None))
        elif command in ("clear", "cl") and rest:
            spec = next((b.spec for b in self.table if str(b.number) == rest), None)
            if spec is None:
                there = ", ".join(str(b.number) for b in self.table) or "none is set"
                return self._mistake(f"clear {rest}: no breakpoint numbered so ({there})")
            self._ask("toggle_line_breakpoint", (spec,))
        else:
            self._ask("toggle_line_breakpoint", (text,))
        self._sent = text
        return True

    def _ask(self, method: str, args: tuple, kwargs: dict | None = None) -> None:
        self.post_message(IntentRequested("line_breakpoint", method, args, kwargs or {}))

    def _mistake(self, note: str) -> bool:
        self.notify(note, severity="error", timeout=4)
        return False
