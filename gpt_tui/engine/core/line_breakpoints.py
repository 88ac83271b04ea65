"""Line breakpoints of the model's code, resolved: `FILE:LINE` or a function's name,
each with an optional pdb-style condition (`nanogpt.py:96 if layer == 2`), evaluated in
the frame when the line is reached."""

from __future__ import annotations

import ast
import dis
import functools
import inspect
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from types import CodeType, FrameType

from ...errors import GptTuiError
from .line_values import one_line


class BreakpointError(GptTuiError, ValueError):
    """A line breakpoint that names no line or function of the model's code."""


def _functions(path: str) -> list[str]:
    """The qualified name (as `co_qualname` spells it) of every function in the file."""
    return [qual for qual, _ in _function_nodes(path)]


def _function_nodes(path: str) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    tree = ast.parse(Path(path).read_text(), path)
    found: list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                qual = prefix + child.name
                found.append((qual, child))
                visit(child, qual + ".<locals>.")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")

    visit(tree, "")
    return found


# Attention kernels a model's code calls: torch's, and FlashAttention's API (nanochat's
# gpt.py calls `flash_attn.flash_attn_func` of its flash_attention.py since 2026).
ATTENTION_KERNELS = frozenset(
    {"scaled_dot_product_attention", "flash_attn_func", "flash_attn_with_kvcache"}
)


def break_examples(files: tuple[str, ...]) -> tuple[str, str]:
    """A `FILE:LINE` and a function of the model's own code to show as examples: the
    attention kernel call and the function that makes it (the first file, the model's,
    before the files beside it), else the first `forward` and its first statement.
    ("", "") without a function."""
    fallback: tuple[str, str] = ("", "")
    for path in files:
        try:
            functions = _function_nodes(path)
        except (OSError, SyntaxError, ValueError):
            continue
        for qual, node in functions:
            calls = [
                n.lineno
                for n in ast.walk(node)
                if isinstance(n, ast.Call) and _called(n) in ATTENTION_KERNELS
            ]
            if calls:
                return f"{Path(path).name}:{min(calls)}", qual
            if not fallback[1] and qual.endswith(".forward") and node.body:
                fallback = (f"{Path(path).name}:{node.body[0].lineno}", qual)
    return fallback


def _called(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


_PROLOGUE = frozenset({"RESUME", "MAKE_CELL", "COPY_FREE_VARS", "RETURN_GENERATOR", "CACHE"})


@functools.lru_cache(maxsize=64)
def _code_lines(path: str, mtime: float) -> frozenset[int]:
    """Lines that produce line events when the model runs: those of the file's functions,
    not a `def` line (its prologue raises none) nor the module's or a class's own lines
    (run once, at import). `mtime` keys the cache to the file's version."""
    lines: set[int] = set()
    stack = _consts(compile(Path(path).read_text(), path, "exec"))
    while stack:
        code = stack.pop()
        stack.extend(_consts(code))
        if not code.co_flags & inspect.CO_NEWLOCALS:
            continue  # a class body (and a module): not run by a forward
        for instruction in dis.get_instructions(code):
            line = instruction.positions.lineno if instruction.positions else None
            if line and instruction.opname not in _PROLOGUE:
                lines.add(line)
    return frozenset(lines)


def _length(path: str) -> int:
    return len(Path(path).read_text().splitlines())


def _consts(code: CodeType) -> list[CodeType]:
    return [c for c in code.co_consts if isinstance(c, CodeType)]


def _nearest(lines: frozenset[int], line: int) -> list[int]:
    """The closest line with code before `line` and the closest after."""
    before = max((n for n in lines if n < line), default=None)
    after = min((n for n in lines if n > line), default=None)
    return [n for n in (before, after) if n is not None]


@dataclass(frozen=True)
class BreakpointInfo:
    """One numbered line breakpoint, as pdb's `break` lists it."""

    number: int  # pdb's: given in order, never reused
    spec: str  # `FILE:LINE` or `FUNCTION`, with its ` if COND`
    temporary: bool = False  # pdb's tbreak: removed at its first stop
    ignore: int = 0  # hits still to pass without stopping (pdb's ignore)
    hits: int = 0  # times reached (its condition tested), in every pass so far
    enabled: bool = True  # pdb's disable: listed, but neither stops nor counts hits
    # at the stop it made (a pause's hit only): the error its condition raised there;
    # pdb stops then too and says so
    error: str | None = None

    @property
    def line(self) -> str:
        """`1 tbreak nanogpt.py:96 · hit 2 · ignore next 1 · disabled`: pdb's `break`
        listing."""
        text = f"{self.number} {'tbreak' if self.temporary else 'break'} {self.spec}"
        text += f" · hit {self.hits}" if self.hits else ""
        text += f" · ignore next {self.ignore}" if self.ignore else ""
        return text + ("" if self.enabled else " · disabled")


class BreakpointTable:
    """pdb's numbered breakpoints: each spec once, numbered from 1 in the order set (never
    reused), with its hit count, the hits still to ignore, whether it is temporary and
    whether it is enabled.

    The forward thread counts hits (`stops`) during a move while the Debugger waits for
    it; the Debugger reads the table at the pause. The lock keeps each read whole."""

    def __init__(self) -> None:
        self._rows: dict[str, BreakpointInfo] = {}  # spec -> row, in number order
        self._next = 1
        self._lock = threading.Lock()
        self._hit: BreakpointInfo | None = None  # the one that stopped the pass last

    def view(self) -> tuple[BreakpointInfo, ...]:
        with self._lock:
            return tuple(self._rows.values())

    @property
    def specs(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._rows)

    @property
    def enabled(self) -> frozenset[str]:
        """The specs that stop: only these arm the line tracer."""
        with self._lock:
            return frozenset(s for s, r in self._rows.items() if r.enabled)

    def set(self, specs: Iterable[str]) -> None:
        """Exactly these specs: the ones kept keep their numbers and counts."""
        wanted = list(dict.fromkeys(s.strip() for s in specs))
        with self._lock:
            self._rows = {s: r for s, r in self._rows.items() if s in wanted}
        for spec in wanted:
            if spec not in self._rows:
                self.add(spec)

    def add(self, spec: str, temporary: bool = False) -> BreakpointInfo:
        """A new breakpoint; one already set keeps its number and becomes (or stops being)
        temporary."""
        spec = spec.strip()
        with self._lock:
            row = self._rows.get(spec)
            if row is None:
                row, self._next = BreakpointInfo(self._next, spec), self._next + 1
            row = self._rows[spec] = replace(row, temporary=temporary)
            return row

    def find(self, number: int) -> BreakpointInfo:
        """The breakpoint numbered `number`; one line naming those there are if none."""
        with self._lock:
            for row in self._rows.values():
                if row.number == number:
                    return row
            there = ", ".join(str(r.number) for r in self._rows.values()) or "none is set"
        raise BreakpointError(f"no line breakpoint number {number} (numbers: {there})")

    def ignore(self, number: int, count: int) -> BreakpointInfo:
        """pdb's `ignore N COUNT`: its next `count` hits pass (0: stop at the next)."""
        if count < 0:
            raise BreakpointError(f"ignore {number} {count}: the count must be 0 or more")
        row = self.find(number)
        with self._lock:
            row = self._rows[row.spec] = replace(row, ignore=count)
        return row

    def enable(self, numbers: Iterable[int], on: bool) -> tuple[BreakpointInfo, ...]:
        """pdb's `enable N...` (`on`) and `disable N...`. One unknown number changes none."""
        rows = [self.find(n) for n in dict.fromkeys(numbers)]
        if not rows:
            verb = "enable" if on else "disable"
            raise BreakpointError(f"{verb} takes breakpoint numbers, e.g. '{verb} 1 2'")
        with self._lock:
            for row in rows:
                self._rows[row.spec] = replace(self._rows[row.spec], enabled=on)
            return tuple(self._rows[row.spec] for row in rows)

    def condition(self, number: int, expr: str | None) -> BreakpointInfo:
        """pdb's `condition N [EXPR]`: the breakpoint stops only where EXPR holds (none:
        always), keeping its number, hits, ignore count and whether it is temporary. Its
        spec becomes `WHERE if EXPR`."""
        row = self.find(number)
        where = row.spec.partition(" if ")[0].strip()
        expr = (expr or "").strip()
        _check_condition(
            expr,
            f"condition {number} {expr}: not a Python expression",
            f"write condition N EXPR, e.g. 'condition {number} i == 2'",
        )
        spec = f"{where} if {expr}" if expr else where
        with self._lock:
            other = self._rows.get(spec)
            if other is not None and other.number != number:
                raise BreakpointError(
                    f"condition {number}: breakpoint {other.number} is {spec} already; "
                    f"clear one of them first"
                )
            row = replace(self._rows[row.spec], spec=spec)
            self._rows = {
                (spec if r.number == number else s): (row if r.number == number else r)
                for s, r in self._rows.items()
            }
            return row

    def take_hit(self) -> BreakpointInfo | None:
        """The breakpoint the pass last stopped at (once)."""
        with self._lock:
            hit, self._hit = self._hit, None
            return hit

    def stops(self, candidates: Iterable[tuple[str, str | None]], frame: FrameType) -> bool:
        """bdb's `effective`: the breakpoints of the site reached, in number order, each
        counting a hit; the first whose condition holds (or raises) stops, unless it still
        has hits to ignore. A temporary one that stops is removed (not when its condition
        raised: pdb keeps it then; the hit carries the error). A spec not in the table
        (T's own stop), or disabled there, just stops."""
        with self._lock:
            rows = self._rows
            order = sorted(candidates, key=lambda c: rows[c[0]].number if c[0] in rows else 0)
        for spec, condition in order:
            with self._lock:
                row = self._rows.get(spec)
                if row is not None and row.enabled:
                    row = self._rows[spec] = replace(row, hits=row.hits + 1)
                else:
                    row = None
            held, error = _holds(condition, frame)
            if error is not None:  # the condition raised: stop, as pdb does, and say why
                self._stopped(row if row is None else replace(row, error=error), remove=False)
                return True
            if not held:
                continue
            if row is not None and row.ignore > 0:
                with self._lock:
                    self._rows[spec] = replace(row, ignore=row.ignore - 1)
                continue
            self._stopped(row, remove=row is not None and row.temporary)
            return True
        return False

    def _stopped(self, row: BreakpointInfo | None, remove: bool) -> None:
        with self._lock:
            self._hit = row
            if remove and row is not None:
                self._rows.pop(row.spec, None)


def _check_condition(expr: str, problem: str, fix: str) -> None:
    """One line naming the problem and the fix when a condition does not parse."""
    try:
        compile(expr or "True", "<condition>", "eval")
    except SyntaxError as err:
        raise BreakpointError(f"{problem} ({err.msg}); {fix}") from None


def _holds(condition: str | None, frame: FrameType) -> tuple[bool, str | None]:
    """A breakpoint's condition in `frame`, and the one-line error if it raised (it
    holds then: pdb stops rather than miss a stop)."""
    if condition is None:
        return True, None
    try:
        return bool(eval(condition, frame.f_globals, frame.f_locals)), None
    except Exception as err:
        return True, one_line(err)


@dataclass(frozen=True)
class Breakpoints:
    """Resolved line breakpoints: (path, line) pairs and qualified function names."""

    specs: frozenset[str]
    lines: frozenset[tuple[str, int]]
    functions: frozenset[tuple[str, str]]  # (path, qualified name)
    # (path, line or qualified name) -> each spec there and its condition (None: none)
    conditions: tuple[tuple[tuple[str, int | str], str, str | None], ...] = ()

    def stops(
        self, site: tuple[str, int | str], frame: FrameType, table: BreakpointTable | None
    ) -> bool:
        """Whether reaching `site` stops: pdb's conditions, and with `table` its ignore
        counts, hit counts and temporary breakpoints."""
        candidates = [(spec, c) for s, spec, c in self.conditions if s == site]
        if table is not None:
            return table.stops(candidates, frame)
        return any(_holds(c, frame)[0] for _, c in candidates) or not candidates

    def in_file(self, path: str) -> bool:
        """Whether any of them stops in the file at `path` (canonical)."""
        return any(p == path for p, _ in self.lines) or any(p == path for p, _ in self.functions)


def resolve_breakpoints(specs: Iterable[str], files: tuple[str, ...]) -> Breakpoints:
    """Check each `FILE:LINE` or `FUNCTION` against the model's files; one error names
    the files searched when a spec matches nothing."""
    lines: set[tuple[str, int]] = set()
    functions: set[tuple[str, str]] = set()
    conditions: list[tuple[tuple[str, int | str], str, str | None]] = []
    specs = frozenset(s.strip() for s in specs)
    searched = ", ".join(Path(f).name for f in files) or "(no source file found)"
    for whole in sorted(specs):
        spec, sep, condition = (part.strip() for part in f"{whole} ".partition(" if "))
        if sep and not condition:
            raise BreakpointError(
                f"breakpoint {whole!r}: nothing follows 'if': write FILE:LINE if EXPR, e.g. "
                "'nanogpt.py:96 if i == 2', or leave the 'if' out"
            )
        _check_condition(
            condition,
            f"breakpoint {whole!r}: the condition {condition!r} is not a Python expression",
            "write FILE:LINE if EXPR, e.g. 'nanogpt.py:96 if i == 2'",
        )
        file_part, sep, line_part = spec.rpartition(":")
        if sep and line_part.isdigit():
            paths = [f for f in files if f == file_part or f.endswith("/" + file_part.lstrip("/"))]
            if not paths:
                raise BreakpointError(
                    f"breakpoint {spec!r}: no file {file_part!r} among the model's files "
                    f"({searched})"
                )
            line = int(line_part)
            code = {p: _code_lines(p, Path(p).stat().st_mtime) for p in paths}
            hits = [p for p in paths if line in code[p]]
            if not hits:
                near = [f"{Path(p).name}:{n}" for p in paths for n in _nearest(code[p], line)]
                lengths = {_length(p) for p in paths}
                if line > max(lengths):
                    raise BreakpointError(
                        f"breakpoint {spec!r}: {file_part} has "
                        f"{' or '.join(map(str, sorted(lengths)))} lines; the last line with "
                        f"code: {', '.join(near) or 'none'}"
                    )
                raise BreakpointError(
                    f"breakpoint {spec!r}: line {line} of {file_part} runs no code in a forward "
                    f"(a blank line, a comment, a docstring, a def or class line); the nearest "
                    f"lines with code: {', '.join(near) or 'none'}"
                )
            lines.update((p, line) for p in hits)
            conditions += [((p, line), whole, condition or None) for p in hits]
            continue
        matched = [
            (path, qual)
            for path in files
            for qual in _functions(path)
            if qual == spec or qual.endswith("." + spec)
        ]
        if not matched:
            at, function = break_examples(files)
            like = f", e.g. {at!r} or {function!r}" if function else ""
            raise BreakpointError(
                f"breakpoint {spec!r} matches no line or function of the model's code "
                f"(searched {searched}); write FILE:LINE or a function's name{like}"
            )
        functions.update(matched)
        conditions += [(site, whole, condition or None) for site in matched]
    return Breakpoints(specs, frozenset(lines), frozenset(functions), tuple(conditions))
