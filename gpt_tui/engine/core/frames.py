"""Line events in the forward thread: breakpoints at source lines of the model's own code,
line stepping, the paused frame's snapshot and expressions evaluated in that frame.

The shape follows CPython's bdb: one global trace function that answers `None` for every
frame outside the model's files (one call each, nothing per line), a local tracer on the
model's frames, and the four moves (next, into, return, continue) as four small changes
of two fields (`_mode`, `_target`). The events come from line_tracer.py, in the forward
thread only and only where a breakpoint can be hit or a line move is under way
(`sys.monitoring` on Python >= 3.12, `sys.settrace` before).

"The model's files": for gpt-tui's own families, the family's file plus
`models/kv_cache.py` and `models/sampling.py`; for a user's model, the file of its class
and the other `.py` files of that folder. Never torch, never gpt_tui's engine.
"""

from __future__ import annotations

import ast
import functools
import inspect
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import torch
import torch.nn as nn

from ...errors import GptTuiError
from .line_breakpoints import BreakpointError as BreakpointError  # re-exported
from .line_breakpoints import Breakpoints, BreakpointTable, resolve_breakpoints
from .line_tracer import make_backend
from .line_values import Value as Value  # re-exported
from .line_values import one_line, summarise
from .model_access import unwrap_model
from .tensors import TensorView, view_tensor

LINE_MOVES = ("next", "into", "return", "continue")
_OUR_MODELS = Path(__file__).resolve().parents[2] / "models"
SAMPLING_FILE = str(_OUR_MODELS / "sampling.py")  # the one sampling pipeline


class EvaluateError(GptTuiError):
    """An expression asked for where there is no frame to evaluate it in."""


@dataclass(frozen=True)
class StackEntry:
    file: str
    line: int
    function: str  # qualified: `CausalSelfAttention.forward`
    module: str | None  # the module path of the frame's `self`, if it is a module


@dataclass(frozen=True)
class SourceLine:
    number: int
    text: str
    current: bool


@dataclass(frozen=True)
class FrameSnapshot:
    """A pause at a line: plain data, valid after the pass moves on."""

    file: str  # base name, `nanogpt.py`
    path: str  # full path
    line: int
    function: str
    module: str | None
    reason: str  # "breakpoint" or "step"
    stack: tuple[StackEntry, ...]  # outermost first; the last is this frame
    source: tuple[SourceLine, ...]  # the function's lines, the current one marked
    locals: tuple[Value, ...]
    returned: Value | None = None  # what the function just left gave back (next/return)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def stack_line(self) -> str:
        return " → ".join(entry.function for entry in self.stack)


class ExpressionInterrupted(BaseException):
    """Raised in the forward thread to stop a long expression (a cancel or a quit)."""


@dataclass(frozen=True)
class Evaluation:
    """An expression evaluated at a pause: its value, or the one-line error it raised."""

    expr: str
    value: Value | None
    error: str | None = None


def model_files(model: nn.Module) -> tuple[str, ...]:
    """The model's own source files, canonical (resolved) paths: its class's file first."""
    try:
        source = Path(inspect.getfile(type(unwrap_model(model)))).resolve()
    except (TypeError, OSError):
        return ()
    if source.parent == _OUR_MODELS:
        files = {source, _OUR_MODELS / "kv_cache.py"}
    else:
        files = {p.resolve() for p in source.parent.glob("*.py")} | {source}
    files.add(Path(SAMPLING_FILE))  # every model's tokens are sampled there
    others = sorted(str(p) for p in files - {source} if p.is_file())
    return (str(source), *others)


@functools.lru_cache(maxsize=64)
def _statement_ends(path: str) -> dict[int, int]:
    """First line -> last line of each simple statement spanning several lines."""
    ends: dict[int, int] = {}
    for node in ast.walk(ast.parse(Path(path).read_text(), path)):
        simple = isinstance(node, ast.stmt) and not hasattr(node, "body")
        if simple and node.end_lineno and node.end_lineno > node.lineno:
            ends[node.lineno] = max(ends.get(node.lineno, 0), node.end_lineno)
    return ends


def evaluate_in(frame: FrameType, expr: str) -> tuple[Evaluation, Any]:
    """pdb's `p expr` in `frame` (call it in the frame's own thread): the evaluation and
    the raw result (None after an error). `!stmt` runs a statement there, as pdb's `!`
    does; names it assigns keep their new value when the pass goes on."""
    if expr.lstrip().startswith("!"):
        return _execute_in(frame, expr)
    try:
        result = eval(compile(expr, "<expression>", "eval"), frame.f_globals, frame.f_locals)
    except ExpressionInterrupted:
        raise
    except BaseException as err:  # the user's code, even `exit()`: one line, still paused
        return Evaluation(expr, None, one_line(err)), None
    return Evaluation(expr, summarise([(expr, result)])[0]), result


def _execute_in(frame: FrameType, expr: str) -> tuple[Evaluation, Any]:
    source = expr.lstrip()[1:].strip()
    try:
        tree = ast.parse(source, "<statement>", "exec")
        local = frame.f_locals  # one mapping: written back to the frame below
        exec(compile(tree, "<statement>", "exec"), frame.f_globals, local)
    except ExpressionInterrupted:
        raise
    except BaseException as err:
        return Evaluation(expr, None, one_line(err)), None
    _write_back(frame, local)
    assigned = [
        t.id
        for node in tree.body
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign))
        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(t, ast.Name)
    ]
    if assigned and assigned[-1] in local:
        name = assigned[-1]
        return Evaluation(expr, summarise([(name, local[name])])[0]), local[name]
    return Evaluation(expr, Value(expr, "value", "done")), None


def _write_back(frame: FrameType, local: Any) -> None:
    """Make assignments to `frame.f_locals` stick. From 3.13 the mapping writes through
    (PEP 667); before, its dict is copied into the frame's fast locals here (a trace
    function's return would do it too, but sys.monitoring's would not)."""
    if sys.version_info >= (3, 13) or not isinstance(local, dict):
        return
    import ctypes

    ctypes.pythonapi.PyFrame_LocalsToFast(ctypes.py_object(frame), ctypes.c_int(0))


def view_in_frame(
    frame: FrameType, expr: str, fixed: Sequence[int] = (), **window: int
) -> TensorView:
    """The tensor viewer's data for `expr` evaluated in `frame` (in the frame's thread)."""
    evaluation, value = evaluate_in(frame, expr)
    if evaluation.error is not None:
        raise EvaluateError(f"{expr}: {evaluation.error}")
    if not isinstance(value, torch.Tensor):
        shown = evaluation.value.repr if evaluation.value else ""
        raise EvaluateError(f"{expr} is not a tensor: {shown}")
    return view_tensor(value, fixed, **window)


class LineTracer:
    """bdb's dispatch for one forward thread: decides at each line whether to pause."""

    def __init__(
        self, model: nn.Module, pause: Callable[[FrameType, str], None], outside: bool = True
    ) -> None:
        """`outside`: the thread runs model code outside the model's forward too (a
        generation step's sampling), which breakpoints there must see."""
        self.files = model_files(model)
        self._file_set = frozenset(self.files)
        self._pause = pause
        self._canonical: dict[str, str | None] = {}
        self._modules = {id(m): name or "(model)" for name, m in model.named_modules()}
        self.breakpoints = Breakpoints(frozenset(), frozenset(), frozenset())
        self.table: BreakpointTable | None = None  # numbers, hits, ignore counts, tbreaks
        self._bp_codes: dict[CodeType, bool] = {}  # code -> holds a breakpoint
        self._mode = "continue"  # "step": any model line; "frame": a line of _target
        self._target: FrameType | None = None
        self._entered: FrameType | None = None  # a function breakpoint's frame, before line 1
        self._leaving: FrameType | None = None  # the frame a next/return move started in
        self._returned: tuple[str, object] | None = None  # (function, value) it returned
        self.frame: FrameType | None = None  # the frame paused at, while paused
        # (frame, first, last line) of the statement last paused at: Python reports its
        # first line again when a call spanning several lines runs; that is no new hit.
        self._statement: tuple[FrameType, int, int] | None = None
        self._backend = make_backend(self, model, outside)
        self.backend = self._backend.name

    @property
    def armed(self) -> bool:
        return self._mode != "continue" or bool(self.breakpoints.specs)

    def set_breakpoints(self, specs: Iterable[str]) -> Breakpoints:
        self.breakpoints = resolve_breakpoints(specs, self.files)
        self._bp_codes.clear()
        return self.breakpoints

    # -- the four moves: small changes of (_mode, _target) ---------------------------------

    def set_step(self) -> None:
        self._mode, self._target = "step", None

    def set_next(self) -> None:
        if self.frame is None:
            return self.set_step()
        self._mode, self._target, self._leaving = "frame", self.frame, self.frame

    def set_return(self) -> None:
        caller = self._model_caller(self.frame) if self.frame is not None else None
        if caller is None:
            return self.set_continue()
        self._mode, self._target, self._leaving = "frame", caller, self.frame

    def set_continue(self) -> None:
        self._mode, self._target = "continue", None

    # -- installing (forward thread only) -------------------------------------------------

    def sync(self) -> None:
        """Arm or disarm line events to match the moves and breakpoints (in the forward
        thread); see line_tracer.py for where each backend traces."""
        self._backend.sync()

    def disarm(self) -> None:
        """Remove every line event of this tracer (in the forward thread, at its end)."""
        self._backend.disarm()

    @property
    def stepping(self) -> bool:
        return self._mode != "continue"

    def breakpoint_sites(self) -> tuple[frozenset[tuple[str, int]], frozenset[tuple[str, str]]]:
        return self.breakpoints.lines, self.breakpoints.functions

    def _canon(self, filename: str) -> str | None:
        path = self._canonical.get(filename, "")
        if path == "":
            resolved = str(Path(filename).resolve()) if not filename.startswith("<") else ""
            path = self._canonical[filename] = resolved if resolved in self._file_set else None
        return path

    def model_code(self, code: CodeType) -> bool:
        return self._canon(code.co_filename) is not None

    def holds_breakpoint(self, code: CodeType) -> bool:
        held = self._bp_codes.get(code)
        if held is None:
            path = self._canon(code.co_filename)
            bps = self.breakpoints
            held = any(p == path and code.co_qualname == q for p, q in bps.functions) or any(
                p == path and line in _lines_of(code) for p, line in bps.lines
            )
            self._bp_codes[code] = held
        return held

    def _model_caller(self, frame: FrameType) -> FrameType | None:
        caller = frame.f_back
        while caller is not None and not self.model_code(caller.f_code):
            caller = caller.f_back
        return caller

    # -- dispatch -----------------------------------------------------------------------

    def global_trace(self, frame: FrameType, event: str, arg: object) -> Any:
        if event != "call" or not self.model_code(frame.f_code):
            return None  # other files: no local tracer, nothing per line
        if self._mode == "continue" and not self.holds_breakpoint(frame.f_code):
            return None
        if (self._canon(frame.f_code.co_filename), frame.f_code.co_qualname) in (
            self.breakpoints.functions
        ):
            self._entered = frame
        return self.local_trace

    def local_trace(self, frame: FrameType, event: str, arg: object) -> Any:
        if event == "line":
            reason = self._stop_reason(frame)
            if reason is not None:
                self._mode, self._target, self._entered = "continue", None, None
                self._leaving = None
                line = frame.f_lineno
                path = frame.f_code.co_filename
                self._statement = (frame, line, _statement_ends(path).get(line, line))
                self.frame = frame
                try:
                    self._pause(frame, reason)
                finally:
                    self.frame = None
        elif event == "return":
            if self._statement is not None and frame is self._statement[0]:
                self._statement = None  # and the frame's locals may go
            if frame is self._leaving:
                self._returned = (frame.f_code.co_qualname, arg)
            if frame is self._target:  # `next` past the frame's end: pause in the caller
                self._target = self._model_caller(frame)
                if self._target is None:
                    self._mode = "continue"
        return self.local_trace

    def _stop_reason(self, frame: FrameType) -> str | None:
        path = self._canon(frame.f_code.co_filename)
        bps = self.breakpoints
        if frame is self._entered:
            self._entered = None
            if bps.stops((path, frame.f_code.co_qualname), frame, self.table):
                return "breakpoint"
        line = frame.f_lineno
        same = self._statement
        if same is not None and same[0] is frame:
            if same[1] <= line <= same[2]:
                # still in the statement paused at (a call's argument lines, its first
                # line again): no new hit, and a move goes past it in one press
                return None
            self._statement = None
        if (path, line) in bps.lines and bps.stops((path, line), frame, self.table):
            return "breakpoint"
        return self._stepping(frame)

    def _stepping(self, frame: FrameType) -> str | None:
        if self._mode == "step" or (self._mode == "frame" and frame is self._target):
            return "step"
        return None

    # -- the snapshot -------------------------------------------------------------------

    def snapshot(self, frame: FrameType, reason: str) -> FrameSnapshot:
        stack: list[StackEntry] = []
        f: FrameType | None = frame
        while f is not None:
            if self.model_code(f.f_code):
                stack.append(
                    StackEntry(
                        Path(f.f_code.co_filename).name,
                        f.f_lineno,
                        f.f_code.co_qualname,
                        self._module_of(f),
                    )
                )
            f = f.f_back
        stack.reverse()
        names = [(k, v) for k, v in frame.f_locals.items() if not k.startswith("__")]
        returned, self._returned = self._returned, None
        if returned is not None:
            names.append((f"{returned[0]} returned", returned[1]))
        values = summarise(names)  # one transfer for the locals and the returned value
        here = stack[-1]
        return FrameSnapshot(
            file=here.file,
            path=frame.f_code.co_filename,
            line=frame.f_lineno,
            function=here.function,
            # a plain function (nanochat's norm) runs in the module of its nearest caller
            module=next((e.module for e in reversed(stack) if e.module), None),
            reason=reason,
            stack=tuple(stack),
            source=_source(frame),
            locals=values[: len(values) - (returned is not None)],
            returned=values[-1] if returned is not None else None,
        )

    def reread(self, frame: FrameType, shown: FrameSnapshot) -> FrameSnapshot:
        """`shown` with the frame's locals read again (after a `!stmt` changed them); in
        the frame's thread."""
        names = [(k, v) for k, v in frame.f_locals.items() if not k.startswith("__")]
        return replace(shown, locals=summarise(names))

    def _module_of(self, frame: FrameType) -> str | None:
        owner = frame.f_locals.get("self")
        return self._modules.get(id(owner)) if isinstance(owner, nn.Module) else None


def _lines_of(code: CodeType) -> set[int]:
    return {line for _, _, line in code.co_lines() if line is not None}


def _source(frame: FrameType) -> tuple[SourceLine, ...]:
    try:
        lines, first = inspect.getsourcelines(frame.f_code)
    except (OSError, TypeError):
        return ()
    first = max(first, 1)
    return tuple(
        SourceLine(first + i, text.rstrip("\n"), first + i == frame.f_lineno)
        for i, text in enumerate(lines)
    )
