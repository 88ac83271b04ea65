"""Line breakpoints of the model's code, resolved: `FILE:LINE` or a function's name,
each with an optional pdb-style condition (`nanogpt.py:96 if layer == 2`), evaluated in
the frame when the line is reached."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, FrameType

from ...errors import GptTuiError


class BreakpointError(GptTuiError, ValueError):
    """A line breakpoint that names no line or function of the model's code."""


def _functions(path: str) -> list[str]:
    """The qualified name (as `co_qualname` spells it) of every function in the file."""
    tree = ast.parse(Path(path).read_text(), path)
    found: list[str] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                qual = prefix + child.name
                found.append(qual)
                visit(child, qual + ".<locals>.")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")

    visit(tree, "")
    return found


def _code_lines(path: str) -> set[int]:
    """Lines that produce line events: those of the file's compiled code objects."""
    lines: set[int] = set()
    stack = [compile(Path(path).read_text(), path, "exec")]
    while stack:
        code = stack.pop()
        lines.update(line for _, _, line in code.co_lines() if line)  # 0: a module's RESUME
        stack.extend(c for c in code.co_consts if isinstance(c, CodeType))
    return lines


@dataclass(frozen=True)
class Breakpoints:
    """Resolved line breakpoints: (path, line) pairs and qualified function names."""

    specs: frozenset[str]
    lines: frozenset[tuple[str, int]]
    functions: frozenset[tuple[str, str]]  # (path, qualified name)
    # (path, line or qualified name) -> the conditions of its specs; None: unconditional
    conditions: tuple[tuple[tuple[str, int | str], str | None], ...] = ()

    def condition_holds(self, site: tuple[str, int | str], frame: FrameType) -> bool:
        """pdb's `break ... if COND`: any unconditional spec of the site, or any condition
        true in `frame`; one that raises stops too (the pause shows where it was)."""
        conditions = [c for s, c in self.conditions if s == site]
        if not conditions or None in conditions:
            return True
        for expr in conditions:
            try:
                if eval(expr, frame.f_globals, frame.f_locals):
                    return True
            except Exception:
                return True
        return False

    def in_file(self, path: str) -> bool:
        """Whether any of them stops in the file at `path` (canonical)."""
        return any(p == path for p, _ in self.lines) or any(p == path for p, _ in self.functions)


def resolve_breakpoints(specs: Iterable[str], files: tuple[str, ...]) -> Breakpoints:
    """Check each `FILE:LINE` or `FUNCTION` against the model's files; one error names
    the files searched when a spec matches nothing."""
    lines: set[tuple[str, int]] = set()
    functions: set[tuple[str, str]] = set()
    conditions: list[tuple[tuple[str, int | str], str | None]] = []
    specs = frozenset(s.strip() for s in specs)
    searched = ", ".join(Path(f).name for f in files) or "(no source file found)"
    for whole in sorted(specs):
        spec, _, condition = (part.strip() for part in whole.partition(" if "))
        try:
            compile(condition or "True", "<condition>", "eval")
        except SyntaxError as err:
            raise BreakpointError(
                f"breakpoint {whole!r}: the condition {condition!r} is not a Python "
                f"expression ({err.msg}); write FILE:LINE if EXPR, e.g. 'nanogpt.py:96 if i == 2'"
            ) from None
        file_part, sep, line_part = spec.rpartition(":")
        if sep and line_part.isdigit():
            paths = [f for f in files if f == file_part or f.endswith("/" + file_part.lstrip("/"))]
            if not paths:
                raise BreakpointError(
                    f"breakpoint {spec!r}: no file {file_part!r} among the model's files "
                    f"({searched})"
                )
            line = int(line_part)
            hits = [p for p in paths if line in _code_lines(p)]
            if not hits:
                raise BreakpointError(
                    f"breakpoint {spec!r}: line {line} of {file_part} runs no code (searched "
                    f"{', '.join(Path(p).name for p in paths)}); pick a line with a statement"
                )
            lines.update((p, line) for p in hits)
            conditions += [((p, line), condition or None) for p in hits]
            continue
        matched = [
            (path, qual)
            for path in files
            for qual in _functions(path)
            if qual == spec or qual.endswith("." + spec)
        ]
        if not matched:
            raise BreakpointError(
                f"breakpoint {spec!r} matches no line or function of the model's code "
                f"(searched {searched}); write FILE:LINE or a name like 'norm', "
                f"'CausalSelfAttention.forward'"
            )
        functions.update(matched)
        conditions += [(site, condition or None) for site in matched]
    return Breakpoints(specs, frozenset(lines), frozenset(functions), tuple(conditions))
