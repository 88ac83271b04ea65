"""End to end: the real `gpt-tui --config tiny` in a real terminal (tmux, 80x24)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

TIMEOUT = 90.0  # seconds; two busy CPU cores make torch's import slow


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


def _wait_for(what: str, condition: Callable[[], bool], screen: Callable[[], str]) -> None:
    """Poll a condition on the terminal until it holds (an outside process: no events)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}; the screen was:\n{screen()}")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_open_run_step_and_quit_in_tmux(tmp_path: Path) -> None:
    gpt_tui = Path(sys.executable).with_name("gpt-tui")
    command = [str(gpt_tui)] if gpt_tui.exists() else [sys.executable, "-m", "gpt_tui"]
    exit_file = tmp_path / "exit"
    session = f"gpt-tui-e2e-{os.getpid()}"
    shell = (
        f"GPT_TUI_HIDE_MEMORY=1 {shlex.join(command)} --config tiny; "
        f"echo EXIT=$? > {shlex.quote(str(exit_file))}"
    )
    _tmux("new-session", "-d", "-s", session, "-x", "80", "-y", "24", shell)

    def screen() -> str:
        try:
            return _tmux("capture-pane", "-p", "-t", session)
        except subprocess.CalledProcessError:
            return "(the tmux session has ended)"

    def keys(*names: str) -> None:
        _tmux("send-keys", "-t", session, *names)

    try:
        _wait_for("the model to load", lambda: "27.33K params" in screen(), screen)
        # The tree fills in a moment after the header on a busy machine: wait, don't race.
        # (class names show only when the tree is wide enough, so look for module names)
        _wait_for("the module tree", lambda: "lm_head" in screen(), screen)
        text = screen()
        assert "tiny nanogpt · cpu · float32" in text
        assert "transformer" in text
        assert "prompt › ROMEO:" in text

        keys("r")
        _wait_for("the forward pass", lambda: "recorded 17 probes" in screen(), screen)
        assert "h.0.resid_pre" in screen()

        keys("s")
        _wait_for("the first stop", lambda: "paused at transformer.wte (in)" in screen(), screen)
        keys("s")
        _wait_for("the second stop", lambda: "paused at transformer.wte (out)" in screen(), screen)
        assert "→ wte" in screen()

        keys("q")
        _wait_for("the app to exit", exit_file.exists, screen)
        assert exit_file.read_text().strip() == "EXIT=0"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
