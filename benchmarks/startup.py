"""Time to the app's first painted frame, as a multiple of `python -c "import torch"`.

Both are measured in this run, alternately, on this machine: the ratio cancels out how
fast the disk and CPU happen to be. The app runs in a pseudo-terminal (120x40) on CPU with
`--config small`; its first frame is the first output holding the prompt bar, which is
drawn before the model exists (the model is built in a worker). Prints the medians, and
last `first_frame_ratio=<x>` (target: <= 1.5).

    python benchmarks/startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import select
import signal
import statistics
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

MARKER = b"prompt"  # the prompt bar's label, on every frame from the first
TIMEOUT = 120.0


def gpt_tui_command() -> list[str]:
    script = Path(sys.executable).with_name("gpt-tui")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "gpt_tui"]
    return [*base, "--config", "small", "--device", "cpu"]


def time_import_torch() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.perf_counter() - start


def time_first_frame(command: list[str]) -> float:
    """Seconds from spawning the app in a pty until its output shows the first frame."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal of 120x40 columns and lines
        os.environ["TERM"] = "xterm-256color"
        os.execvp(command[0], command)
    start = time.perf_counter()
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    seen = b""
    try:
        while time.perf_counter() - start < TIMEOUT:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen = seen[-64:] + chunk
            if MARKER in seen:
                return time.perf_counter() - start
        raise RuntimeError(f"no frame within {TIMEOUT:.0f} s; last output: {seen[-200:]!r}")
    finally:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    command = gpt_tui_command()
    time_import_torch()  # warm the file cache for both
    time_first_frame(command)
    torch_times, frame_times = [], []
    for _ in range(args.repeats):
        torch_times.append(time_import_torch())
        frame_times.append(time_first_frame(command))
    torch_s, frame_s = statistics.median(torch_times), statistics.median(frame_times)
    print(f"import torch:  median {torch_s:.3f} s  ({', '.join(f'{t:.2f}' for t in torch_times)})")
    print(f"first frame:   median {frame_s:.3f} s  ({', '.join(f'{t:.2f}' for t in frame_times)})")
    print(f"command: {' '.join(command)}")
    print(f"first_frame_ratio={frame_s / torch_s:.2f}")


if __name__ == "__main__":
    main()
