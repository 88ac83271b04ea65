"""The one base for every error a user can cause.

A `GptTuiError` carries a message of one line that names the problem and the fix; the CLI
prints it and exits with status 2, the app shows it in a toast or a pane. Any other
exception is a bug in gpt-tui (or in the user's model code, which is named as such), shown
with its class and where to report it. The kind is decided by `isinstance`, never by the
module an exception class lives in.
"""

from __future__ import annotations

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
