"""Bad input at the command line: each mistake is one line on stderr naming it, exit status
2, and no traceback; a bug is one line with where to report it, exit status 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gpt_tui.cli import parser, run

TINY = ["--config", "tiny"]


def gpt_tui(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpt_tui", *args], capture_output=True, text=True, timeout=120
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


@pytest.mark.parametrize(
    "args,needles",
    [
        # argparse mistakes: the problem, then where help is
        (["--arch", "nanogtp"], ["'nanogtp'", "see `gpt-tui --help`"]),
        (["trace", *TINY], ["--prompt", "see `gpt-tui trace --help`"]),
        (["--seed", "abc"], ["--seed", "'abc' is not a whole number"]),
        (["summary", "--seed", "-3"], ["--seed", "0 or more"]),
        (["NOSUCH"], ["unknown command 'NOSUCH'", "see `gpt-tui --help`"]),
        (["NOSUCH", "--help"], ["unknown command 'NOSUCH'"]),
        (["sumary"], ["did you mean 'summary'"]),
        (["summary", "--frobnicate"], ["unrecognized arguments: --frobnicate"]),
        (["--frobnicate"], ["unrecognized arguments: --frobnicate"]),
        ([*TINY, "trace", "--prompt", "a"], ["the command goes first: gpt-tui trace"]),
        # numbers outside their meaning
        (["generate", *TINY, "--prompt", "a", "--steps", "0"], ["--steps", "1 or more"]),
        (["summary", *TINY, "--depth", "-1"], ["--depth", "0 or more"]),
        (["generate", *TINY, "--prompt", "a", "--temperature", "-1"], ["--temperature"]),
        (["generate", *TINY, "--prompt", "a", "--temperature", "nan"], ["finite"]),
        (["generate", *TINY, "--prompt", "a", "--top-p", "0"], ["--top-p", "above 0"]),
        (["generate", *TINY, "--prompt", "a", "--top-p", "1.5"], ["--top-p", "at most 1"]),
        (["generate", *TINY, "--prompt", "a", "--top-k", "0"], ["--top-k", "1 or more"]),
        (["generate", *TINY, "--prompt", "a", "--candidates", "0"], ["--candidates"]),
        (["trace", *TINY, "--prompt", "a", "--attention", "-1"], ["--attention"]),
        (["trace", *TINY, "--prompt", "a", "--attention", "2"], ["layers are 0..1"]),
        (["train", "--data", "x", "--out", "y", "--lr", "0"], ["--lr", "above 0"]),
        (["train", "--data", "x", "--out", "y", "--batch-size", "0"], ["--batch-size"]),
        # configs
        (["summary", "--config", "gpt3"], ["unknown config 'gpt3'"]),
        (["summary", *TINY, "--set", "foo=1"], ["unknown config field 'foo'"]),
        (["summary", *TINY, "--set", "n_layer=abc"], ["n_layer takes a whole number"]),
        (["summary", *TINY, "--set", "n_layer"], ["key=value"]),
        # devices and dtypes
        (["summary", *TINY, "--device", "tpu"], ["unknown --device 'tpu'"]),
        (["summary", *TINY, "--dtype", "int8"], ["unknown --dtype 'int8'"]),
        # prompts
        (["trace", *TINY, "--prompt", ""], ["the prompt is empty"]),
        (["generate", *TINY, "--prompt", ""], ["the prompt is empty"]),
        (["trace", *TINY, "--prompt", "héllo"], ["not in the model's"]),
        (["step", *TINY, "--prompt", "日本", "--watch-nan"], ["not in the model's"]),
        # breakpoints
        (["step", *TINY, "--prompt", "ROMEO:", "--break", "nothing.*"], ["matches no module"]),
        (["step", *TINY, "--prompt", "ROMEO:"], ["give --break GLOB"]),
        # files
        (["eval", *TINY, "--data", "/no/such/file.txt"], ["--data /no/such/file.txt"]),
        # a misspelt option is named with the near one
        (["trace", *TINY, "--promt", "hi"], ["unknown option --promt (did you mean --prompt?)"]),
        (["generate", *TINY, "--prompt", "a", "--step", "x"], ["--steps"]),  # an abbreviation
        # lines and tokens that do not exist
        (["step", *TINY, "--prompt", "ROMEO:", "--break-at", "nanogpt.py:0"], ["line 0"]),
        (["step", *TINY, "--prompt", "ROMEO:", "--token", "100000"], ["at most 10,000"]),
    ],
)
def test_bad_input_is_one_line_with_status_2(args, needles):
    assert_one_line_error(gpt_tui(*args), *needles)


def test_cuda_without_a_gpu_is_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    assert_one_line_error(gpt_tui("summary", *TINY, "--device", "cuda"), "--device cuda")


@pytest.mark.parametrize("text", ["", "a", "abc"])
def test_eval_on_a_text_too_short_for_its_split(tmp_path, text):
    data = tmp_path / "short.txt"
    data.write_text(text)
    result = gpt_tui("eval", *TINY, "--data", str(data))
    assert_one_line_error(result, "eval needs at least 2", "--split all")


def test_eval_counts_windows_in_words(tmp_path, capsys):
    data = tmp_path / "text.txt"
    data.write_text("the quick brown fox jumps over the lazy dog.\n" * 3)  # val: 13 tokens
    assert run(["eval", *TINY, "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "1 window of 16" in out and "1 windows" not in out
    data.write_text("the quick brown fox jumps over the lazy dog.\n" * 40)
    assert run(["eval", *TINY, "--data", str(data), "--split", "all"]) == 0
    assert "windows of 16" in capsys.readouterr().out


def test_top_level_help_lists_every_command():
    result = gpt_tui("--help")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    for name, (_, summary, _) in parser.COMMANDS.items():
        assert any(line.split()[:1] == [name] and summary in line for line in lines), name
    assert {"summary", "trace", "step", "generate"} <= set(parser.COMMANDS)


def test_a_long_generation_says_the_crop_note_once():
    result = gpt_tui("generate", *TINY, "--prompt", "ROMEO:", "--steps", "40")
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stdout.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "cropped" in notes[0], result.stdout
    assert "(at 29 steps)" in result.stdout  # steps 11..39 outgrow the 16-token context


def boom(_args) -> int:
    raise RuntimeError("an invariant broke\nsecond line")


def test_a_bug_is_one_line_with_where_to_report_it(monkeypatch, capsys):
    monkeypatch.setitem(parser.COMMANDS, "configs", (boom, "broken", False))
    monkeypatch.delenv("GPT_TUI_DEBUG", raising=False)
    assert run(["configs"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "internal error: RuntimeError: an invariant broke" in err and "report" in err
    monkeypatch.setenv("GPT_TUI_DEBUG", "1")
    with pytest.raises(RuntimeError, match="an invariant broke"):
        run(["configs"])


def test_entry_point_is_the_package_main():
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert 'gpt-tui = "gpt_tui.cli:main"' in text
    from gpt_tui.cli import main

    assert callable(main)


def test_a_reader_that_leaves_early_is_no_failure() -> None:
    """`gpt-tui summary | head -1`: the pipe closes before the table is written."""
    import subprocess
    import sys

    for command in (["summary", "--config", "tiny"], ["configs"]):
        child = subprocess.Popen(
            [sys.executable, "-m", "gpt_tui", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert child.stdout is not None and child.stderr is not None
        child.stdout.close()  # the reader is gone before a byte was written
        err = child.stderr.read()
        assert child.wait(timeout=120) == 0, err
        assert err == b""
