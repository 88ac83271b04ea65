"""A checkpoint of `gpt-tui train --arch nanochat` opens with a nanochat gpt.py (the
fixture package imports as upstream's does): meta's model_config holds nanochat's own
GPTConfig fields only, our other settings are left out with a note when nanochat's code
does the same, and refused when they would change the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from gpt_tui.cli import run
from gpt_tui.io.checkpoints import load_checkpoint
from gpt_tui.io.nanochat_eras import EXTRAS_KEY, UPSTREAM_FIELDS
from gpt_tui.train import TrainSettings, train

REPO = Path(__file__).resolve().parents[2]
GPT_FILE = REPO / "tests" / "fixtures" / "nanochat_checkout" / "nanochat" / "gpt.py"
TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind.\n" * 20


def trained(tmp_path: Path, name: str, **overrides: object) -> Path:
    """A 4-step `train --arch nanochat`; the fixture's gpt.py pads the vocabulary to 64."""
    data = tmp_path / "text.txt"
    data.write_text(TEXT)
    s = TrainSettings(
        data=str(data),
        arch="nanochat",
        preset="tiny",
        overrides={"padded_vocab_size": 64, **overrides},
        steps=4,
        out=str(tmp_path / name),
        batch_size=4,
        eval_interval=4,
        eval_iters=1,
    )
    train(s, progress=False)
    return tmp_path / name


def doctor(checkpoint: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "gpt_tui", "doctor", "--model-file", str(GPT_FILE)]
    cmd += ["--checkpoint", str(checkpoint), "--device", "cpu"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_trained_nanochat_opens_with_nanochats_gpt_py_and_agrees(tmp_path, capsys):
    out = trained(tmp_path, "nc")
    meta = json.loads(next(out.glob("meta_*.json")).read_text())
    assert list(meta["model_config"]) == list(UPSTREAM_FIELDS)  # GPTConfig(**model_config)
    assert meta[EXTRAS_KEY]["padded_vocab_size"] == 64 and "rope_base" in meta[EXTRAS_KEY]

    result = doctor(out)
    assert result.returncode == 0, result.stderr
    assert "gpt-tui settings backout, padded_vocab_size" in result.stdout
    assert "left out: GPTConfig has no such fields" in result.stdout

    # The file keeps its rotary tables in bfloat16 (as nanochat did): in bfloat16 the two
    # runs are the same computation, to the bit.
    args = ["diff", "--checkpoint", str(out), "--device", "cpu", "--dtype", "bfloat16"]
    args += ["--b-model-file", str(GPT_FILE), "--prompt", "To be, or", "--json"]
    capsys.readouterr()  # the training's log
    assert run(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["first_divergence"] is None and not data["unmatched"]
    assert all(r["max_abs_diff"] == 0 for r in data["records"])


def test_a_setting_nanochats_code_would_not_apply_is_refused_in_one_line(tmp_path):
    out = trained(tmp_path, "r", rope_base=500.0)
    assert load_checkpoint(out).config.rope_base == 500  # the built-in reads ours back
    result = doctor(out)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "rope_base=500.0 (nanochat's code: 10000.0) would change the model" in result.stderr


def test_checkpoints_saved_before_the_split_still_open(tmp_path):
    """Older versions wrote every field of ours into model_config."""
    out = trained(tmp_path, "old")
    meta_file = next(out.glob("meta_*.json"))
    meta = json.loads(meta_file.read_text())
    meta["model_config"].update(meta.pop(EXTRAS_KEY))
    meta_file.write_text(json.dumps(meta))
    result = doctor(out)
    assert result.returncode == 0, result.stderr
    assert "left out" in result.stdout
