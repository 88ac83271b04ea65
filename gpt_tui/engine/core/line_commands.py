"""pdb's own words in the expression box, beside Python: `p EXPR` and `pp EXPR` (the value,
as a bare expression shows it), `whatis EXPR` (its type; a tensor's shape, dtype and device),
`where` / `w` / `bt` (the paused frame's stack) and a bare `display` (the display
expressions). Any other pdb command is one line naming what the box takes.

A word is pdb's only where that is unambiguous: a name the paused frame holds (a local `w`,
a global `p`) is Python and evaluates as such; so does any text that does not start with
one of pdb's words."""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from dataclasses import replace
from types import FrameType

import torch

from .frames import Evaluation, FrameSnapshot, Value, evaluate_in

PRINT = frozenset({"p", "pp"})
WHERE = frozenset({"where", "w", "bt"})
# pdb's other commands (Python 3.11-3.13 `help`): typed here, one line says what to use
_OTHER = (
    "a alias args b break c cl clear commands condition cont continue d debug disable down "
    "enable exit h help ignore interact j jump l list ll longlist n next q quit r restart "
    "retval return run rv s source step tbreak u unalias unt until up"
)
OTHER = frozenset(_OTHER.split())
SUPPORTED = (
    "type a Python expression, p/pp EXPR, whatis EXPR, where, display [EXPR], undisplay [N] "
    "or !STATEMENT (moves: the keys n s r c; breakpoints: the break-at box or step's --break-at)"
)
_COMMAND = re.compile(r"([a-z]+)(?:\s+(.*))?", re.S)


def run_line_command(
    frame: FrameType,
    text: str,
    paused: FrameSnapshot,
    displays: Sequence[tuple[int, str, str]],
) -> Evaluation:
    """`text` evaluated in `frame` (in the frame's thread) as pdb reads it: one of its
    words above, else Python (`!STATEMENT` too). `paused` is the frame's snapshot (its
    stack); `displays` the display expressions as (number, expression, value shown)."""
    text = text.strip()
    match = _COMMAND.fullmatch(text)
    word, rest = (match.group(1), (match.group(2) or "").strip()) if match else ("", "")
    if not word or word in frame.f_locals or word in frame.f_globals:
        return evaluate_in(frame, text)[0]
    if word in PRINT and rest:
        return replace(evaluate_in(frame, rest)[0], expr=text)
    if word == "whatis" and rest:
        evaluation, value = evaluate_in(frame, rest)
        if evaluation.error is not None:
            return replace(evaluation, expr=text)
        return Evaluation(text, Value(text, "value", whatis(value)))
    if word in WHERE and not rest:
        return Evaluation(text, Value(text, "value", where(paused)))
    if word == "display" and not rest:
        listed = [f"{n} {expr}: {shown}" for n, expr, shown in displays]
        return Evaluation(text, Value(text, "value", "\n".join(listed) or "no display expressions"))
    if word in PRINT | {"whatis"} and not rest:
        return Evaluation(text, None, f"{word} takes an expression: {word} x.shape")
    # the Code tab's box runs these itself: here they came from step's --eval
    if word == "display" and not _is_python(text):
        return Evaluation(text, None, "display EXPR: give step --display EXPR")
    if word == "undisplay":
        return Evaluation(text, None, "undisplay: step's displays are its --display options")
    if word in OTHER and (not rest or not _is_python(text)):
        return Evaluation(text, None, f"{word} is a pdb command not run here: {SUPPORTED}")
    return evaluate_in(frame, text)[0]


def _is_python(text: str) -> bool:
    try:
        compile(text, "<expression>", "eval")
    except SyntaxError:
        return False
    return True


def whatis(value: object) -> str:
    """pdb's `whatis`: what kind of object, with a tensor's shape, dtype and device."""
    if isinstance(value, torch.Tensor):
        grad = ", requires grad" if value.requires_grad else ""
        dtype = str(value.dtype).removeprefix("torch.")
        kind = _qualified(type(value))  # torch.Tensor, or a Parameter's own type
        return f"{kind} {tuple(value.shape)} {dtype} {value.device}{grad}"
    if inspect.isclass(value):
        return f"class {_qualified(value)}"
    if inspect.ismethod(value):
        return f"method {value.__func__.__qualname__}"
    if inspect.isfunction(value) or inspect.isbuiltin(value):
        return f"function {value.__qualname__}"
    return _qualified(type(value))


def _qualified(kind: type) -> str:
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def where(paused: FrameSnapshot) -> str:
    """pdb's `where`: the model's frames, outermost first, the paused one marked `>`."""
    last = len(paused.stack) - 1
    return "\n".join(
        f"{'>' if i == last else ' '} {entry.file}:{entry.line} {entry.function}"
        + (f" ({entry.module.strip('()')})" if entry.module else "")
        for i, entry in enumerate(paused.stack)
    )
