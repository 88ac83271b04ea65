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

ROOT = Path(__file__).resolve().parents[2]


def gpt_tui(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "gpt_tui", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def text_file(folder: Path, letters: str = "abcdefgh \n") -> str:
    rng = random.Random(0)
    path = folder / f"text_{len(letters)}.txt"
    path.write_text("".join(rng.choice(letters) for _ in range(3000)))
    return path.name


def train(folder: Path, data: str, steps: int, *extra: str) -> subprocess.CompletedProcess:
    args = ["train", "--data", data, "--config", "tiny", "--steps", str(steps)]
    return gpt_tui(*args, "--eval-interval", "5", "--batch-size", "4", "--out", "out", *extra,
                   cwd=folder)  # fmt: skip


def test_a_resumed_run_counts_the_steps_it_took_and_labels_its_losses(tmp_path) -> None:
    data = text_file(tmp_path)
    first = train(tmp_path, data, 5)
    assert first.returncode == 0, first.stderr
    assert "step 5: batch loss " in first.stdout
    assert ", val loss " in first.stdout and "(estimated over 20 batches)" in first.stdout
    last = first.stdout.splitlines()[-1]
    assert last.startswith("trained 5 steps in ") and "(5 →" not in last
    assert "(each estimated over 20 batches) -> out" in last

    again = train(tmp_path, data, 8)
    assert again.returncode == 0, again.stderr
    last = again.stdout.splitlines()[-1]
    assert last.startswith("trained 3 steps (5 → 8) in "), last
    assert "step 5:" not in again.stdout  # only the steps this run took are logged

    done = train(tmp_path, data, 8)
    assert done.stdout.startswith("trained no steps: out is at step 8 already (--steps 8): ")


def test_an_out_folder_holding_another_config_is_one_line_exit_2(tmp_path) -> None:
    data = text_file(tmp_path)
    assert train(tmp_path, data, 5).returncode == 0
    other = train(tmp_path, data, 5, "--set", "n_layer=3")
    assert other.returncode == 2, other.stderr
    err = other.stderr.strip()
    assert "\n" not in err and "state_dict" not in err and "internal error" not in err
    assert err == (
        "gpt-tui: error: out holds a tiny nanogpt checkpoint (step 5: n_layer=2 (not 3)); "
        "use --config tiny to resume it, or another --out"
    )
    letters = text_file(tmp_path, "xyz \n")  # another vocabulary: another --data
    other = train(tmp_path, letters, 5)
    assert other.returncode == 2
    assert f"vocab_size=10 (not 5)); use the same --data ({data})" in other.stderr
