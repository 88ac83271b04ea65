"""`gpt-tui train-step`: the JSON schema of issue 12, text at 80 columns, one-line errors."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest

from gpt_tui.cli import run

TINY = ["train-step", "--config", "tiny", "--device", "cpu"]
PROMPT = ["--prompt", "First Citizen: Before we proceed any further"]


def train_json(capsys, *args: str) -> dict:
    assert run([*TINY, *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_has_the_schema_of_the_issue(capsys):
    out = train_json(capsys, *PROMPT, "--steps", "3")
    assert set(out) >= {
        "batch",
        "loss",
        "first_nonfinite",
        "grads",
        "grad_norm",
        "updates",
        "steps",
    }
    assert set(out["batch"]) >= {"rows", "block", "ignored_targets", "decoded"}
    assert out["batch"]["rows"] == 1 and out["batch"]["block"] == 15  # the context is 16
    row = out["batch"]["decoded"][0]
    assert row["input"][1:] == row["target"][:-1]  # targets are the inputs shifted by one
    assert abs(out["loss"] - math.log(65)) < 0.3 and out["first_nonfinite"] is None
    assert {g["name"] for g in out["grads"]} == {u["name"] for u in out["updates"]}
    assert all(u["ratio"] > 0 for u in out["updates"])
    assert [s["step"] for s in out["steps"]] == [0, 1, 2]
    for s in out["steps"]:
        assert set(s) >= {"step", "loss", "grad_norm", "max_update_ratio", "nonfinite",
                          "tokens_per_s"}  # fmt: skip
    assert out["steps"][0]["loss"] == pytest.approx(out["loss"], rel=1e-5)
    assert out["steps"][2]["loss"] < out["steps"][0]["loss"]  # it learns the one batch


def test_inject_grad_nan_with_watch_names_the_module_in_backward(capsys):
    out = train_json(capsys, "--inject-grad-nan", "transformer.h.1.attn", "--watch-nan")
    assert out["first_nonfinite"] == {
        "phase": "backward", "where": "transformer.h.1.attn",
        "text": "backward at transformer.h.1.attn", "held": [],
    }  # fmt: skip
    assert out["stopped"]["where"] == "transformer.h.1.attn"
    assert len(out["steps"]) == 1 and out["steps"][0]["nonfinite"] > 0


def test_inject_nan_names_the_forward_module(capsys):
    out = train_json(capsys, "--inject-nan", "transformer.h.0.mlp", "--watch-nan")
    # the NaN is put into the output: no weight of the module holds one
    assert out["first_nonfinite"] == {
        "phase": "forward", "where": "transformer.h.0.mlp",
        "text": "forward at transformer.h.0.mlp", "held": [],
    }  # fmt: skip
    assert out["phases"] == ["forward", "loss"]


def test_a_bin_with_meta_makes_the_batch(tmp_path, capsys):
    text = "We are accounted poor citizens, the patricians good.\n" * 20
    chars = sorted(set(text))
    np.array([chars.index(c) for c in text], dtype=np.uint16).tofile(tmp_path / "train.bin")
    meta = {"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": {}}
    (tmp_path / "meta.pkl").write_bytes(pickle.dumps(meta))
    vocab = f"vocab_size={len(chars)}"  # the model the data was prepared for
    data = ["--data", str(tmp_path / "train.bin"), "--set", vocab]
    out = train_json(capsys, *data, "--batch", "3", "--block", "8")
    assert out["batch"]["rows"] == 3 and out["batch"]["block"] == 8
    for row in out["batch"]["decoded"]:
        i = row["offset"]
        assert row["input"].replace("⏎", "\n") == text[i : i + 8]


def test_text_output_fits_80_columns(capsys):
    assert run([*TINY, *PROMPT, "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "backward, in the order autograd ran it" in out and "health over 2 steps" in out
    assert "process RSS" in out  # the whole process, not the step: gpt-tui memory is that
    assert "first non-finite: none" in out
    assert max(len(line) for line in out.splitlines()) <= 80


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--inject-grad-nan", "transformer.h.9.attn"], "no module 'transformer.h.9.attn'"),
        (["--inject-nan", "nope"], "--inject-nan: no module 'nope'"),
        (["--data", "/nonexistent/x.bin"], "no such file"),
        (["--dtype", "int8"], "autocast takes float16 or bfloat16"),
        (["--inject-grad-nan", "transformer.wte"], "token ids"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(args, message, capsys):
    assert run([*TINY, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_out_of_vocabulary_ids_are_named_before_the_forward(tmp_path, capsys):
    np.array([1, 2, 3, 70, 4, 5] * 10, dtype=np.uint16).tofile(tmp_path / "val.bin")
    assert run([*TINY, "--data", str(tmp_path / "val.bin"), "--block", "8", "--batch", "8"]) == 2
    err = capsys.readouterr().err
    assert "input id 70 at row" in err and "outside the model's vocabulary of 65" in err
