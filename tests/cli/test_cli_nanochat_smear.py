"""`gpt-tui init` on a nanochat gpt.py of the smear/backout era (the fixture package imports
as upstream's does: attention through `nanochat.flash_attention`'s `flash_attn`): the break
example is the file's own attention call, and a checkpoint of its fresh init, opened as our
nanochat family, has every parameter within the era's rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt_tui.io.model_file import import_model_file

REPO = Path(__file__).resolve().parents[2]
GPT_FILE = REPO / "tests" / "fixtures" / "nanochat_smear" / "nanochat" / "gpt.py"
ARGS = dict(sequence_len=16, vocab_size=300, n_layer=4, n_head=4, n_kv_head=2, n_embd=64)


@pytest.fixture(scope="module")
def step0(tmp_path_factory) -> Path:
    """The file's model right after its own init_weights(), saved at step 0 as nanochat saves."""
    module = import_model_file(GPT_FILE)
    torch.manual_seed(0)
    model = module.GPT(module.GPTConfig(**ARGS, window_pattern="L"))
    model.init_weights()
    folder = tmp_path_factory.mktemp("smear")
    torch.save(model.state_dict(), folder / "model_000000.pt")
    meta = {"step": 0, "model_config": {**ARGS, "window_pattern": "L"}}
    (folder / "meta_000000.json").write_text(json.dumps(meta))
    return folder


def gpt_tui(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "gpt_tui", *args, "--device", "cpu"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_the_break_example_is_the_files_flash_attention_call(step0):
    done = gpt_tui("init", "--checkpoint", str(step0), "--model-file", str(GPT_FILE), "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    name, line = data["break_example"].split(":")
    assert name == "gpt.py"
    assert "flash_attn.flash_attn_func(" in GPT_FILE.read_text().splitlines()[int(line) - 1]
    # a function of the model's own file, not the fallback beside it (_sdpa_attention)
    assert data["break_function"] == "CausalSelfAttention.forward"
    table = gpt_tui("init", "--checkpoint", str(step0), "--model-file", str(GPT_FILE))
    assert f"break at (Code tab): gpt.py:{line} or CausalSelfAttention.forward" in table.stdout


def within_rule(row: dict) -> bool:
    """The std now is the rule's, within what sampling strays (1/√(2n) of it; 10% at least)."""
    if row["std"] is None:  # a single value
        return row["init"] != "unknown"
    n = 1
    for size in row["shape"]:
        n *= size
    tolerance = max(0.1, 3 / (2 * n) ** 0.5) * row["init_std"] + 1e-6
    return abs(row["std"] - row["init_std"]) <= tolerance


def test_a_step_0_checkpoint_of_the_files_init_is_within_the_eras_rules(step0):
    done = gpt_tui("init", "--checkpoint", str(step0), "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["rules"] == "nanochat's init of the smear/backout era (2026-03-14 on)"
    rows = {r["name"]: r for r in data["parameters"]}
    assert [name for name, row in rows.items() if not within_rule(row)] == []
    assert rows["transformer.wte.weight"]["init"] == "N(0, 0.8)"
    assert rows["transformer.h.0.mlp.c_fc.weight"]["init_std"] == pytest.approx(0.4 / 8)
    assert rows["resid_lambdas"]["init"] == "1.15 → 1.05"
    assert rows["x0_lambdas"]["init"] == "0.2 → 0.05"


@pytest.mark.parametrize("era", ["latest", "classic"])
def test_gpt_tuis_own_nanochat_of_an_era_is_within_its_rules(era):
    done = gpt_tui(
        "init", "--config", "tiny", "--arch", "nanochat", "--set", f"era={era}", "--json"
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    late = era == "latest"
    assert ("smear/backout era" in data["rules"]) == late
    rows = {r["name"]: r for r in data["parameters"]}
    assert [name for name, row in rows.items() if not within_rule(row)] == []
    assert rows["lm_head.weight"]["init"] == ("N(0, 0.001)" if late else "zeros")
