"""What a new user met first: the order generate prints in, control bytes drawn visibly, and
error lines that say what was found and what to do."""

from __future__ import annotations

import json
import subprocess
import sys

TINY = ["--config", "tiny"]


def gpt_tui(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpt_tui", *args],
        capture_output=True, text=True, timeout=180, cwd=cwd,
    )  # fmt: skip


def test_generate_prints_the_text_then_the_table_and_json_stays_pure() -> None:
    done = gpt_tui("generate", *TINY, "--prompt", "ab", "--steps", "3", "--seed", "0")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    rule = next(i for i, line in enumerate(lines) if "text" in line and "──" in line)
    title = next(i for i, line in enumerate(lines) if "Generation from" in line)
    assert lines[rule + 1].startswith("ab") and rule < title
    done = gpt_tui("generate", *TINY, "--prompt", "ab", "--steps", "3", "--seed", "0", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)  # nothing but the JSON document
    assert len(data["steps"]) == 3 and data["text"].startswith("ab")
