"""`gpt-tui init`: the init rules and the mode, as a table and as JSON."""

from __future__ import annotations

import json
import subprocess
import sys


def gpt_tui(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpt_tui", *args], capture_output=True, text=True, timeout=120
    )


def test_init_prints_each_parameters_rule_and_the_mode() -> None:
    done = gpt_tui("init", "--config", "tiny", "--set", "dropout=0.1")
    assert done.returncode == 0, done.stderr
    proj = next(line for line in done.stdout.splitlines() if "h.1.attn.c_proj" in line)
    assert "N(0, 0.01)" in proj and "0.02/√(2·n_layer)" in proj
    assert "mode: eval mode · dropout off (p=0.1 in 7 places; on in train mode)" in done.stdout


def test_init_json_agrees_with_the_table() -> None:
    done = gpt_tui("init", "--config", "tiny", "--arch", "nanochat", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    rows = {r["name"]: r for r in data["parameters"]}
    assert rows["lm_head.weight"]["init"] == "zeros" and rows["lm_head.weight"]["std"] == 0
    assert data["mode"] == "eval" and data["dropout"] == [] and not data["dropout_on"]
