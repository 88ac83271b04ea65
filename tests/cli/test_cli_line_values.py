"""`gpt-tui step` at a line: a scalar result's value and a tuple's elements in --json and in
the text, the locals read again after a `!statement`, and a breakpoint on a line without
code refused in one line (exit 2), naming the nearest lines that hold code."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parents[2] / "gpt_tui" / "models"
KERNEL = "y = F.scaled_dot_product_attention("
TOPK = "torch.softmax(x[0, -1], -1).topk(5)"


def line_of(marker: str) -> int:
    lines = (MODELS / "nanogpt.py").read_text().splitlines()
    return next(i + 1 for i, text in enumerate(lines) if marker in text)


def step(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    env.update(COLUMNS="80", NO_COLOR="1")
    return subprocess.run(
        [sys.executable, "-m", "gpt_tui", "step", "--config", "tiny", "--prompt", "ROMEO:", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_scalars_and_tuples_show_their_values_in_json_and_text() -> None:
    at = ("--break-at", f"nanogpt.py:{line_of(KERNEL)}")
    evals = ("--eval", "x.std()", "--eval", "float(x.std())", "--eval", TOPK)
    evals += ("--eval", f"{TOPK}.indices.tolist()", "--eval", "!x = x * 0")
    result = step(*at, *evals, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    std, exact, topk, indices, zeroed = data["eval"]
    assert re.fullmatch(r"tensor\(\S+\) float32 cpu", std["repr"]) and std["shape"] == []
    assert float(std["repr"][7:].split(")")[0]) == pytest.approx(float(exact["repr"]), rel=5e-3)
    assert topk["repr"].startswith("topk(values=tensor([")
    assert f"indices=tensor({indices['repr']}) int64 cpu)" in topk["repr"]
    assert zeroed["max"] == 0
    x = next(v for v in data["frame"]["locals"] if v["name"] == "x")
    assert (x["min"], x["max"]) == (0, 0)  # the locals after the statement, not before

    text = step(*at, *evals[:2], *evals[4:6]).stdout
    assert f"  {std['repr']}" in text.splitlines()
    assert f"indices=tensor({indices['repr']})" in text


@pytest.mark.parametrize("where", ["1", "blank"])
def test_a_line_without_code_is_one_line_with_the_nearest_code_and_exit_2(where: str) -> None:
    lines = (MODELS / "nanogpt.py").read_text().splitlines()
    start = line_of(KERNEL)
    line = 1 if where == "1" else next(i + 1 for i in range(start, len(lines)) if not lines[i])
    result = step("--break-at", f"nanogpt.py:{line}")
    assert result.returncode == 2 and result.stdout == ""
    err = result.stderr.strip()
    assert "\n" not in err and "Traceback" not in err
    assert f"line {line} of nanogpt.py runs no code" in err
    near = re.findall(r"nanogpt\.py:(\d+)", err.split("nearest")[1])
    assert near
    again = step("--break-at", f"nanogpt.py:{near[-1]}", "--json")
    assert again.returncode == 0, again.stderr
