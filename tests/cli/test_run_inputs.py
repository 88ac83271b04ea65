"""Bad inputs to train-step, train, diff and step (issue 19 item 5, issue 21 items 2 and 8):
each is one line with exit status 2; and Ctrl-C in a long command keeps what was done, says
how much, and exits 130."""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpt_tui.cli import run
from gpt_tui.io.checkpoints import save_nanogpt_checkpoint
from gpt_tui.models import build_model, make_config

TINY = ["--config", "tiny", "--device", "cpu"]


def gpt_tui(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpt_tui", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def one_line(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def write_bin(folder: Path, ids: list[int], chars: str | None = None) -> Path:
    np.array(ids, dtype=np.uint16).tofile(folder / "train.bin")
    if chars is not None:
        meta = {"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": {}}
        (folder / "meta.pkl").write_bytes(pickle.dumps(meta))
    return folder / "train.bin"


def test_an_empty_train_bin_is_one_line(tmp_path):
    (tmp_path / "train.bin").write_bytes(b"")
    one_line(gpt_tui("train-step", *TINY, "--data", str(tmp_path / "train.bin")), "empty (0 bytes)")


def test_a_meta_pkl_of_another_vocabulary_is_refused_not_used(tmp_path):
    path = write_bin(tmp_path, [i % 10 for i in range(400)], "abcdefghij")
    one_line(
        gpt_tui("train-step", *TINY, "--data", str(path)),
        "vocabulary of 10 characters and the model one of 65",
    )


def test_a_block_past_the_context_says_it_was_cropped(capsys):
    prompt = ["--prompt", "First Citizen: Before we proceed any further"]
    assert run(["train-step", *TINY, *prompt, "--block", "1000"]) == 0
    out = capsys.readouterr().out
    assert "note: --block 1000 cropped to the model's context of 16" in out
    assert run(["train-step", *TINY, *prompt, "--block", "1000", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["notes"] == ["--block 1000 cropped to the model's context of 16"]


@pytest.mark.parametrize(
    ("size", "needles"),
    [(0, ["is empty"]), (600, ["too short to train a context of 128", "--set block_size=N"])],
)
def test_train_on_a_text_too_short_for_its_context_is_one_line(tmp_path, size, needles):
    data = tmp_path / "short.txt"
    data.write_text(("First Citizen: Before we proceed any further, hear me.\n" * 20)[:size])
    result = gpt_tui("train", "--data", str(data), "--arch", "nanogpt", "--steps", "2",
                     "--out", str(tmp_path / "o"))  # fmt: skip
    one_line(result, *needles)
    assert not (tmp_path / "o").exists()


def test_diff_with_nothing_comparable_says_so_and_why(tmp_path):
    """As GPT-2 of width 64 and 256 byte tokens against the sample: not even the logits."""
    config = make_config("tiny", "nanogpt", {"n_embd": 64, "vocab_size": 256})
    wide = build_model(config, "cpu", seed=0)
    path = save_nanogpt_checkpoint(tmp_path, wide, iter_num=0, best_val_loss=0.0)
    result = gpt_tui("diff", *TINY, "--prompt", "ROMEO:", "--b-checkpoint", str(path))
    one_line(result, "nothing could be compared", "differ in shape", "(1, 6, 32) in A")
    assert "no divergence" not in result.stdout


def test_eval_prints_are_notes_and_json_stays_json(capsys):
    args = ["step", *TINY, "--prompt", "ROMEO:", "--break-at", "nanogpt.py:96"]
    assert run([*args, "--eval", "print('hi')", "--eval", "x.dim()", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)  # nothing before the JSON
    assert data["notes"] == ["--eval printed: hi"]
    assert [e["expr"] for e in data["eval"]] == ["print('hi')", "x.dim()"]
    assert run([*args, "--eval", "print('hi')"]) == 0
    assert "note: --eval printed: hi" in capsys.readouterr().out


# -- Ctrl-C keeps what was done ---------------------------------------------------------------


def interrupt_after_first_output(*args: str) -> tuple[int, str, str]:
    """Start the command, wait for its first streamed output on the pipe, send SIGINT."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpt_tui", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "COLUMNS": "100"},
        # Unbuffered: a buffered readline reads ahead, and communicate() (which reads the
        # pipes' descriptors) never sees what it read; the streamed text went missing.
        bufsize=0,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # blocks until the command has streamed something
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, (first + out).decode(), err.decode()


def test_ctrl_c_in_generate_keeps_the_tokens_and_says_how_many():
    args = ["generate", "--prompt", "ROMEO:", "--steps", "5000", "--seed", "1"]
    code, out, err = interrupt_after_first_output(*args)
    assert code == 130, err
    last = re.fullmatch(r"gpt-tui: interrupted after (\d+) tokens?", err.strip().splitlines()[-1])
    assert last is not None, err
    assert 0 < int(last.group(1)) < 5000
    assert "ROMEO:" in out and "Generation from" in out  # the text and the steps so far
    assert "Traceback" not in err


def test_ctrl_c_in_train_step_keeps_the_steps_and_says_how_many():
    code, out, err = interrupt_after_first_output("train-step", "--steps", "5000")
    assert code == 130, err
    last = re.fullmatch(r"gpt-tui: interrupted after (\d+) steps?", err.strip().splitlines()[-1])
    assert last is not None and int(last.group(1)) < 5000, err
    assert "batch:" in out and "health over" in out  # the step's report, then the health
    assert "Traceback" not in err


def test_ctrl_c_in_any_other_command_says_it_was_interrupted(monkeypatch, capsys):
    """summary and the rest keep nothing partial: one line, exit 130."""
    from gpt_tui.cli import parser

    def interrupted(_args) -> int:
        raise KeyboardInterrupt

    monkeypatch.setitem(parser.COMMANDS, "summary", (interrupted, "", True))
    assert run(["summary", *TINY]) == 130
    assert capsys.readouterr().err == "gpt-tui: interrupted\n"
