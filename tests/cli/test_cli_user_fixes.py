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


def _controls(text: str) -> set[str]:
    return {ch for ch in text if (ord(ch) < 0x20 and ch != "\n") or ch == "\x7f"}


def test_a_batch_of_control_bytes_is_drawn_not_sent(tmp_path) -> None:
    import numpy as np

    data = tmp_path / "train.bin"  # ESC [ 3 1 m and NUL: what a byte-level batch can hold
    np.array([97, 27, 91, 51, 49, 109, 98, 0, 99, 10] * 40, dtype=np.uint16).tofile(data)
    done = gpt_tui("train-step", *TINY, "--set", "vocab_size=256", "--data", str(data))
    assert done.returncode == 0, done.stderr
    assert not _controls(done.stdout), sorted(_controls(done.stdout))
    assert "␛[31m" in done.stdout and "␀" in done.stdout


def test_generated_control_bytes_are_drawn_not_sent() -> None:
    args = ("generate", *TINY, "--set", "vocab_size=256", "--prompt", "ab", "--steps", "40")
    done = gpt_tui(*args, "--seed", "0")
    assert done.returncode == 0, done.stderr
    assert not _controls(done.stdout), sorted(_controls(done.stdout))


def test_visible_controls_draws_each_kind() -> None:
    from gpt_tui.io.batches import token_piece
    from gpt_tui.io.tokenizers import visible_controls

    assert visible_controls("a\x1b[0m\x00\x7f\x85 b") == "a␛[0m␀␡\\x85 b"
    assert token_piece("\n\t\r\x07") == "⏎→␍␇"


def test_a_misspelt_app_option_suggests_one_the_app_takes() -> None:
    done = gpt_tui("--promt", "x")
    assert done.returncode == 2 and "did you mean --prompt?" in done.stderr, done.stderr


async def test_the_app_opens_on_its_prompt_option() -> None:
    from gpt_tui.cli.app_cmd import _prompt_setup
    from gpt_tui.cli.common import model_spec
    from gpt_tui.cli.parser import parse_args
    from gpt_tui.ui.app import GptTuiApp

    args = parse_args(["--config", "tiny", "--prompt", "ROMEO:"])
    app = GptTuiApp(model_spec(args), setup=_prompt_setup(args.prompt), show_memory=False)
    async with app.run_test(size=(100, 30)) as pilot:
        for _ in range(3):
            await app.workers.wait_for_complete()
            await pilot.pause()
        assert app.open_error is None and app.prompt == "ROMEO:"


def test_a_text_file_as_checkpoint_says_what_it_found(tmp_path) -> None:
    bad = tmp_path / "x.pt"
    bad.write_text("hello world\n")
    done = gpt_tui("summary", "--checkpoint", str(bad))
    assert done.returncode == 2, done.stderr
    assert "it is a text file starting 'hello world'" in done.stderr, done.stderr


def test_a_file_as_case_says_what_a_case_folder_is(tmp_path) -> None:
    bad = tmp_path / "README.md"
    bad.write_text("# notes\n")
    done = gpt_tui("train-step", "--case", str(bad))
    assert done.returncode == 2 and "Errno" not in done.stderr, done.stderr
    assert "is not a case folder (a folder holding case.json, or a report folder" in done.stderr


def test_watch_on_open_without_a_terminal_says_it_raises(capsys) -> None:
    import pytest
    import torch

    import gpt_tui
    from gpt_tui.models import build_model, make_config

    model = build_model(make_config("tiny", "nanogpt"), "cpu", seed=0)
    with torch.no_grad():
        model.transformer.h[1].mlp.c_fc.weight[0, 0] = float("nan")
    x = torch.randint(65, (2, 16), generator=torch.Generator().manual_seed(1))
    # pytest's stdin is no terminal
    with pytest.raises(gpt_tui.NonFiniteError), gpt_tui.watch(model, on="open", report=None):
        model(x, x)
    err = capsys.readouterr().err
    assert "gpt-tui: no terminal: raising instead of opening the debugger" in err, err


def test_numerics_heads_title_fits_its_table_at_80_columns() -> None:
    import os

    env = {**os.environ, "COLUMNS": "80"}
    args = ["numerics", *TINY, "--prompt", "ab", "--dtype", "bfloat16"]
    done = subprocess.run(
        [sys.executable, "-m", "gpt_tui", *args],
        capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    title = next(i for i, line in enumerate(lines) if "Heads by" in line)
    assert lines[title].strip() == "Heads by largest pre-softmax logit"  # one line, whole
    assert lines[title + 1].split()[:2] == ["layer", "head"]
