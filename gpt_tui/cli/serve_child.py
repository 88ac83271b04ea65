"""The app process `gpt-tui serve` starts for one browser connection.

`python -m gpt_tui.cli.serve_child PID ARGS` is `python -m gpt_tui ARGS`, where PID is
serve's own process id, except that on Linux
the process first asks the kernel to kill it when serve dies (PR_SET_PDEATHSIG), so an app
never outlives the server even when serve itself is killed with SIGKILL. Doing this here,
at the start of the child, keeps serve from running Python between fork and exec
(`preexec_fn`), which is unsafe in a process with threads.
"""

from __future__ import annotations

import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Be killed (SIGKILL) when the process `parent` ends; exit now if it already has."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # serve died before the signal was armed
        os._exit(1)


def main() -> None:
    if len(sys.argv) < 2 or not sys.argv[1].isdigit():
        sys.exit("gpt-tui: error: serve_child is started by `gpt-tui serve`, not by hand")
    die_with_parent(int(sys.argv.pop(1)))
    from . import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
