"""`gpt-tui diff / patch / attribute`: "find the bug in my port" on a real checkpoint, the
JSON each prints, tables that read at 80 columns, and the one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gpt_tui.cli import run
from gpt_tui.engine.core.session import samples_dir
from tests.engine.compare_helpers import FIXTURES, write_port

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def checkpoint() -> Path:
    """The shipped Shakespeare nanoGPT: a real checkpoint, saved as nanoGPT saves them."""
    return samples_dir() / "shakespeare-nanogpt" / "ckpt.pt"


def gpt_tui(capsys, *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_diff_our_family_against_the_users_port(capsys, checkpoint, tmp_path):
    base = ["diff", "--checkpoint", str(checkpoint), "--device", "cpu", "--prompt", "ROMEO:"]
    code, out, _ = gpt_tui(capsys, *base, "--b-model-file", str(FIXTURES / "model.py"), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["first_divergence"] is None
    assert {"name", "max_abs_diff", "rel_diff", "cosine"} <= set(data["records"][0])
    assert max(r["rel_diff"] for r in data["records"]) <= 1e-5

    buggy = str(write_port("nanogpt_relu", tmp_path))
    code, out, _ = gpt_tui(capsys, *base, "--b-model-file", buggy, "--json")
    first = json.loads(out)["first_divergence"]
    assert code == 0 and first["name"] == "transformer.h.0.mlp"
    assert first["input_max_abs_diff"] == 0 and first["max_abs_diff"] > 1e-3

    code, out, _ = gpt_tui(capsys, *base, "--b-model-file", buggy, "--leaves")
    assert code == 0
    assert (
        out.strip()
        .splitlines()[-1]
        .startswith("first divergence: diverges at transformer.h.0.mlp.gelu: its input agrees to 0")
    )


def test_diff_table_reads_at_80_columns(capsys, monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("NO_COLOR", "1")
    args = ["diff", "--config", "tiny", "--device", "cpu", "--prompt", "To be or not"]
    code, out, _ = gpt_tui(capsys, *args, "--b-dtype", "bfloat16", "--leaves")
    assert code == 0
    lines = ANSI.sub("", out).rstrip().splitlines()
    assert max(len(line) for line in lines) <= 80
    assert any(line.lstrip().startswith("h.0.mlp.c_fc ") for line in lines)
    assert "dtypes differ (float32 vs bfloat16)" in out
    assert lines[-1].startswith(("no divergence", "first divergence"))


def test_diff_kv_cache_agrees(capsys):
    args = ["diff", "--config", "tiny", "--arch", "nanochat", "--device", "cpu"]
    code, out, _ = gpt_tui(capsys, *args, "--prompt", "To be or not", "--b-kv-cache", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["first_divergence"] is None and data["positions"] == [11]


@pytest.mark.parametrize(
    "b_prompt, position, tokens", [("JULIET", 0, "('R' vs 'J')"), ("ROMEOS", 5, "(':' vs 'S')")]
)
def test_diff_of_two_prompts_names_the_token_they_differ_in(capsys, b_prompt, position, tokens):
    # Different prompts make every module differ: the verdict says so, not "lost in code".
    args = ["diff", "--config", "tiny", "--device", "cpu", "--prompt", "ROMEO:"]
    code, out, _ = gpt_tui(capsys, *args, "--b-prompt", b_prompt, "--json")
    assert code == 0
    first = json.loads(out)["first_divergence"]
    assert first["token_position"] == position
    assert first["message"].startswith(f"the prompts differ at token {position} {tokens}")
    assert "lost in code" not in first["message"]
    code, out, _ = gpt_tui(capsys, *args, "--b-prompt", b_prompt)
    assert code == 0 and f"first divergence: the prompts differ at token {position}" in out


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--b-prompt", "To"], ["run A has 6 tokens and run B 2", "same token length"]),
        (["--b-dtype", "float8"], ["run B cannot be opened", "float8"]),
        (["--b-checkpoint", "/no/such/ckpt.pt"], ["run B cannot be opened", "no such file"]),
        (["--b-set", "n_layer=zero"], ["run B cannot be opened", "n_layer"]),
    ],
)
def test_diff_mistakes_are_one_line(capsys, extra, needles):
    args = ["diff", "--config", "tiny", "--device", "cpu", "--prompt", "ROMEO:", *extra]
    code, _, err = gpt_tui(capsys, *args)
    assert_one_line_error(code, err, *needles)


LONG = "abcdefghijklmnopqr"  # 18 characters; tiny's context is 16 tokens


def test_diff_crops_a_long_prompt_with_the_note_trace_gives(capsys):
    code, out, _ = gpt_tui(capsys, "trace", "--config", "tiny", "--prompt", LONG)
    assert code == 0
    note = next(line for line in out.splitlines() if line.startswith("note:"))
    assert "18 tokens cropped from the left to the last 16" in note
    args = ["diff", "--config", "tiny", "--device", "cpu", "--prompt", LONG]
    code, out, _ = gpt_tui(capsys, *args, "--b-dtype", "bfloat16")
    assert code == 0
    assert note in out.splitlines()  # once: A and B crop alike
    code, out, _ = gpt_tui(capsys, *args, "--b-kv-cache", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["notes"] == [note.removeprefix("note: ")]
    assert data["positions"] == [15] and data["first_divergence"] is None
    # the crops differ: each is named, and the runs compare the windows they ran
    code, out, _ = gpt_tui(capsys, *args, "--b-prompt", LONG[:-1], "--json")
    assert code == 0
    data = json.loads(out)
    assert [n.split(" cropped")[0] for n in data["notes"]] == [
        "A's prompt of 18 tokens",
        "B's prompt of 17 tokens",
    ]
    assert data["first_divergence"]["token_position"] == 0


def test_diff_prompts_that_differ_in_length_after_the_crop_say_so(capsys):
    args = ["diff", "--config", "tiny", "--device", "cpu", "--prompt", LONG]
    code, _, err = gpt_tui(capsys, *args, "--b-prompt", LONG[:10])
    assert_one_line_error(
        code, err, "run A has 16 tokens and run B 10", "A's prompt of 18 tokens cropped"
    )


def test_patch_and_attribute_crop_a_long_prompt_with_the_note_trace_gives(capsys):
    """They refused a prompt over the context ("give a shorter prompt") while trace, diff
    and the app's own patch and attribute crop it."""
    base = ["--config", "tiny", "--device", "cpu", "--prompt", LONG]
    code, out, _ = gpt_tui(capsys, "patch", *base, "--b-prompt", LONG[:-1] + "X", "--answer",
                           " ", "--wrong", "R", "--json")  # fmt: skip
    assert code == 0
    cropped = "prompt of 18 tokens cropped from the left to the last 16"
    data = json.loads(out)
    assert len(data["cols"]) == 16 and [cropped in n for n in data["notes"]] == [True]
    code, out, _ = gpt_tui(capsys, "patch", *base, "--b-prompt", LONG[:-1] + "XY", "--answer", " ",
                           "--wrong", "R", "--json")  # fmt: skip
    assert code == 0
    assert [n.split(" cropped")[0] for n in json.loads(out)["notes"]] == [
        "the clean run's prompt of 18 tokens",
        "the corrupted run's prompt of 19 tokens",
    ]
    code, _, err = gpt_tui(capsys, "patch", *base, "--b-prompt", "X" + LONG, "--answer", " ",
                           "--wrong", "R")  # fmt: skip
    assert_one_line_error(code, err, "nothing to recover", "the corrupted run's prompt of 19")
    code, out, _ = gpt_tui(capsys, "attribute", *base, "--answer", " ", "--wrong", "R")
    assert code == 0
    assert any(line.startswith("note: " + cropped) for line in out.splitlines())


SAMPLE = ["--sample", "shakespeare-nanogpt", "--device", "cpu"]
PATCH = ["--prompt", "KING HENRY", "--b-prompt", "KING RICHA", "--answer", " ", "--wrong", "R"]


def test_patch_json_is_a_layer_by_position_matrix(capsys):
    code, out, _ = gpt_tui(capsys, "patch", *SAMPLE, *PATCH, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["rows"] == [f"layer {i}" for i in range(4)]
    assert len(data["cols"]) == 10 and data["cols"][0] == "0 K"
    assert all(len(row) == 10 for row in data["values"])
    # "KING " is the same in both prompts: patching it changes nothing
    assert all(abs(v) < 1e-5 for row in data["values"] for v in row[:5])
    assert data["clean_logit_diff"] > data["corrupted_logit_diff"]

    code, out, _ = gpt_tui(capsys, "patch", *SAMPLE, *PATCH, "--what", "heads", "--json")
    data = json.loads(out)
    assert code == 0 and data["cols"] == [f"head {h}" for h in range(4)]


def test_patch_heatmap_reads_at_80_columns(capsys, monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = gpt_tui(capsys, "patch", *SAMPLE, *PATCH)
    assert code == 0
    lines = ANSI.sub("", out).rstrip().splitlines()
    assert max(len(line) for line in lines) <= 80
    assert any(line.startswith("L0 ") for line in lines)
    assert "100 = clean, 0 = corrupted" in lines[-1]


@pytest.mark.parametrize(
    "change, needles",
    [
        (["--b-prompt", "KING"], ["10 tokens and the corrupted one 4", "same token length"]),
        (["--answer", "Zq"], ["--answer 'Zq' is 2 tokens", "give a single token"]),
        (["--wrong", "é"], ["--wrong 'é'", "not in the model's 65-character vocabulary"]),
        (["--wrong", " "], ["--answer and --wrong are the same token"]),
    ],
)
def test_patch_mistakes_are_one_line(capsys, change, needles):
    args = list(PATCH)
    for flag, value in zip(change[::2], change[1::2], strict=True):
        args[args.index(flag) + 1] = value
    code, _, err = gpt_tui(capsys, "patch", *SAMPLE, *args)
    assert_one_line_error(code, err, *needles)


@pytest.mark.parametrize("sample", ["shakespeare-nanogpt", "shakespeare-nanochat"])
def test_attribute_json_sums_to_the_logit_difference(capsys, sample):
    args = ["attribute", "--sample", sample, "--device", "cpu", "--prompt", "KING HENRY"]
    code, out, _ = gpt_tui(capsys, *args, "--answer", " ", "--wrong", "R", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["sum"] == pytest.approx(data["logit_diff"], abs=1e-4)
    assert sum(c["value"] for c in data["components"]) == pytest.approx(data["sum"], abs=1e-6)
    assert {"name", "value"} <= set(data["components"][0]) and data["position"] == 9


def test_attribute_lists_ranked_components_at_80_columns(capsys, monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("COLUMNS", "80")
    args = ["attribute", *SAMPLE, "--prompt", "KING HENRY", "--answer", " ", "--top", "5"]
    code, out, _ = gpt_tui(capsys, *args)
    assert code == 0
    lines = ANSI.sub("", out).rstrip().splitlines()
    assert max(len(line) for line in lines) <= 80
    rows = [line for line in lines if "more component" not in line]
    found = [re.search(r" ([+-]\d+\.\d{4})\b", line) for line in rows]
    shares = [float(m.group(1)) for m in found if m]
    assert len(shares) == 5 and shares == sorted(shares, key=abs, reverse=True)
    assert lines[-1].startswith("sum ") and "pre-softcap logit difference" in lines[-1]


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--answer", "Zq"], ["--answer 'Zq' is 2 tokens"]),
        (["--answer", "é"], ["--answer 'é'", "65-character vocabulary"]),
        (["--answer", "A", "--position", "12"], ["--position 12 is outside the prompt's 10"]),
    ],
)
def test_attribute_mistakes_are_one_line(capsys, extra, needles):
    code, _, err = gpt_tui(capsys, "attribute", *SAMPLE, "--prompt", "KING HENRY", *extra)
    assert_one_line_error(code, err, *needles)
