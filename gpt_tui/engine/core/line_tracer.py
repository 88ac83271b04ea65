"""How line events reach `frames.LineTracer`, at no cost where no breakpoint can be hit.

Two backends behind one interface (`sync()` and `disarm()`, both called in the forward
thread):

- `sys.monitoring` (PEP 669, Python >= 3.12): LINE, PY_START and PY_RETURN events are
  enabled only on the code objects that hold a breakpoint, or, while a line move is under
  way, on the model's own code objects. Every other frame runs at full speed. The events
  are per interpreter, so the callbacks ignore every thread but the forward thread.
- `sys.settrace` (Python 3.11): tracing is per thread, but while a trace function is set
  CPython 3.11 runs every frame of that thread in its slower tracing mode. So with
  breakpoints only, the trace function is set outside the model's forward (sampling,
  little code) and inside the modules whose forward may run a breakpoint's code
  (line_scopes.py), by forward pre-hooks and post-hooks on exactly those modules; a line
  move traces the whole thread until it pauses.
"""

from __future__ import annotations

import os
import sys
import threading
import types
import weakref
from collections.abc import Callable
from pathlib import Path
from types import CodeType, FrameType, FunctionType
from typing import Any, Protocol

import torch.nn as nn

from .line_scopes import Scope, breakpoint_scope

BACKEND = "sys.monitoring" if sys.version_info >= (3, 12) else "sys.settrace"


class Events(Protocol):
    """What a backend needs of the tracer (frames.LineTracer)."""

    files: tuple[str, ...]

    @property
    def stepping(self) -> bool: ...

    def breakpoint_sites(self) -> tuple[frozenset[tuple[str, int]], frozenset[tuple[str, str]]]:
        """(path, line) and (path, qualified function) pairs."""
        ...

    def model_code(self, code: CodeType) -> bool: ...

    def holds_breakpoint(self, code: CodeType) -> bool: ...

    def global_trace(self, frame: FrameType, event: str, arg: object) -> Any: ...

    def local_trace(self, frame: FrameType, event: str, arg: object) -> Any: ...


class Backend(Protocol):
    name: str

    def sync(self) -> None:
        """Arm or disarm for the tracer's state now (its moves, its breakpoints)."""
        ...

    def disarm(self) -> None:
        """Remove everything (the pass is over or unwound)."""
        ...


def make_backend(events: Events, model: nn.Module, outside: bool = True) -> Backend:
    """`outside`: model code may run outside the model's forward (sampling)."""
    if BACKEND == "sys.monitoring":
        return MonitoringBackend(events, model)
    return SettraceBackend(events, model, outside)


class SettraceBackend:
    """`sys.settrace` in the forward thread, only where a breakpoint can be hit."""

    name = "sys.settrace"

    def __init__(self, events: Events, model: nn.Module, outside: bool) -> None:
        self._events = events
        self._model = model
        self._outside = outside
        self._sites: object = None  # the breakpoint sites the hooks were made for
        self._scope = Scope(frozenset(), False)
        self._hooks: list[Any] = []
        self._open: list[nn.Module] = []  # hooked modules whose forward runs now
        self._thread: int | None = None
        self._on = False

    def sync(self) -> None:
        self._thread = threading.get_ident()
        events = self._events
        sites = events.breakpoint_sites()
        if sites != self._sites:
            self._rehook(sites)
        if events.stepping or self._scoped_on():
            self._arm(sys._getframe(1))
        else:
            self._set(False)

    def disarm(self) -> None:
        self._set(False)
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        self._open.clear()
        self._sites = None

    def _scoped_on(self) -> bool:
        if not any(self._sites):  # type: ignore[arg-type]
            return False
        if self._scope.everywhere:
            return True
        if any(id(m) in self._scope.modules for m in self._open):
            return True
        return self._outside and not any(m is self._model for m in self._open)

    def _set(self, on: bool) -> None:
        if on != self._on:
            sys.settrace(self._events.global_trace if on else None)
            self._on = on

    def _arm(self, frame: FrameType | None) -> None:
        """Set the trace function; model frames already running get the local tracer, as
        bdb's set_trace does."""
        self._set(True)
        while frame is not None:
            if self._events.model_code(frame.f_code):
                frame.f_trace = self._events.local_trace
            frame = frame.f_back

    def _rehook(self, sites: tuple[frozenset, frozenset]) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        self._sites = sites
        if not any(sites):
            self._open = []
            return
        self._scope = _scope(self._model, self._events.files, sites)
        hooked = {id(self._model): self._model}
        hooked.update({id(m): m for m in self._model.modules() if id(m) in self._scope.modules})
        self._open = self._running(hooked)
        if self._scope.everywhere:
            return
        for module in hooked.values():
            self._hooks.append(module.register_forward_pre_hook(self._enter))
            self._hooks.append(module.register_forward_hook(self._leave, always_call=True))

    def _running(self, hooked: dict[int, nn.Module]) -> list[nn.Module]:
        """The hooked modules whose forward is on the stack now, outermost first (hooks
        made at a pause in the middle of a pass)."""
        found: list[nn.Module] = []
        frame: FrameType | None = sys._getframe()
        while frame is not None:
            owner = frame.f_locals.get("self") if frame.f_code.co_name == "forward" else None
            if owner is not None and id(owner) in hooked:
                found.append(owner)
            frame = frame.f_back
        return found[::-1]

    def _enter(self, module: nn.Module, args: tuple) -> None:
        if threading.get_ident() != self._thread:
            return
        self._open.append(module)
        if not self._events.stepping:
            self._set(self._scoped_on())

    def _leave(self, module: nn.Module, args: tuple, output: object) -> None:
        if threading.get_ident() != self._thread:
            return
        if self._open and self._open[-1] is module:
            self._open.pop()
        if not self._events.stepping:
            self._set(self._scoped_on())


_SCOPES: weakref.WeakKeyDictionary[nn.Module, dict[tuple, Scope]] = weakref.WeakKeyDictionary()


def _scope(model: nn.Module, files: tuple[str, ...], sites: tuple[frozenset, frozenset]) -> Scope:
    """`breakpoint_scope`, remembered per model (a stepper per pass asks again)."""
    known = _SCOPES.setdefault(model, {})
    key = (tuple((f, os.path.getmtime(f)) for f in files), *sites)
    if key not in known:
        known[key] = breakpoint_scope(model, files, *sites)
    return known[key]


def model_code_objects(
    model: nn.Module, files: tuple[str, ...], is_model: Callable[[CodeType], bool]
) -> list[CodeType]:
    """Every code object of the model's files that can run: the functions of the model's
    classes and of the namespaces they live in (their module's globals, the model files'
    modules), with the code nested in them (inner functions, lambdas, comprehensions)."""
    spaces: list[dict] = [vars(c) for c in {c for m in model.modules() for c in type(m).__mro__}]
    names: dict[str, set[str]] = {}
    for f in files:
        names.setdefault(Path(f).name, set()).add(f)
    spaces += [vars(m) for m in list(sys.modules.values()) if _in_files(m, names)]
    found: dict[int, CodeType] = {}  # by identity: two imports of a file make equal codes
    seen: set[int] = set()
    while spaces:
        space = spaces.pop()
        if id(space) in seen:
            continue
        seen.add(id(space))
        for value in list(space.values()):
            for fn in _functions_in(value):
                code = fn.__code__
                if not is_model(code):
                    continue
                spaces.append(fn.__globals__)
                stack = [code]
                while stack:
                    c = stack.pop()
                    if id(c) not in found:
                        found[id(c)] = c
                        stack.extend(k for k in c.co_consts if isinstance(k, CodeType))
            is_class = isinstance(value, type) and not value.__module__.startswith("torch")
            if is_class or (isinstance(value, types.ModuleType) and _in_files(value, names)):
                spaces.append(vars(value))
    return list(found.values())


def _functions_in(value: object) -> list[FunctionType]:
    """The plain functions behind a namespace's value (methods, properties, decorated)."""
    out = []
    for v in (value, getattr(value, "__func__", None), getattr(value, "__wrapped__", None)):
        if type(v) is FunctionType:
            out.append(v)
    if isinstance(value, property):
        out += [f for f in (value.fget, value.fset, value.fdel) if type(f) is FunctionType]
    return out


def _in_files(module: object, names: dict[str, set[str]]) -> bool:
    """Whether a module is one of the model's files (`names`: base name -> their paths)."""
    path = getattr(module, "__file__", None)
    if not isinstance(path, str) or os.path.basename(path) not in names:
        return False
    return str(Path(path).resolve()) in names[os.path.basename(path)]


class _Monitor:
    """The one `sys.monitoring` tool of this process, shared by the tracers of every
    forward thread: each code object's events are the union of what they ask for."""

    def __init__(self) -> None:
        self.tool: int | None = None
        self.lock = threading.Lock()
        # thread -> id(code) -> (code, events); by identity, as equal codes are not one
        self.wanted: dict[int, dict[int, tuple[CodeType, int]]] = {}
        self.tracers: dict[int, Events] = {}

    def claim(self) -> int:
        mon = sys.monitoring  # type: ignore[attr-defined]
        if self.tool is None:
            for tool in (mon.DEBUGGER_ID, 1, 3, 4):
                if mon.get_tool(tool) is None:
                    mon.use_tool_id(tool, "gpt-tui")
                    self.tool = tool
                    break
            else:
                raise RuntimeError("no free sys.monitoring tool id for line breakpoints")
            e = mon.events
            mon.register_callback(self.tool, e.LINE, self._line)
            mon.register_callback(self.tool, e.PY_START, self._start)
            mon.register_callback(self.tool, e.PY_RETURN, self._return)
        return self.tool

    def want(
        self, thread: int, tracer: Events | None, codes: dict[int, tuple[CodeType, int]]
    ) -> None:
        mon = sys.monitoring  # type: ignore[attr-defined]
        with self.lock:
            tool = self.claim()
            old = self.wanted.pop(thread, {})
            if tracer is None:
                self.tracers.pop(thread, None)
            else:
                self.tracers[thread] = tracer
                self.wanted[thread] = codes
            for key, (code, _) in (old | codes).items():
                events = 0
                for wanted in self.wanted.values():
                    events |= wanted.get(key, (code, 0))[1]
                mon.set_local_events(tool, code, events)

    def _tracer(self) -> Events | None:
        return self.tracers.get(threading.get_ident())

    def _line(self, code: CodeType, line: int) -> None:
        tracer = self._tracer()
        if tracer is not None:
            tracer.local_trace(sys._getframe(1), "line", None)

    def _start(self, code: CodeType, offset: int) -> None:
        tracer = self._tracer()
        if tracer is not None:
            tracer.global_trace(sys._getframe(1), "call", None)

    def _return(self, code: CodeType, offset: int, value: object) -> None:
        tracer = self._tracer()
        if tracer is not None:
            tracer.local_trace(sys._getframe(1), "return", value)


_MONITOR = _Monitor()
# The model's code objects, found once per model (its classes do not change).
_CODES: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[str, ...], list[CodeType]]] = (
    weakref.WeakKeyDictionary()
)


class MonitoringBackend:
    """`sys.monitoring` local events on the code that holds a breakpoint (or, while a line
    move is under way, on all of the model's code)."""

    name = "sys.monitoring"

    def __init__(self, events: Events, model: nn.Module) -> None:
        self._events = events
        self._model = model
        self._codes: list[CodeType] | None = None
        self._thread: int | None = None

    def sync(self) -> None:
        self._thread = threading.get_ident()
        events = self._events
        if self._codes is None:
            known = _CODES.get(self._model)
            if known is None or known[0] != events.files:
                codes = model_code_objects(self._model, events.files, events.model_code)
                known = _CODES[self._model] = (events.files, codes)
            self._codes = known[1]
        e = sys.monitoring.events  # type: ignore[attr-defined]
        mask = e.LINE | e.PY_START | e.PY_RETURN
        stepping = events.stepping
        wanted = {id(c): (c, mask) for c in self._codes if stepping or events.holds_breakpoint(c)}
        _MONITOR.want(self._thread, events if wanted else None, wanted)

    def disarm(self) -> None:
        if self._thread is not None:
            _MONITOR.want(self._thread, None, {})
        self._thread = None


def tracing_here() -> bool:
    """Whether line events are armed in the calling thread, whichever the backend."""
    if BACKEND == "sys.monitoring":
        return threading.get_ident() in _MONITOR.tracers
    return sys.gettrace() is not None
