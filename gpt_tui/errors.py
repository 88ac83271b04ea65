"""The one base for every error a user can cause.

A `GptTuiError` carries a message of one line that names the problem and the fix; the CLI
prints it and exits with status 2, the app shows it in a toast or a pane. Any other
exception is a bug in gpt-tui (or in the user's model code, which is named as such), shown
with its class and where to report it. The kind is decided by `isinstance`, never by the
module an exception class lives in.
"""

from __future__ import annotations

import atexit
import functools
import sys
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

ISSUES_URL = "https://github.com/gpt-tui/gpt-tui/issues"


class GptTuiError(Exception):
    """Something the user asked for cannot be done; `str(err)` is one line with the fix."""


def describe_error(err: BaseException) -> str:
    """One line for any failure: a user error's own message; a bug's class and first line."""
    lines = str(err).strip().splitlines()
    first = lines[0] if lines else ""
    if isinstance(err, GptTuiError):
        return first or type(err).__name__
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def describe_bug(err: BaseException) -> str:
    """A bug as one line, with where to report it (for the CLI's last-resort handler)."""
    return f"internal error: {describe_error(err)} (please report it at {ISSUES_URL})"


def tell(line: str) -> None:
    """`line` on stderr in one write. A torchrun job's ranks share one pipe, and `print`
    writes its newline apart when unbuffered (PYTHONUNBUFFERED=1), so two ranks' lines ran
    together on one line and the next rank's line started on an empty one."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


# Entered and not yet exited `with_only` blocks: kept alive, so a block entered by hand
# (`gpt_tui.watch(model).__enter__()`) is not closed when its object is collected, and
# closed at exit while the modules it needs are still there.
_OPEN_BLOCKS: set[WithOnly[Any]] = set()


@atexit.register
def _exit_open_blocks() -> None:
    while _OPEN_BLOCKS:
        _OPEN_BLOCKS.pop().__exit__(None, None, None)


class WithOnly(AbstractContextManager[T]):
    """A context manager that says so when it is called without `with`: a bare
    `gpt_tui.watch(model)` line would otherwise watch nothing, silently."""

    def __init__(self, block: AbstractContextManager[T], call: str, where: tuple[str, int]) -> None:
        self._block, self._call, self._where = block, call, where
        self._entered = False

    def __enter__(self) -> T:
        self._entered = True
        value = self._block.__enter__()
        _OPEN_BLOCKS.add(self)
        return value

    def __exit__(self, *exc: Any) -> bool | None:
        _OPEN_BLOCKS.discard(self)
        return self._block.__exit__(*exc)

    def __del__(self) -> None:
        if not self._entered:
            warnings.warn_explicit(
                f"{self._call}(...) did nothing: it works as a `with` block, "
                f"`with {self._call}(model, ...):` around the training loop",
                UserWarning,
                *self._where,
            )


def with_only(
    call: str,
) -> Callable[[Callable[P, AbstractContextManager[T]]], Callable[P, WithOnly[T]]]:
    """Make a `@contextmanager` function warn when it is called without `with` (`call`:
    how the user writes it, e.g. `gpt_tui.watch`)."""

    def wrap(make: Callable[P, AbstractContextManager[T]]) -> Callable[P, WithOnly[T]]:
        @functools.wraps(make)
        def checked(*args: P.args, **kwargs: P.kwargs) -> WithOnly[T]:
            caller = sys._getframe(1)
            where = (caller.f_code.co_filename, caller.f_lineno)
            return WithOnly(make(*args, **kwargs), call, where)

        return checked

    return wrap
