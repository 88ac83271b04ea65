"""`gpt-tui train` into an --out folder that already holds a run: a checkpoint of another
model is one line naming it and the way out (exit 2, no state-dict error); a resumed run
says how many steps it took and from where; the step lines' batch loss and the last line's
estimated losses are labelled apart. A generated text stands in for Shakespeare."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from gpt_tui.cli import run

ROOT = Path(__file__).resolve().parents[2]


def text_file(folder: Path, letters: str = "abcdefgh \n") -> str:
    rng = random.Random(0)
    path = folder / f"text_{len(letters)}.txt"
    path.write_text("".join(rng.choice(letters) for _ in range(3000)))
    return path.name


def train_args(data: str, steps: int, *extra: str) -> list[str]:
    args = ["train", "--data", data, "--config", "tiny", "--steps", str(steps)]
    return [*args, "--eval-interval", "5", "--batch-size", "4", "--out", "out", *extra]


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_resumed_run_counts_the_steps_it_took_and_labels_its_losses(here, capsys) -> None:
    data = text_file(here)
    assert run(train_args(data, 5)) == 0
    out = capsys.readouterr().out
    assert "step 5: batch loss " in out
    assert ", val loss " in out and "(estimated over 20 batches)" in out
    last = out.splitlines()[-1]
    assert last.startswith("trained 5 steps in ") and "(5 →" not in last
    assert "(each estimated over 20 batches) -> out" in last

    assert run(train_args(data, 8)) == 0
    out = capsys.readouterr().out
    *_, note, last = out.splitlines()
    assert last.startswith("trained 3 steps (5 → 8) in ")
    # Its learning rate's schedule spans --steps: longer now than the run it resumes.
    assert note == (
        "note: the learning rate now warms up and decays over 8 steps; the run began with --steps 5"
    )
    assert "step 5:" not in out  # only the steps this run took are logged

    assert run(train_args(data, 8)) == 0
    out = capsys.readouterr().out
    assert out.startswith("trained no steps: out is at step 8 already (--steps 8): ")


def test_an_out_folder_holding_another_config_is_one_line_exit_2(here, capsys) -> None:
    data = text_file(here)
    assert run(train_args(data, 5)) == 0
    capsys.readouterr()
    other = subprocess.run(  # as a user runs it: the exit status and stderr of the process
        [sys.executable, "-m", "gpt_tui", *train_args(data, 5, "--set", "n_layer=3")],
        capture_output=True,
        text=True,
        cwd=here,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert other.returncode == 2, other.stderr
    err = other.stderr.strip()
    assert "\n" not in err and "state_dict" not in err and "internal error" not in err
    assert err == (
        "gpt-tui: error: out holds a tiny nanogpt checkpoint (step 5: n_layer=2 (not 3)); "
        "use --config tiny to resume it, or another --out"
    )
    letters = text_file(here, "xyz \n")  # another vocabulary: another --data
    assert run(train_args(letters, 5)) == 2
    err = capsys.readouterr().err
    assert f"vocab_size=10 (not 5)); use the same --data ({data})" in err
