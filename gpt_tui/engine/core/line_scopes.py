"""Where a line breakpoint can be hit: the modules whose forward may run its code.

Line tracing on CPython 3.11 slows every Python frame of the thread it is on, so the
settrace backend (line_tracer.py) traces only inside the modules found here, and outside
the model's forward (sampling, a generation step's bookkeeping: little code).

The search is static and conservative, by names, over the model's own files: a function
`f` may be run by every function of those files that mentions the name `f` (a call
`f(x)` or `self.f(x)`, a reference passed on, or the string in a `getattr`); walking
those callers up ends at module `forward`s (entered through `Module.__call__`, where a
forward pre-hook can arm the tracer) or at functions nobody in the model's files names
(called from outside the forward, or never). A name the interpreter or torch may call by
itself (a dunder, or a method named as one of `nn.Module` / `torch.Tensor`) gives up:
the whole forward is traced, as before.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import CodeType

import torch
import torch.nn as nn


@dataclass(frozen=True)
class Unit:
    """A top-level function or method of a model file, with what it names (nested code
    included: comprehensions, lambdas and inner functions run as part of it)."""

    path: str
    qualname: str
    lines: frozenset[int]
    names: frozenset[str]

    @property
    def short(self) -> str:
        return self.qualname.rsplit(".", 1)[-1]


@functools.lru_cache(maxsize=1)
def _library_names() -> frozenset[str]:
    """Method names torch calls by itself on a module or tensor (overrides it may run)."""
    return frozenset(dir(nn.Module)) | frozenset(dir(torch.Tensor))


def _folded(code: CodeType) -> tuple[set[int], set[str]]:
    lines: set[int] = set()
    names: set[str] = set()
    stack = [code]
    while stack:
        c = stack.pop()
        lines.update(line for _, _, line in c.co_lines() if line is not None)
        names.update(c.co_names)
        for const in c.co_consts:
            if isinstance(const, CodeType):
                stack.append(const)
            elif isinstance(const, str) and const.isidentifier():
                names.add(const)  # getattr(self, "name")
    return lines, names


@functools.lru_cache(maxsize=64)
def file_units(path: str, mtime: float) -> tuple[Unit, ...]:
    """The units of one file (cached by modification time)."""
    units: list[Unit] = []
    stack = [compile(Path(path).read_text(), path, "exec")]
    while stack:  # module and class bodies hold the units
        body = stack.pop()
        for const in body.co_consts:
            if not isinstance(const, CodeType):
                continue
            if const.co_flags & 0x2:  # CO_NEWLOCALS: a function, not a class body
                lines, names = _folded(const)
                units.append(Unit(path, const.co_qualname, frozenset(lines), frozenset(names)))
            else:
                stack.append(const)
    return tuple(units)


def _units(files: Iterable[str]) -> list[Unit]:
    out: list[Unit] = []
    for path in files:
        try:
            out.extend(file_units(path, Path(path).stat().st_mtime))
        except (OSError, SyntaxError, ValueError):
            continue
    return out


@dataclass(frozen=True)
class Scope:
    """Where to trace for a set of breakpoints: inside `modules` (ids), or everywhere."""

    modules: frozenset[int]
    everywhere: bool


def breakpoint_scope(
    model: nn.Module,
    files: Iterable[str],
    lines: Iterable[tuple[str, int]],
    functions: Iterable[tuple[str, str]],
) -> Scope:
    """The modules whose forward may run the code holding these breakpoints."""
    units = _units(files)
    todo: list[Unit] = []
    for path, line in lines:
        todo += [u for u in units if u.path == path and line in u.lines]
    for path, qual in functions:
        todo += [u for u in units if u.path == path and (qual + ".").startswith(u.qualname + ".")]
    forwards: set[tuple[str, str]] = set()
    seen: set[Unit] = set()
    library = _library_names()
    while todo:
        unit = todo.pop()
        if unit in seen:
            continue
        seen.add(unit)
        name = unit.short
        if name == "forward":
            forwards.add((unit.path, unit.qualname))
        elif name.startswith("__") and name.endswith("__"):
            if name not in ("__init__", "__post_init__"):
                return Scope(frozenset(), True)
            name = unit.qualname.rsplit(".", 2)[-2]  # made by calling its class
        elif name in library and "." in unit.qualname:  # a method torch may call itself
            return Scope(frozenset(), True)
        todo += [u for u in units if name in u.names and u not in seen]
    modules = set()
    for module in model.modules():
        code = getattr(type(module).forward, "__code__", None)
        if code is None:
            continue
        path = str(Path(code.co_filename).resolve())
        if (path, code.co_qualname) in forwards:
            modules.add(id(module))
    return Scope(frozenset(modules), False)
