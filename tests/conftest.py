import os
from pathlib import Path

import pytest

# Volatile numbers (process memory) are hidden so app snapshots are reproducible.
os.environ.setdefault("GPT_TUI_STABLE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SHAKESPEARE = SHARED_DATA / "tinyshakespeare.txt"


@pytest.fixture
def shakespeare_path() -> Path:
    if not SHAKESPEARE.exists():
        pytest.skip(f"needs ../shared/data/tinyshakespeare.txt ({SHAKESPEARE} is absent)")
    return SHAKESPEARE


def pytest_configure(config):
    # Tests run two xdist workers on two cores; more torch threads per worker only contend.
    import torch

    torch.set_num_threads(1)


class Terminal:
    """A real terminal: one tmux session on a tmux server of its own.

    A private server (`tmux -L`) keeps tests that run side by side from sharing a
    server, whose options and sizes they would otherwise change for each other.
    """

    TIMEOUT = 120.0  # seconds; two busy CPU cores make torch's import slow

    def __init__(self, name: str) -> None:
        self.socket = f"gpt-tui-test-{name}-{os.getpid()}"
        self.session = "main"

    def tmux(self, *args: str) -> str:
        import subprocess

        # The size comes from the terminal: COLUMNS / LINES would override it (shutil).
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        command = ["tmux", "-L", self.socket, *args]
        return subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout

    def start(self, shell: str, width: int, height: int) -> None:
        size = ("-x", str(width), "-y", str(height))
        shell = f"unset COLUMNS LINES; {shell}"
        self.tmux("-f", "/dev/null", "new-session", "-d", "-s", self.session, *size, shell)
        self.tmux("resize-window", "-t", self.session, *size)

    def screen(self) -> str:
        import subprocess

        try:
            return self.tmux("capture-pane", "-p", "-t", self.session)
        except subprocess.CalledProcessError:
            return "(the tmux session has ended)"

    def keys(self, *names: str) -> None:
        self.tmux("send-keys", "-t", self.session, *names)

    def wait_for(self, what: str, condition) -> None:
        """Poll the terminal (an outside process: no event to wait on), bounded."""
        import time

        deadline = time.monotonic() + self.TIMEOUT
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.1)
        try:
            shape = "#{window_width}x#{window_height}"
            size = self.tmux("display", "-p", "-t", self.session, shape)
        except Exception as exc:  # noqa: BLE001 - only to describe the failure
            size = f"unknown ({exc})"
        screen = self.screen()
        pytest.fail(f"timed out waiting for {what}; the {size.strip()} screen was:\n{screen}")

    def close(self) -> None:
        import subprocess

        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


@pytest.fixture
def terminal(request):
    import shutil

    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    term = Terminal(request.node.name.replace("[", "-").rstrip("]"))
    yield term
    term.close()
