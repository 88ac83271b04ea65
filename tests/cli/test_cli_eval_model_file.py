"""`gpt-tui eval --model-file`: a nanoGPT-style file, whose forward keeps only the last
position's logits without targets, scores the checkpoint as the built-in model does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpt_tui.engine.core.session import samples_dir

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "user_models"
CKPT = samples_dir() / "shakespeare-nanogpt" / "ckpt.pt"
TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved.\n"
) * 4


def eval_json(*args: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "gpt_tui", "eval", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_eval_of_a_nanogpt_model_file_equals_the_built_in_model(tmp_path):
    data = tmp_path / "text.txt"
    data.write_text(TEXT, encoding="utf-8")
    common = ["--checkpoint", str(CKPT), "--data", str(data), "--split", "all"]
    built_in = eval_json(*common)
    user = eval_json("--model-file", str(FIXTURES / "model.py"), *common)
    assert user["tokens"] == built_in["tokens"] == len(TEXT) - 1
    assert user["windows"] > 1  # more than one batch row: the crash was a batch mismatch
    assert user["loss"] == pytest.approx(built_in["loss"], rel=1e-5)
    assert 0.5 < built_in["loss"] < 4.2  # a trained character model, not chance (ln 65)
