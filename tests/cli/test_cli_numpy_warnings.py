"""A training run that blows up is what train-step is for: its statistics of huge and
non-finite values print no numpy RuntimeWarning (with our source paths) on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"


def gpt_tui(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def assert_quiet(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr
    assert "RuntimeWarning" not in result.stderr, result.stderr


def test_weights_beyond_float32_squares_print_no_overflow_warning(tmp_path):
    """SGD at lr 30 sends the weights past 1e19, whose squares float32 cannot hold."""
    (tmp_path / "text.txt").write_text(TEXT * 200)
    args = ["-m", "gpt_tui", "train-step", "--sample", "shakespeare-nanogpt", "--device", "cpu"]
    args += ["--data", "text.txt", "--lr", "30", "--optimizer", "sgd", "--clip", "0"]
    result = gpt_tui(*args, "--steps", "20", cwd=tmp_path)
    assert_quiet(result)
    assert "stopped at step" in result.stdout  # it did blow up


def test_a_watched_case_reopens_without_invalid_value_warnings(tmp_path):
    """The example's diverging run (inf and -inf in one activation) saves a case."""
    (tmp_path / "text.txt").write_text(TEXT * 200)
    example = REPO / "examples" / "nanogpt_train_watch.py"
    made = gpt_tui(str(example), "text.txt", "--report", "rep", cwd=tmp_path)
    assert (tmp_path / "rep" / "latest").exists(), made.stdout + made.stderr
    assert_quiet(gpt_tui("-m", "gpt_tui", "train-step", "--case", "rep", cwd=tmp_path))
