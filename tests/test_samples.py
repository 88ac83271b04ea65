"""The shipped sample models: they load like users' checkpoints and they learned something."""

from __future__ import annotations

import json

import pytest

from gpt_tui.cli import run
from gpt_tui.engine.core.session import ModelSpec, Session, list_samples

SAMPLES = ["shakespeare-nanogpt", "shakespeare-nanochat"]
FORMATS = {"shakespeare-nanogpt": "nanogpt-ckpt", "shakespeare-nanochat": "nanochat"}


def test_both_samples_are_shipped_and_listed(capsys):
    assert {p.name for p in list_samples()} >= set(SAMPLES)
    assert run(["samples"]) == 0
    assert "shakespeare-nanogpt (default)" in capsys.readouterr().out


@pytest.mark.parametrize("name", SAMPLES)
def test_samples_open_through_the_checkpoint_loader(name):
    session = Session.open(ModelSpec(sample=name, device="cpu"))
    assert session.source == f"sample {name}"
    assert session.family == name.split("-")[1]
    assert session.info["format"] == FORMATS[name]
    assert session.tokenizer.vocab_size == 65
    assert session.summary().total_bytes <= 5 * 1024 * 1024


def test_no_model_arguments_open_the_nanogpt_sample():
    session = Session.open(ModelSpec(device="cpu"))
    assert session.source == "sample shakespeare-nanogpt"
    assert Session.open(ModelSpec(arch="nanochat", device="cpu")).family == "nanochat"


@pytest.mark.parametrize("name", SAMPLES)
def test_seeded_generation_reads_like_text(name, capsys):
    args = ["generate", "--sample", name, "--prompt", "ROMEO:", "--steps", "200", "--seed", "1"]
    assert run([*args, "--json"]) == 0
    text = json.loads(capsys.readouterr().out)["text"]
    body = text[len("ROMEO:") :]
    assert len(body) == 200
    words = body.split()
    assert "\n" in body and len(words) >= 20
    assert len(set(body)) >= 15  # not one character repeated
    # Mostly real-looking words: letters between spaces, average length of English.
    assert 2.5 <= sum(len(w) for w in words) / len(words) <= 8


@pytest.mark.parametrize("name", SAMPLES)
def test_validation_loss_meets_the_quality_bar(name, shakespeare_path, capsys):
    args = ["eval", "--sample", name, "--data", str(shakespeare_path), "--json"]
    assert run(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "val"
    assert result["loss"] <= 1.90  # random guessing is ln 65 = 4.17
