"""`gpt_tui.watch(model, optimizer=opt, on="open")` in a real terminal (tmux): the app opens
on the finding and says it, and after `q` the watch raises `NonFiniteError` as `on="raise"`
does, so no further step runs; the summary is printed on the screen the app gives back."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "fixtures" / "watch" / "open_train.py"
pytestmark = pytest.mark.e2e


def toast(screen: str) -> str:
    """A notification's text: what follows its left edge (▌) on each line, joined."""
    return " ".join(line.rsplit("▌", 1)[1].strip() for line in screen.splitlines() if "▌" in line)


@pytest.mark.parametrize("backward", ["main", "thread"])
def test_on_open_raises_after_q_and_no_step_runs_after_it(
    tmp_path: Path, terminal, backward: str
) -> None:
    """`thread`: backward's hooks run in another thread (as a CUDA backward's do, in
    autograd's device thread); the app, which needs the main thread, opens there."""
    exit_file = tmp_path / "exit"
    shell = (
        f"GPT_TUI_HIDE_MEMORY=1 {shlex.quote(sys.executable)} {shlex.quote(str(SCRIPT))} "
        f"{shlex.quote(str(tmp_path))} {backward} 2>&1; "
        f"echo EXIT=$? > {shlex.quote(str(exit_file))}; "
        "sleep 120"  # keep the screen after the run ends, to read it
    )
    terminal.start(shell, 100, 50)  # tall: the summary and the traceback fit
    screen, keys, wait_for = terminal.screen, terminal.keys, terminal.wait_for

    # The app opens on the live model with the finding as its note, naming the weight.
    wait_for("the finding's note", lambda: "stopped your run" in screen())
    note = toast(screen())
    assert "step 3: the first non-finite value is in forward" in note, note
    assert "c_fc.weight already held 1 NaN" in note, note
    # the batch reads in the vocabulary given to watch (tokenizer=)
    assert f"prompt › {(tmp_path / 'prompt').read_text()}" in screen()
    keys("6")  # the Train tab steps the finding's batch
    wait_for("the Train tab", lambda: "from your batch of step 3" in screen())
    keys("w", "c")  # the NaN watch on, the step continued to its first non-finite value
    wait_for("the step's finding", lambda: "first non-finite: forward at" in screen())
    lines = screen().splitlines()
    at = next(i for i, line in enumerate(lines) if "first non-finite: forward at" in line)
    assert "c_fc.weight already held 1 NaN at this forward" in lines[at + 1], screen()
    assert not exit_file.exists()  # the run waits for the app

    keys("q")
    wait_for("the app to close and the run to end", exit_file.exists)
    assert exit_file.read_text().strip() == "EXIT=1"
    steps = [int(line.split()[0]) for line in (tmp_path / "steps").read_text().splitlines()]
    assert steps == [0, 1, 2]  # step 3 raised before its update; no step 4 or 5
    result = json.loads((tmp_path / "result.json").read_text())
    finding = result["finding"]
    assert (finding["step"], finding["phase"], finding["where"]) == (
        3, "forward", "transformer.h.1.mlp"
    )  # fmt: skip
    assert finding["held"] == [{"name": "transformer.h.1.mlp.c_fc.weight", "nan": 1, "inf": 0}]
    assert result["others_finite"]  # the optimizer never applied the NaN gradients
    # The summary is on the normal screen, after the app: the same text the error carries.
    text = "".join(screen().split())  # lines wrap at 100 columns: compare without spaces
    summary = "".join(("gpt-tui: " + result["error"]).split())
    error = "".join(("NonFiniteError: " + result["error"]).split())
    assert summary in text and error in text, screen()
    assert text.index(summary) < text.index(error)
    assert "step2:loss" in text and "step3:loss" not in text and "step4:" not in text
