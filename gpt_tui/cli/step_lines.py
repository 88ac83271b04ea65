"""`gpt-tui step`'s line debugging, as pdb's: the line breakpoints (--break-at, --tbreak,
--ignore, --disable), the display expressions (--display), the stops (--stops) and how a pause at a
line prints: where, the source around it, the locals, the displays, the expressions
evaluated there and, with --show, a 2-D slice of a tensor."""

from __future__ import annotations

import argparse
import dataclasses
import math
from typing import TYPE_CHECKING, Any

from . import render
from .arg_types import whole

if TYPE_CHECKING:
    from ..engine.core.debug_state import DebugState, Display
    from ..engine.core.frames import Evaluation, FrameSnapshot, Value
    from ..engine.core.tensors import TensorView
    from ..engine.debugger import Debugger

CONTEXT = 4  # source lines shown above and below the current one
SLICE_ROWS = 12
SLICE_COLS = 6  # at 80 columns; more on a wider terminal


class Temporary(str):
    """A --tbreak spec: a line breakpoint removed at its first stop."""


def add_args(p: argparse.ArgumentParser) -> None:
    """`step`'s pdb options beyond --break-at and --eval (parser.py adds those)."""
    p.add_argument(
        "--tbreak",
        dest="line_breakpoints",
        action="append",
        type=Temporary,
        default=[],
        metavar="FILE:LINE|FUNCTION",
        help="as --break-at, but removed at its first stop (pdb's tbreak; repeatable)",
    )
    p.add_argument(
        "--ignore",
        dest="ignores",
        action="append",
        nargs=2,
        type=whole(0),
        default=[],
        metavar=("NUMBER", "COUNT"),
        help="pass the next COUNT hits of line breakpoint NUMBER (pdb's ignore; --break-at "
        "and --tbreak are numbered from 1 in the order given)",
    )
    p.add_argument(
        "--disable",
        dest="disables",
        action="append",
        type=whole(1),
        default=[],
        metavar="NUMBER",
        help="keep line breakpoint NUMBER numbered but stopping nowhere (pdb's disable; "
        "repeatable): the others keep their numbers",
    )
    p.add_argument(
        "--display",
        dest="displays",
        action="append",
        default=[],
        metavar="EXPR",
        help="evaluate EXPR at every stop at a line, marked when it changed (pdb's display; "
        "repeatable)",
    )
    p.add_argument(
        "--stops",
        type=whole(1),
        default=1,
        metavar="N",
        help="after a stop, continue to the next, up to N stops, each printed (--eval and "
        "--show run at each; default 1)",
    )


def set_up(debugger: Debugger, args: argparse.Namespace) -> None:
    """The line breakpoints, numbered in the order given, their ignore counts, the ones
    disabled and the display expressions."""
    for spec in args.line_breakpoints:
        debugger.add_line_breakpoint(spec, temporary=isinstance(spec, Temporary))
    for number, count in args.ignores:
        debugger.ignore_line_breakpoint(number, count)
    if args.disables:
        debugger.enable_line_breakpoints(args.disables, on=False)
    for expr in args.displays:
        debugger.display(expr)


def stops(
    debugger: Debugger, state: DebugState, args: argparse.Namespace
) -> list[tuple[DebugState, list[str]]]:
    """Each stop with what --eval printed there (notes: stdout stays the output): at a
    line, --eval and --show run; then the pass continues (the app's `c`) to the next,
    until --stops or the end of the pass."""
    from ..io.user_import import captured_output

    found: list[tuple[DebugState, list[str]]] = []
    while True:
        printed: list[str] = []
        if state.frame is not None:
            with captured_output(printed, "--eval"):
                for expr in args.evals:
                    state = debugger.evaluate(expr)
            if args.show:
                state = debugger.view_tensor(args.show)
        found.append((state, printed))
        if len(found) >= args.stops or state.status != "paused":
            return found
        state = debugger.step("continue")


def pause_json(
    state: DebugState, show: str | None, notes: list[str], events: list[dict[str, Any]]
) -> dict[str, Any]:
    frame = state.frame
    assert frame is not None
    data = dict(
        stopped=True,
        reason=frame.reason,
        frame=frame_json(frame),
        breakpoint=state.hit,
        breakpoints=state.line_table,
        display=[display_json(d) for d in state.displays],
        eval=[evaluation_json(e) for e in state.evaluations],
        event=state.event,
        events=events,
    )
    if show and state.tensor_view is not None:
        data["show"] = dict(expr=show, **dataclasses.asdict(state.tensor_view))
    data["notes"] = notes
    return data


def display_json(display: Display) -> dict[str, Any]:
    """`{"number", "expr", "changed", "value": {...} | null, "previous": {...} | null}`."""
    ev, before = display.evaluation, display.previous
    return dict(
        number=display.number,
        expr=display.expr,
        changed=display.changed,
        value=evaluation_json(ev) if ev is not None else None,
        previous=evaluation_json(before) if before is not None else None,
    )


def frame_json(frame: FrameSnapshot) -> dict[str, Any]:
    return dict(
        file=frame.file,
        path=frame.path,
        line=frame.line,
        function=frame.function,
        module=frame.module,
        reason=frame.reason,
        stack=frame.stack,
        source=[dict(line=s.number, text=s.text, current=s.current) for s in frame.source],
        locals=frame.locals,
    )


def evaluation_json(evaluation: Evaluation) -> dict[str, Any]:
    """`{"expr", "kind", "shape", "repr", ..., "error"}`: the value's fields, flat."""
    out: dict[str, Any] = dict(expr=evaluation.expr, kind="error", error=evaluation.error)
    if evaluation.value is not None:
        fields = dataclasses.asdict(evaluation.value)
        del fields["name"]  # the expression itself
        out.update(fields)
    return out


def print_pause(state: DebugState, show: str | None) -> None:
    frame = state.frame
    assert frame is not None
    console = render.console()
    why = "line breakpoint" if frame.reason == "breakpoint" else "line step"
    module = f" · {frame.module}" if frame.module else ""
    console.print(f"[bold]stopped[/] at [bold]{frame.where}[/] ({why})", highlight=False)
    console.print(f"  in {frame.function}{module}", markup=False, highlight=False)
    console.print(f"  stack: {frame.stack_line}", markup=False, highlight=False)
    hit = state.hit
    if hit is not None:
        gone = " · deleted" if hit.temporary and hit.error is None else ""
        console.print(f"  breakpoint {hit.line}{gone}", markup=False, highlight=False)
    if hit is not None and hit.error is not None:  # pdb stops then too, and says so
        text = f"  error in its condition: {hit.error} (stopped, as pdb does)"
        console.print(text, markup=False, highlight=False)
    _print_source(frame)
    _print_locals(frame.locals)
    for display in state.displays:  # as pdb prints them: `display EXPR: VALUE  [old: OLD]`
        ev = display.evaluation
        shown = (ev.error or _value_line(ev.value)) if ev is not None else ""
        old = display.previous
        was = f"  [old: {old.error or _value_line(old.value)}]" if old is not None else ""
        console.print(f"display {display.expr}: {shown}{was}", markup=False, highlight=False)
    for evaluation in state.evaluations:
        shown = evaluation.error or _value_line(evaluation.value)
        console.print(f"[bold]>>>[/] {evaluation.expr}", highlight=False)
        for line in shown.split("\n"):  # `where` is a line per frame
            console.print(f"  {line}", markup=False)
    if show is not None and state.tensor_view is not None:
        _print_view(show, state.tensor_view)


def _print_source(frame: FrameSnapshot) -> None:
    console = render.console()
    current = next((i for i, s in enumerate(frame.source) if s.current), 0)
    lines = frame.source[max(current - CONTEXT, 0) : current + CONTEXT + 1]
    width = len(str(lines[-1].number)) if lines else 1
    console.rule(frame.file)
    for s in lines:
        mark = "->" if s.current else "  "
        text = f"{s.number:>{width}} {mark} {s.text}"
        console.print(text, markup=False, highlight=False, no_wrap=True, overflow="ellipsis")


def _value_line(value: Value | None) -> str:
    if value is None or value.kind != "tensor":
        return value.repr if value is not None else ""
    from ..engine.core.line_values import SMALL_NUMEL

    shape = list(value.shape or ())
    if math.prod(shape) <= SMALL_NUMEL:  # the repr lists its values
        return value.repr
    return (
        f"tensor{shape} {value.dtype} {value.device}  mean {render.fmt_stat(value.mean)}  "
        f"std {render.fmt_stat(value.std)}  min {render.fmt_stat(value.min)}  "
        f"max {render.fmt_stat(value.max)}  NaN {value.nan}  Inf {value.inf}"
    )


def _print_locals(values: tuple[Value, ...]) -> None:
    table = render.table("Locals")
    for col, just in [("name", "left"), ("value", "left"), ("mean", "right"), ("std", "right")]:
        table.add_column(col, justify=just, no_wrap=col != "value")
    table.add_column("min", justify="right", no_wrap=True)
    table.add_column("max", justify="right", no_wrap=True)
    for v in values:
        if v.kind != "tensor":
            table.add_row(v.name, v.repr, "", "", "", "")
            continue
        flags = "".join(
            [f" NaN {v.nan}" if v.nan else "", f" Inf {v.inf}" if v.inf else ""]
            + [" grad" if v.requires_grad else ""]
        )
        shape = "×".join(map(str, v.shape or ())) or "scalar"
        stats = [render.fmt_stat(x) for x in (v.mean, v.std, v.min, v.max)]
        table.add_row(v.name, f"{shape} {v.dtype}{flags}", *stats)
    render.console().print(table)


def _print_view(expr: str, view: TensorView) -> None:
    console = render.console()
    cols = SLICE_COLS if render.narrow() or console.width < 100 else SLICE_COLS * 2
    values = view.values[:SLICE_ROWS, :cols]
    lead = ", ".join(map(str, view.fixed))
    where = f"[{lead}, :, :]" if lead else ""
    rows_total, cols_total = view.slice_shape
    table = render.table(
        f"{expr}{where}: rows {view.row_start}..{view.row_start + len(values) - 1} of "
        f"{rows_total}, columns {view.col_start}..{view.col_start + values.shape[1] - 1} "
        f"of {cols_total}"
    )
    table.add_column("row", justify="right", no_wrap=True)
    for j in range(values.shape[1]):
        table.add_column(str(view.col_start + j), justify="right", no_wrap=True)
    table.add_column("‖row‖", justify="right", no_wrap=True)
    for i, row in enumerate(values):
        norm = view.row_norms[view.row_start + i]
        cells = [render.fmt_stat(float(x)) for x in row]
        table.add_row(str(view.row_start + i), *cells, render.fmt_stat(float(norm)))
    console.print(table)
    console.print(f"  {view.summary}", markup=False, highlight=False)
