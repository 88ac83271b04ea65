"""`gpt-tui step --break-at 'FILE:LINE if COND'`: the pause is the first where the
condition holds in the frame; a condition that is not Python is one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

from gpt_tui.cli import run

MODELS = Path(__file__).resolve().parents[2] / "gpt_tui" / "models"


def line_of(path: Path, marker: str) -> int:
    lines = path.read_text().splitlines()
    return next(i + 1 for i, text in enumerate(lines) if marker in text)


def test_break_at_with_a_condition_stops_where_it_holds(capsys) -> None:
    line = line_of(MODELS / "nanogpt.py", "y = F.scaled_dot_product_attention(")
    spec = f"nanogpt.py:{line} if self.c_attn is not None and T > 3"
    args = ["step", "--config", "tiny", "--prompt", "ab", "--break-at", spec, "--json"]
    assert run(args) == 0
    assert json.loads(capsys.readouterr().out).get("frame") is None  # T == 2: never
    args[4] = "abcdef"
    assert run(args) == 0
    frame = json.loads(capsys.readouterr().out)["frame"]
    assert (frame["line"], frame["module"]) == (line, "transformer.h.0.attn")


def test_a_condition_that_is_not_python_is_one_line(capsys) -> None:
    args = ["step", "--config", "tiny", "--prompt", "ab", "--break-at", "norm if ((", "--json"]
    assert run(args) == 2
    err = capsys.readouterr().err.strip()
    assert "not a Python expression" in err and "\n" not in err


def test_a_condition_that_raises_stops_and_says_so_in_text_and_json(capsys) -> None:
    line = line_of(MODELS / "nanogpt.py", "y = F.scaled_dot_product_attention(")
    spec = f"nanogpt.py:{line} if nosuch > 1"
    args = ["step", "--config", "tiny", "--prompt", "ROMEO:", "--break-at", spec]
    error = "NameError: name 'nosuch' is not defined"
    assert run(args) == 0
    out = capsys.readouterr().out
    assert f"breakpoint 1 break {spec} · hit 1\n" in out
    assert f"error in its condition: {error} (stopped, as pdb does)" in out
    assert run([*args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["breakpoint"]["error"] == error and data["frame"]["line"] == line
