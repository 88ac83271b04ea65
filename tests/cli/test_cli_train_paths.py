"""`gpt-tui train` as a newcomer runs it: with no --config it trains the `mini` preset (a
CPU-sized model, not GPT-2's shape), says what it trains before the first step, and ends
on the summary line; a folder for --data, a file for --out, and a folder given for a file
(--data, --meta, --model-file) are one line on stderr and exit 2, before any training."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from gpt_tui.models import build_model, make_config

ROOT = Path(__file__).resolve().parents[2]


def gpt_tui(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpt_tui", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )


@pytest.fixture
def here(tmp_path: Path) -> Path:
    rng = random.Random(0)
    (tmp_path / "small.txt").write_text("".join(rng.choice("abcdefgh \n") for _ in range(3000)))
    (tmp_path / "adir").mkdir()
    return tmp_path


def one_line_exit_2(out: subprocess.CompletedProcess, expected: str) -> None:
    assert out.returncode == 2, out.stderr
    assert out.stderr == f"gpt-tui: error: {expected}\n"
    assert "training " not in out.stdout  # refused before the model was built


def test_the_default_is_the_mini_preset_named_before_the_first_step(here: Path) -> None:
    out = gpt_tui(here, "train", "--data", "small.txt", "--steps", "1", "--batch-size", "2",
                  "--out", "trout")  # fmt: skip
    assert out.returncode == 0, out.stderr
    first, *_, last = out.stdout.splitlines()
    mini = make_config("mini", "nanogpt", {"vocab_size": 10})  # the text's 10 characters
    n_params = sum(p.numel() for p in build_model(mini, "cpu").parameters())
    assert mini.n_layer == 4 and mini.n_embd == 128 and mini.block_size == 128
    assert first == (
        f"training mini nanogpt: {n_params:,} parameters, context 128, batch 2, on cpu; "
        "1 step -> trout"
    )
    assert last.startswith("trained 1 step in ") and last.endswith("-> trout")
    assert (here / "trout" / "ckpt.pt").is_file()


def test_the_header_names_the_overrides_and_a_resumed_runs_steps(here: Path) -> None:
    args = ["train", "--data", "small.txt", "--config", "tiny", "--arch", "nanochat", "--set",
            "n_layer=1", "--batch-size", "2", "--eval-interval", "2", "--out", "o"]  # fmt: skip
    assert gpt_tui(here, *args, "--steps", "2").returncode == 0
    out = gpt_tui(here, *args, "--steps", "3")
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first.startswith("training tiny nanochat with n_layer=1: ")
    assert first.endswith("on cpu; steps 2 → 3 -> o")


def test_a_folder_as_data_is_one_line_exit_2(here: Path) -> None:
    out = gpt_tui(here, "train", "--data", "adir", "--out", "o")
    one_line_exit_2(out, "--data adir is a folder, not a file: give a text file")
    (here / "adir" / "input.txt").write_text("abc")  # a nanoGPT data folder: named as the fix
    out = gpt_tui(here, "eval", "--sample", "shakespeare-nanogpt", "--data", "adir")
    one_line_exit_2(out, "--data adir is a folder, not a file: give a text file")
    out = gpt_tui(here, "train-step", "--config", "tiny", "--data", "adir")
    one_line_exit_2(out, "--data adir is a folder, not a file: use --data adir/input.txt")


def test_missing_data_is_one_line_exit_2(here: Path) -> None:
    out = gpt_tui(here, "train", "--data", "nope.txt", "--out", "o")
    one_line_exit_2(out, "--data nope.txt: no such file (give a text file)")
    assert not (here / "o").exists()


def test_a_file_as_out_is_refused_before_training(here: Path) -> None:
    (here / "t.txt").write_text("keep me")
    out = gpt_tui(here, "train", "--data", "small.txt", "--config", "tiny", "--out", "t.txt")
    one_line_exit_2(
        out, "--out t.txt is a file, not a folder: give a folder (it is made if missing)"
    )
    assert (here / "t.txt").read_text() == "keep me"
    out = gpt_tui(here, "train", "--data", "small.txt", "--config", "tiny", "--out", "t.txt/run")
    one_line_exit_2(out, "--out t.txt/run: t.txt is a file, so no folder can be made inside it")


def test_a_folder_as_meta_or_model_file_is_named_a_folder(here: Path) -> None:
    out = gpt_tui(here, "summary", "--config", "tiny", "--meta", "adir")
    one_line_exit_2(out, "--meta adir is a folder, not a file: give a meta.pkl")
    (here / "adir" / "meta.pkl").write_bytes(b"")
    out = gpt_tui(here, "summary", "--config", "tiny", "--meta", "adir")
    one_line_exit_2(out, "--meta adir is a folder, not a file: use --meta adir/meta.pkl")
    out = gpt_tui(here, "summary", "--checkpoint", "x.pt", "--model-file", "adir")
    one_line_exit_2(out, "--model-file adir is a folder, not a file: give a .py file")
    out = gpt_tui(here, "summary", "--checkpoint", "x.pt", "--model-file", "nope.py")
    one_line_exit_2(out, "--model-file nope.py: no such file (give a .py file)")
