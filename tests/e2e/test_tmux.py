"""End to end: the real `gpt-tui --config tiny` in a real terminal (tmux, 80x24)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_open_run_step_and_quit_in_tmux(tmp_path: Path, terminal) -> None:
    gpt_tui = Path(sys.executable).with_name("gpt-tui")
    command = [str(gpt_tui)] if gpt_tui.exists() else [sys.executable, "-m", "gpt_tui"]
    exit_file = tmp_path / "exit"
    shell = (
        f"GPT_TUI_HIDE_MEMORY=1 {shlex.join(command)} --config tiny; "
        f"echo EXIT=$? > {shlex.quote(str(exit_file))}"
    )
    terminal.start(shell, 80, 24)
    screen, keys, wait_for = terminal.screen, terminal.keys, terminal.wait_for

    wait_for("the model to load", lambda: "27.33K params" in screen())

    # At 80 columns the shown tab takes the width, the tree stepping aside (its hint says
    # so); one Esc brings it back, even pressed as the first frame shows. The tree fills
    # in a moment after the header on a busy machine: wait, don't race. (Module names:
    # class names need a wide tree.)
    wait_for("the tree's hint", lambda: "Esc: modules" in screen())
    keys("Escape")
    wait_for("the module tree", lambda: "lm_head" in screen())
    text = screen()
    assert "tiny nanogpt · cpu · float32" in text
    assert "transformer" in text
    assert "prompt › ROMEO:" in text

    keys("r")
    wait_for("the forward pass", lambda: "recorded 17 probes" in screen())
    assert "h.0.resid_pre" in screen()

    keys("s")
    wait_for("the first stop", lambda: "paused at transformer.wte (in)" in screen())
    keys("s")
    wait_for("the second stop", lambda: "paused at transformer.wte (out)" in screen())
    assert "→ wte" in screen()

    keys("q")  # a pass is paused: asked once, the second q quits
    wait_for("the quit question", lambda: "q again to quit" in screen())
    keys("q")
    wait_for("the app to exit", exit_file.exists)
    assert exit_file.read_text().strip() == "EXIT=0"
