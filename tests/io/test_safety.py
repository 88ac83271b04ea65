"""Hostile pickles are refused, and their payload provably never runs."""

from __future__ import annotations

import pickle

import pytest
import torch
from io_helpers import OpenFile, hostile_pickles, tiny_model

from gpt_tui.io import safe_pickle
from gpt_tui.io.checkpoints import (
    CheckpointError,
    UnsafeCheckpointError,
    load_checkpoint,
    save_nanochat_checkpoint,
    save_nanogpt_checkpoint,
)
from gpt_tui.io.tokenizer_files import load_tokenizer_file
from gpt_tui.io.tokenizers import CharTokenizer


def test_the_payload_is_live(tmp_path, marker):
    """Control: loaded the ordinary way, the test payload does create the marker."""
    pickle.loads(pickle.dumps(OpenFile(marker))).close()
    assert marker.exists()


@pytest.mark.parametrize("variant", ["open-p2", "open-p4", "exec-p0", "exec-p5"])
def test_safe_pickle_refuses_and_runs_nothing(marker, variant):
    data = hostile_pickles(marker)[variant]
    with pytest.raises(safe_pickle.UnsafePickleError) as err:
        safe_pickle.loads(data, "meta.pkl")
    msg = str(err.value)
    assert msg.startswith("meta.pkl wants to run code (")
    assert "builtins.exec" in msg or "io.open" in msg
    assert "nothing from it was executed" in msg
    assert not marker.exists()


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_safe_pickle_reads_plain_data_in_every_protocol(protocol):
    meta = CharTokenizer.from_text("hello\n").to_meta()
    data = {**meta, "tags": {1, 2}, "raw": b"\x00\xff", "frozen": frozenset("ab")}
    assert safe_pickle.loads(pickle.dumps(data, protocol=protocol)) == data


def test_scan_globals_reads_opcodes_only(marker):
    names = safe_pickle.scan_globals(hostile_pickles(marker)["exec-p5"])
    assert names == ["builtins.exec"]
    assert not marker.exists()


@pytest.mark.parametrize("variant", ["open-p2", "open-p4", "exec-p0", "exec-p5"])
def test_hostile_ckpt_pt_plain_pickle(tmp_path, marker, variant):
    (tmp_path / "ckpt.pt").write_bytes(hostile_pickles(marker)[variant])
    with pytest.raises(UnsafeCheckpointError) as err:
        load_checkpoint(tmp_path)
    msg = str(err.value)
    assert "ckpt.pt cannot be loaded safely" in msg and "nothing from it was executed" in msg
    assert "\n" not in msg
    assert not marker.exists()


def test_hostile_ckpt_pt_saved_by_torch(tmp_path, marker):
    model = tiny_model("nanogpt", 10)
    torch.save(
        {"model": model.state_dict(), "model_args": {}, "config": OpenFile(marker)},
        tmp_path / "ckpt.pt",
    )
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "ckpt.pt")
    assert "cannot be loaded safely" in str(err.value) and "io.open" in str(err.value)
    assert not marker.exists()


def test_hostile_nanochat_model_file(tmp_path, marker):
    model = tiny_model("nanochat", 10)
    path = save_nanochat_checkpoint(tmp_path, model, step=1)
    torch.save({"transformer.wte.weight": torch.zeros(1), "x": OpenFile(marker)}, path)
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(tmp_path)
    assert not marker.exists()


def test_hostile_meta_pkl(tmp_path, marker):
    model = tiny_model("nanogpt", 10)
    save_nanogpt_checkpoint(tmp_path, model, iter_num=1, best_val_loss=2.0)
    (tmp_path / "meta.pkl").write_bytes(hostile_pickles(marker)["exec-p0"])
    with pytest.raises(UnsafeCheckpointError) as err:
        load_checkpoint(tmp_path)
    assert str(err.value) == (
        "meta.pkl wants to run code (builtins.exec); refused — nothing from it was executed"
    )
    assert not marker.exists()
    # given explicitly, the same
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(tmp_path / "ckpt.pt", meta_path=tmp_path / "meta.pkl")
    assert not marker.exists()


def test_hostile_tokenizer_pkl(tmp_path, marker):
    model = tiny_model("nanochat", 10)
    save_nanochat_checkpoint(tmp_path, model, step=1)
    (tmp_path / "tokenizer.pkl").write_bytes(hostile_pickles(marker)["open-p4"])
    with pytest.raises(UnsafeCheckpointError) as err:
        load_checkpoint(tmp_path)
    assert "tokenizer.pkl wants to run code (io.open)" in str(err.value)
    assert not marker.exists()
    with pytest.raises(safe_pickle.UnsafePickleError):
        load_tokenizer_file(tmp_path / "tokenizer.pkl")
    assert not marker.exists()


def test_tiktoken_class_is_a_stand_in():
    """Naming tiktoken's Encoding gets an inert holder; its state is only stored."""
    data = (
        b"\x80\x04"  # PROTO 4
        b"\x8c\rtiktoken.core\x8c\x08Encoding\x93"  # STACK_GLOBAL tiktoken.core.Encoding
        b")\x81"  # NEWOBJ with no arguments
        b"}\x8c\x04name\x8c\x04evils"  # a dict {"name": "evil"}
        b"b."  # BUILD (calls __setstate__), STOP
    )
    obj = safe_pickle.loads(data)
    assert isinstance(obj, safe_pickle.EncodingState)
    assert obj.state == {"name": "evil"}


def test_a_folder_given_for_a_pickle_is_named_as_a_folder(tmp_path) -> None:
    with pytest.raises(
        safe_pickle.SafePickleError, match="is a folder, not a file: give the pickle file in it"
    ):
        safe_pickle.load(tmp_path)
