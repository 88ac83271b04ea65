"""Every table reads at 80 columns: a terminal is forced through rich's own switches
(TTY_COMPATIBLE=1, COLUMNS=80); no line is wider, and no cell that matters is cut."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
TINY = ["--config", "tiny"]


def gpt_tui(*args: str, columns: int | None = 80) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    if columns is not None:
        env.update(TTY_COMPATIBLE="1", COLUMNS=str(columns), NO_COLOR="1")
    result = subprocess.run(
        [sys.executable, "-m", "gpt_tui", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return result


def lines_at_80(*args: str) -> list[str]:
    lines = ANSI.sub("", gpt_tui(*args).stdout).splitlines()
    too_wide = [line for line in lines if len(line) > 80]
    assert not too_wide, too_wide
    cut = [line for line in lines if "…" in line]
    assert not cut, cut
    return lines


def test_configs_at_80_keeps_names_families_and_counts():
    lines = lines_at_80("configs")
    rows = {tuple(line.split()[:2]): line.split() for line in lines if line[:1].isalnum()}
    for preset in ("gpt2-medium", "gpt2-large", "gpt2-xl"):
        assert rows[(preset, "nanogpt")][-1].endswith(("M", "B"))
    assert rows[("small", "nanogpt")][-1] == "10.75M"
    assert rows[("d20", "nanochat")][2:] == ["20", "10", "10", "1280", "2048", "32768", "477.1M"]


def test_configs_piped_keeps_every_column():
    out = gpt_tui("configs", columns=None).stdout
    assert "10,745,088" in out and "nanoGPT's shakespeare-char shape" in out


@pytest.mark.parametrize("config", ["small", "gpt2"])
def test_summary_at_80_keeps_every_parameter_name(config):
    args = ["summary", "--config", config, "--device", "meta"]
    lines = lines_at_80(*args)
    data = json.loads(gpt_tui(*args, "--json", columns=None).stdout)
    first_cells = {line.split()[0] for line in lines if line.split()}
    for p in data["parameters"]:
        assert p["name"].removeprefix("transformer.") in first_cells, p["name"]
    assert any("wte.weight" in line and "lm_head.weight" in line for line in lines)  # tied


def test_trace_and_attention_at_80():
    lines = lines_at_80("trace", *TINY, "--prompt", "ROMEO:", "--attention", "1")
    assert any(line.startswith("h.1.mlp ") for line in lines)
    assert any("mean entropy" in line or "entropy" in line for line in lines)


def test_generate_at_80_keeps_tokens_and_cache():
    lines = lines_at_80("generate", *TINY, "--prompt", "ROMEO:", "--steps", "12")
    rows = [line.split() for line in lines if re.match(r"\s*\d+\s", line)]
    assert [int(r[0]) for r in rows] == list(range(12))
    assert all(re.fullmatch(r"\d+/16", r[-1]) for r in rows)


def test_eval_and_doctor_at_80(tmp_path):
    data = tmp_path / "text.txt"
    data.write_text("the quick brown fox jumps over the lazy dog.\n" * 40)
    lines_at_80("eval", *TINY, "--data", str(data))
    lines = lines_at_80("doctor", *TINY, "--arch", "nanochat")
    topics = [line.split()[0] for line in lines if line.split()]
    for topic in ("model", "architecture", "parameters", "attention", "tokenizer"):
        assert topic in topics
    assert any("captured (ok)" in line for line in lines)


def test_memory_at_80_keeps_every_number_whole():
    """Five columns of "256.5 KiB" beside "transformer.h.0.attn.c_attn" were cut to "256.5 K…"
    at 80 columns; the narrow table drops "transformer." and the "iB" its note explains."""
    args = ["memory", *TINY, "--device", "cpu", "--batch", "8", "--block", "16"]
    lines = lines_at_80(*args)
    data = json.loads(gpt_tui(*args, "--json", columns=None).stdout)["report"]

    def cells(name: str) -> list[str]:
        return next(line[len(name) :].split() for line in lines if line.startswith(name + " "))

    for m in data["modules"]:
        row = cells(m["name"].removeprefix("transformer.") or "(model)")
        assert len(row) == 5 and all(re.fullmatch(r"-|\d+B|\d+\.\dK", c) for c in row), row
    total = cells("total")
    assert total[0] == f"{sum(m['params'] for m in data['modules']) / 1024:.1f}K"
    assert any(line.startswith("K/M/G: KiB/MiB/GiB; optim: optimizer state") for line in lines)
    lines = lines_at_80(*args, "--dtype", "bfloat16")  # six columns: weight copies too
    assert any(line.split()[:2] == ["h.0.mlp.c_fc", "16.0K"] for line in lines)
    assert any("w copies" in line for line in lines)
