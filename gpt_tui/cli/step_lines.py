"""How `gpt-tui step --break-at` prints a pause at a line: where, the source around it, the
locals, the expressions evaluated there and, with --show, a 2-D slice of a tensor."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from . import render

if TYPE_CHECKING:
    from ..engine.core.debug_state import DebugState
    from ..engine.core.frames import Evaluation, FrameSnapshot, Value
    from ..engine.core.tensors import TensorView

CONTEXT = 4  # source lines shown above and below the current one
SLICE_ROWS = 12
SLICE_COLS = 6  # at 80 columns; more on a wider terminal


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
    _print_source(frame)
    _print_locals(frame.locals)
    for evaluation in state.evaluations:
        shown = evaluation.error or _value_line(evaluation.value)
        console.print(f"[bold]>>>[/] {evaluation.expr}", highlight=False)
        console.print(f"  {shown}", markup=False)
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
    shape = list(value.shape or ())
    if not shape:
        return f"tensor({render.fmt_stat(value.mean)}) {value.dtype} {value.device}"
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
