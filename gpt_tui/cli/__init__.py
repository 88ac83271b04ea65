"""The `gpt-tui` command: the inspector app, and non-interactive commands for scripts.

    gpt-tui [model args]                 open the inspector (cli.app_cmd)
    gpt-tui configs | summary | doctor | samples        (cli.model_cmds)
    gpt-tui trace | step | generate                     (cli.forward_cmds)
    gpt-tui eval | train                                (cli.data_cmds)

Arguments are parsed in cli.parser and printed through cli.render. Every user error
(a `GptTuiError`, or an argument mistake) prints one line on stderr and exits with status 2;
anything else is a bug: one line with where to report it, exit status 1, or the traceback
with GPT_TUI_DEBUG=1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from ..errors import GptTuiError, describe_bug, describe_error
from .common import drop_notes, say_notes
from .parser import EXIT_USAGE, parse_args

__all__ = ["main", "run"]


def run(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse_args(argv)
    except SystemExit as done:  # --help, or a mistake already printed as one line
        return done.code if isinstance(done.code, int) else 0
    drop_notes()  # a command run before in this process (tests) said its own
    try:
        code = args.func(args)
    except BrokenPipeError:  # `gpt-tui summary | head`: the reader left, nothing to say
        _drop_stdout()
        return 0
    except GptTuiError as err:
        print(f"gpt-tui: error: {describe_error(err)}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as err:
        print(f"gpt-tui: error: {err.strerror}: {err.filename}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # a command that keeps partial work says more itself
        print("gpt-tui: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if os.environ.get("GPT_TUI_DEBUG") == "1":
            raise
        print(f"gpt-tui: {describe_bug(err)}", file=sys.stderr)
        return 1
    say_notes()  # only when it ran to its end: a mistake stays one line
    return code


def _drop_stdout() -> None:
    """The reader of a pipe left: send what is still buffered nowhere, so that Python's
    own flush at exit does not fail and turn a finished command into status 1."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main() -> None:
    code = run()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _drop_stdout()
        code = 0
    sys.exit(code)
