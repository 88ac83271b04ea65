"""`gpt_tui.inspect(model, idx)`: the debugger on a live model in the user's process, driven
here with Pilot; after `q` everything is as it was."""

from __future__ import annotations

import asyncio
import threading

import torch
from ui_helpers import press, settle

from gpt_tui.live import run_inspector
from gpt_tui.models import build_model, make_config


def test_inspect_opens_the_live_model_and_q_leaves_everything_as_it_was() -> None:
    model = build_model(make_config("tiny", "nanogpt"), "cpu", seed=0)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    idx = torch.tensor([[18, 47, 56, 57, 58, 1], [1, 2, 3, 4, 5, 6]])  # "First " in chars
    threads = set(threading.enumerate())
    seen = {}

    async def drive(app) -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            seen["prompt"] = app.state.prompt
            seen["name"] = app.info.name
            seen["notes"] = app.info.notes
            await press(pilot, "w", "r", "6")  # the NaN watch, a run, the Train tab
            seen["records"] = len(app.state.run.records)
            seen["batch"] = app.state.training.batch
            await pilot.press("q")
        seen["returned"] = app.return_code

    with torch.no_grad():  # grad mode as the caller had it comes back
        run_inspector(
            model, idx, tokenizer=None, targets=idx.roll(-1, 1), run=lambda a: asyncio.run(drive(a))
        )
        assert not torch.is_grad_enabled()
    assert seen["name"] == "GPT (live)" and seen["records"] > 0
    # No tokenizer= for a 65-token model: read as shakespeare_char, and said so.
    assert seen["prompt"] == "First " and seen["returned"] == 0
    assert any("shakespeare_char" in note for note in seen["notes"])
    batch = seen["batch"]  # the Train tab steps the user's own batch, both rows
    assert batch.source == "your batch" and len(batch.rows) == 2
    assert batch.rows[1].input_ids == (1, 2, 3, 4, 5, 6)
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    assert all(
        not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks) for m in model.modules()
    )
    assert set(threading.enumerate()) <= threads


def test_inspect_reads_a_meta_pkl_path_and_a_wrong_one_is_one_line(tmp_path, monkeypatch) -> None:
    import pickle

    import pytest

    from gpt_tui.errors import GptTuiError

    model = build_model(make_config("tiny", "nanogpt"), "cpu", seed=0)
    chars = sorted(set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?' \n-"))
    chars = (chars + [chr(0x100 + i) for i in range(65)])[:65]
    meta = tmp_path / "data" / "mine" / "meta.pkl"
    meta.parent.mkdir(parents=True)
    meta.write_bytes(pickle.dumps({"vocab_size": 65, "itos": dict(enumerate(chars)),
                                   "stoi": {c: i for i, c in enumerate(chars)}}))  # fmt: skip
    idx = torch.tensor([[chars.index(c) for c in "Hi"]])
    seen = {}

    async def drive(app) -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            seen["prompt"] = app.state.prompt
            await pilot.press("q")

    for given in (str(meta), None):  # the path, then found as train.py finds it
        monkeypatch.chdir(tmp_path)
        run_inspector(model, idx, tokenizer=given, run=lambda a: asyncio.run(drive(a)))
        assert seen.pop("prompt") == "Hi"
    with pytest.raises(GptTuiError, match=r"^nope.pkl: no such file"):
        run_inspector(model, idx, tokenizer="nope.pkl", run=lambda a: None)
