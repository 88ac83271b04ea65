"""Loading nanoGPT and nanochat checkpoints: round trips, vocabularies, readable errors."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from io_helpers import TEXT, logits, tiny_model

from gpt_tui.io.checkpoints import (
    CheckpointError,
    LoadedCheckpoint,
    find_meta_pkl,
    load_checkpoint,
    save_nanochat_checkpoint,
    save_nanogpt_checkpoint,
)
from gpt_tui.io.tokenizers import ByteTokenizer, CharTokenizer, TiktokenTokenizer


def assert_one_line(err: pytest.ExceptionInfo, *parts: str) -> str:
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg
    for part in parts:
        assert part in msg, msg
    return msg


# --- round trips ------------------------------------------------------------------------


def test_nanogpt_roundtrip_with_compiled_prefix(tmp_path, char_tok):
    model = tiny_model("nanogpt", char_tok.vocab_size)
    path = save_nanogpt_checkpoint(
        tmp_path,
        model,
        iter_num=250,
        best_val_loss=1.25,
        train_config={"dataset": "shakespeare_char"},
        tokenizer=char_tok,
        compiled_prefix=True,
    )
    assert any(k.startswith("_orig_mod.") for k in torch.load(path, weights_only=True)["model"])

    loaded = load_checkpoint(tmp_path)
    assert isinstance(loaded, LoadedCheckpoint)
    assert (loaded.format, loaded.family, loaded.path) == ("nanogpt-ckpt", "nanogpt", path)
    assert loaded.config == model.config
    assert not loaded.model.training
    ids = char_tok.encode(TEXT[:16])
    assert torch.equal(logits(loaded.model, ids), logits(model, ids))
    # the head stays tied to the embedding: one tensor, not two copies
    assert loaded.model.lm_head.weight is loaded.model.transformer.wte.weight
    assert isinstance(loaded.tokenizer, CharTokenizer)
    assert loaded.tokenizer.chars == char_tok.chars
    assert loaded.info["iter_num"] == 250
    assert loaded.info["best_val_loss"] == 1.25
    assert loaded.info["dataset"] == "shakespeare_char"
    assert loaded.info["tokenizer_source"].endswith("meta.pkl")


def test_nanochat_roundtrip_picks_largest_step(tmp_path, char_tok):
    old = tiny_model("nanochat", char_tok.vocab_size)
    model = tiny_model("nanochat", char_tok.vocab_size, n_kv_head=1)
    save_nanochat_checkpoint(tmp_path, model, step=900, tokenizer=char_tok)
    # an older step with a different model must not be the one chosen
    torch.save(old.state_dict(), tmp_path / "model_000100.pt")
    (tmp_path / "meta_000100.json").write_text(json.dumps({"step": 100, "model_config": {}}))

    loaded = load_checkpoint(tmp_path)
    assert (loaded.format, loaded.family) == ("nanochat", "nanochat")
    assert loaded.path.name == "model_000900.pt"
    assert loaded.config.n_kv_head == 1
    ids = char_tok.encode(TEXT[:16])
    assert torch.equal(logits(loaded.model, ids), logits(model, ids))
    assert loaded.info["step"] == 900
    assert isinstance(loaded.tokenizer, CharTokenizer)
    assert loaded.tokenizer.chars == char_tok.chars
    # rotary tables are not in the checkpoint; they must have been computed, not left empty
    assert loaded.model.cos.device.type == "cpu"
    assert torch.equal(loaded.model.cos, model.cos)


def test_files_are_recognised_by_content_not_name(tmp_path, char_tok):
    gpt = tiny_model("nanogpt", char_tok.vocab_size)
    save_nanogpt_checkpoint(tmp_path / "a", gpt, iter_num=1, best_val_loss=2.0)
    os.rename(tmp_path / "a" / "ckpt.pt", tmp_path / "a" / "weights.bin")
    assert load_checkpoint(tmp_path / "a" / "weights.bin").format == "nanogpt-ckpt"

    chat = tiny_model("nanochat", char_tok.vocab_size)
    path = save_nanochat_checkpoint(tmp_path / "b", chat, step=5)
    loaded = load_checkpoint(path)  # the .pt file itself, meta json beside it
    assert loaded.format == "nanochat"
    ids = [1, 2, 3]
    assert torch.equal(logits(loaded.model, ids), logits(chat, ids))


def test_dtype_and_meta_device(tmp_path, char_tok):
    model = tiny_model("nanogpt", char_tok.vocab_size)
    save_nanogpt_checkpoint(tmp_path, model, iter_num=1, best_val_loss=2.0)
    half = load_checkpoint(tmp_path, dtype=torch.bfloat16)
    assert {p.dtype for p in half.model.parameters()} == {torch.bfloat16}
    meta = load_checkpoint(tmp_path, device="meta")
    assert {p.device.type for p in meta.model.parameters()} == {"meta"}


def test_old_nanogpt_mask_buffers_are_ignored(tmp_path, char_tok):
    model = tiny_model("nanogpt", char_tok.vocab_size)
    path = save_nanogpt_checkpoint(tmp_path, model, iter_num=1, best_val_loss=2.0)
    ckpt = torch.load(path, weights_only=True)
    for i in range(model.config.n_layer):
        ckpt["model"][f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 16, 16))
    torch.save(ckpt, path)
    loaded = load_checkpoint(path)
    assert torch.equal(logits(loaded.model, [1, 2]), logits(model, [1, 2]))


# --- vocabularies -----------------------------------------------------------------------


def _ckpt_without_meta(folder: Path, vocab: int, dataset: str | None) -> Path:
    model = tiny_model("nanogpt", vocab)
    cfg = {"dataset": dataset} if dataset else {}
    return save_nanogpt_checkpoint(folder, model, iter_num=1, best_val_loss=2.0, train_config=cfg)


def test_meta_pkl_found_in_data_dataset_folder(tmp_path, char_tok):
    ckpt = _ckpt_without_meta(tmp_path / "out-shakespeare-char", char_tok.vocab_size, "shk")
    data = tmp_path / "data" / "shk"
    data.mkdir(parents=True)
    (data / "meta.pkl").write_bytes(pickle.dumps(char_tok.to_meta()))
    assert find_meta_pkl(ckpt, "shk") == data / "meta.pkl"
    loaded = load_checkpoint(ckpt)
    assert isinstance(loaded.tokenizer, CharTokenizer)
    assert loaded.tokenizer.chars == char_tok.chars


def test_meta_pkl_found_from_cwd_and_given_explicitly(tmp_path, monkeypatch, char_tok):
    ckpt = _ckpt_without_meta(tmp_path / "ckpts" / "run", char_tok.vocab_size, "shk")
    work = tmp_path / "elsewhere"
    (work / "data" / "shk").mkdir(parents=True)
    (work / "data" / "shk" / "meta.pkl").write_bytes(pickle.dumps(char_tok.to_meta()))
    monkeypatch.chdir(work)
    assert load_checkpoint(ckpt).tokenizer.chars == char_tok.chars

    other = CharTokenizer.from_text("abc")
    meta = tmp_path / "my_meta.pkl"
    meta.write_bytes(pickle.dumps(other.to_meta()))
    assert load_checkpoint(ckpt, meta_path=meta).tokenizer.chars == ["a", "b", "c"]


def test_dataset_name_cannot_climb_out(tmp_path, char_tok):
    ckpt = _ckpt_without_meta(tmp_path / "out", char_tok.vocab_size, "../secret")
    assert find_meta_pkl(ckpt, "../secret") is None


def test_no_vocabulary_falls_back_to_bytes_with_a_note(tmp_path, char_tok):
    ckpt = _ckpt_without_meta(tmp_path, char_tok.vocab_size, None)
    loaded = load_checkpoint(ckpt)
    assert isinstance(loaded.tokenizer, ByteTokenizer)
    assert loaded.info["tokenizer_source"] == "default"
    assert "raw bytes" in loaded.info["tokenizer_note"]


def test_no_vocabulary_for_65_tokens_reads_shakespeare_char_with_a_note(tmp_path) -> None:
    """As --config, inspect and watch read a 65-token model: the same text everywhere."""
    ckpt = _ckpt_without_meta(tmp_path, 65, None)
    loaded = load_checkpoint(ckpt)
    assert loaded.tokenizer.decode(loaded.tokenizer.encode("ROMEO:")) == "ROMEO:"
    assert "shakespeare_char" in loaded.info["tokenizer_note"]


def test_wrong_size_meta_is_an_error_when_given_and_a_note_when_found(tmp_path, char_tok):
    ckpt = _ckpt_without_meta(tmp_path, 8, None)
    (tmp_path / "meta.pkl").write_bytes(pickle.dumps(char_tok.to_meta()))  # too many chars
    loaded = load_checkpoint(ckpt)
    assert "not this model's vocabulary" in loaded.info["tokenizer_note"]
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(ckpt, meta_path=tmp_path / "meta.pkl")
    assert_one_line(err, "meta.pkl", "tokens but the model only 8")


def test_nanochat_tokenizer_pkl_as_tiktoken(tmp_path, char_tok):
    tiktoken = pytest.importorskip("tiktoken")
    ranks = {bytes([i]): i for i in range(256)} | {b"ab": 256}
    enc = tiktoken.Encoding(
        name="tiny", pat_str=r"\S+|\s+", mergeable_ranks=ranks, special_tokens={"<|bos|>": 257}
    )
    model = tiny_model("nanochat", 300)
    save_nanochat_checkpoint(tmp_path / "base_checkpoints" / "d2", model, step=1)
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "tokenizer.pkl").write_bytes(pickle.dumps(enc))  # nanochat layout
    loaded = load_checkpoint(tmp_path / "base_checkpoints" / "d2")
    assert isinstance(loaded.tokenizer, TiktokenTokenizer)
    assert loaded.tokenizer.encode("abab<|bos|>") == [256, 256, 257]
    assert loaded.tokenizer.decode([256, 99]) == "abc"


# --- errors -----------------------------------------------------------------------------


def test_mismatch_names_missing_unexpected_and_misshaped_keys(tmp_path, char_tok):
    model = tiny_model("nanogpt", char_tok.vocab_size)
    path = save_nanogpt_checkpoint(tmp_path, model, iter_num=1, best_val_loss=2.0)
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_args"]["n_layer"] = 3  # one block the weights do not have
    ckpt["model_args"]["vocab_size"] = 50  # embedding shape disagrees
    ckpt["model"]["transformer.extra.weight"] = torch.zeros(2)
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = assert_one_line(
        err,
        "ckpt.pt does not fit a nanogpt model with n_layer=3",
        "missing (transformer.h.2.",
        "1 unexpected (transformer.extra.weight)",
        f"1 mis-shaped (transformer.wte.weight: checkpoint ({char_tok.vocab_size}, 32) "
        "vs model (50, 32))",
    )
    n_missing = sum(1 for k in model.state_dict() if k.startswith("transformer.h.1."))
    assert f"{n_missing} missing" in msg


def test_untied_head_is_refused(tmp_path, char_tok):
    model = tiny_model("nanogpt", char_tok.vocab_size)
    path = save_nanogpt_checkpoint(tmp_path, model, iter_num=1, best_val_loss=2.0)
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"]["lm_head.weight"] = ckpt["model"]["lm_head.weight"].clone() + 1
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert_one_line(err, "lm_head.weight differs")


def test_newer_nanochat_keys_get_a_clear_message(tmp_path, char_tok):
    model = tiny_model("nanochat", char_tok.vocab_size)
    path = save_nanochat_checkpoint(tmp_path, model, step=1)
    sd = torch.load(path, weights_only=True)
    sd["transformer.h.0.attn.mystery_gate.weight"] = torch.zeros(2, 2)
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path)
    assert_one_line(err, "mystery_gate")


def _good_ckpt_bytes(tmp_path: Path) -> bytes:
    model = tiny_model("nanogpt", 10)
    path = save_nanogpt_checkpoint(tmp_path / "good", model, iter_num=1, best_val_loss=2.0)
    return path.read_bytes()


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("random", "not a PyTorch checkpoint"),
        ("truncated", "damaged PyTorch file"),
        ("empty", "is empty"),
        ("json", "not a PyTorch checkpoint"),
        ("list", "holds a list"),
        ("wrong-dict", "keys step, weights"),
        ("bad-model", "not a tensor"),
    ],
)
def test_corrupt_or_wrong_files(tmp_path, kind, expected):
    path = tmp_path / "ckpt.pt"
    if kind == "random":
        path.write_bytes(bytes(range(256)) * 40)
    elif kind == "truncated":
        data = _good_ckpt_bytes(tmp_path)
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "json":
        path.write_text('{"model": 1}')
    elif kind == "list":
        torch.save([1, 2, 3], path)
    elif kind == "wrong-dict":
        torch.save({"step": 1, "weights": torch.zeros(1)}, path)
    elif kind == "bad-model":
        torch.save({"model": {"w": "text"}, "model_args": {}}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert_one_line(err, "ckpt.pt", expected)


def test_missing_paths_and_empty_folders(tmp_path):
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "nope.pt")
    assert_one_line(err, "nope.pt: no such file or folder")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path)
    assert_one_line(err, "holds no checkpoint")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path, meta_path=tmp_path / "meta.pkl")
    assert_one_line(err, "no such file")


def test_nanochat_without_meta_json(tmp_path, char_tok):
    model = tiny_model("nanochat", char_tok.vocab_size)
    save_nanochat_checkpoint(tmp_path, model, step=4)
    (tmp_path / "meta_000004.json").unlink()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path)
    assert_one_line(err, "meta_<step>.json")
    (tmp_path / "meta_000004.json").write_text("{not json")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path)
    assert_one_line(err, "meta_000004.json is not readable JSON")


def test_numpy_scalars_in_a_fork_checkpoint_are_plain_data(tmp_path, char_tok):
    np = pytest.importorskip("numpy")
    model = tiny_model("nanogpt", char_tok.vocab_size)
    path = save_nanogpt_checkpoint(tmp_path, model, iter_num=1, best_val_loss=2.0)
    ckpt = torch.load(path, weights_only=True)
    ckpt["best_val_loss"] = np.float64(1.5)
    torch.save(ckpt, path)
    assert load_checkpoint(path).info["best_val_loss"] == 1.5


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without this device")
def test_unavailable_device_is_a_readable_error(tmp_path, char_tok):
    model = tiny_model("nanogpt", char_tok.vocab_size)
    save_nanogpt_checkpoint(tmp_path, model, iter_num=1, best_val_loss=2.0)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path, device="cuda")
    assert_one_line(err, "cannot put ckpt.pt on cuda")


# --- nanochat eras the checkpoint cannot tell apart -------------------------------------


def _value_embeds_checkpoint(folder: Path, channels: int, **recorded) -> Path:
    """A nanochat checkpoint with value embeddings whose ve_gate reads `channels`."""
    from gpt_tui.io.checkpoints import save_nanochat_checkpoint as save
    from gpt_tui.models.config import config_to_dict

    gate = {"ve_gate_channels": channels, "ve_gate_scale": 2.0 if channels == 32 else 3.0}
    model = tiny_model("nanochat", 40, value_embeds=True, n_embd=64, n_head=4, **gate)
    save(folder, model, step=5)
    meta = folder / "meta_000005.json"
    data = json.loads(meta.read_text())
    upstream = ("sequence_len", "vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd")
    data["model_config"] = {k: config_to_dict(model.config)[k] for k in upstream} | recorded
    data.pop("gpt_tui_config")  # as upstream writes it: the era is read off the keys
    meta.write_text(json.dumps(data))
    return folder


def test_softcap_week_is_noted_and_set_silences_it(tmp_path):
    folder = _value_embeds_checkpoint(tmp_path / "ve", 32)
    loaded = load_checkpoint(folder)
    assert loaded.config.softcap == 15
    assert any("--set softcap=20" in note for note in loaded.info["notes"])
    loaded = load_checkpoint(folder, overrides={"softcap": "20"})
    assert loaded.config.softcap == 20 and not loaded.info.get("notes")


def test_round_one_era_has_its_own_scale_and_window(tmp_path):
    """2026-03-09 to 03-14: ve_gate of 12 channels but no smear yet: q, k * 1.15 and
    short windows of ceil(T/3/128)*128."""
    loaded = load_checkpoint(_value_embeds_checkpoint(tmp_path / "r1", 12, sequence_len=512))
    assert (loaded.config.qk_scale, loaded.config.short_window) == (1.15, 256)
    assert loaded.config.rope_base == 1e5 and not loaded.config.smear
    assert not loaded.info.get("notes")  # softcap 15 is certain for this era
