"""`--tokenizer PATH`: local tokenizers in the formats people have, never the network."""

from __future__ import annotations

import base64
import json
import socket
import sys

import pytest
from io_helpers import MERGES, tiny_model, write_data_gym_bpe

from gpt_tui.engine.core.session import ModelSpec, Session
from gpt_tui.io.checkpoints import CheckpointError, load_checkpoint, save_nanogpt_checkpoint
from gpt_tui.io.tokenizer_files import load_tokenizer_path
from gpt_tui.io.tokenizers import (
    ByteTokenizer,
    TokenizerError,
    default_tokenizer,
    describe_tokenizer,
    gpt2_bpe_from_files,
)

pytest.importorskip("tiktoken")
TEXT = "hello world, hell"


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("a tokenizer tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken-cache"))
    yield
    assert not (tmp_path / "tiktoken-cache").exists()  # nothing copied into tiktoken's cache


def write_tiktoken(path, bpe) -> None:
    """The same vocabulary as a .tiktoken ranks file (one `base64(token) rank` a line)."""
    ranks = {bpe.encoding.decode_single_token_bytes(i): i for i in range(bpe.vocab_size - 1)}
    lines = [f"{base64.b64encode(tok).decode()} {rank}" for tok, rank in ranks.items()]
    path.write_text("\n".join(lines) + "\n")


def test_every_gpt2_layout_gives_the_same_tokens(tmp_path):
    vocab_bpe, encoder_json = write_data_gym_bpe(tmp_path / "gpt2", MERGES)
    reference = gpt2_bpe_from_files(vocab_bpe, encoder_json)
    expected = reference.encode(TEXT)
    assert len(expected) < len(TEXT.encode())  # the merges were applied
    write_tiktoken(tmp_path / "gpt2.tiktoken", reference)
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "vocab.json").write_bytes(encoder_json.read_bytes())
    (hf / "merges.txt").write_bytes(vocab_bpe.read_bytes())
    for path in (
        tmp_path / "gpt2",
        vocab_bpe,
        encoder_json,
        tmp_path / "gpt2.tiktoken",
        hf,
        hf / "merges.txt",
    ):
        tok = load_tokenizer_path(path)
        assert tok.encode(TEXT) == expected, path
        assert tok.decode(expected) == TEXT
        assert tok.vocab_size == reference.vocab_size


def test_a_changed_vocabulary_at_the_same_path_is_read_again(tmp_path):
    """tiktoken's own loader caches local files by path; ours reads them each time."""
    folder = tmp_path / "gpt2"
    write_data_gym_bpe(folder, MERGES)
    before = load_tokenizer_path(folder).vocab_size
    write_data_gym_bpe(folder, MERGES[:2])
    assert load_tokenizer_path(folder).vocab_size == before - 2


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: (d / "x.tiktoken").write_text("not base64!! 0\n"), "x.tiktoken:1"),
        (lambda d: (d / "vocab.bpe").write_text("#version: 0.2\n"), "needs both encoder.json"),
        (lambda d: (d / "tokenizer.json").write_text("{}"), "JSON without a known"),
        (lambda d: None, "holds no tokenizer"),
    ],
)
def test_bad_tokenizer_files_are_one_line(tmp_path, setup, message):
    setup(tmp_path)
    target = next((p for p in tmp_path.iterdir()), tmp_path)
    with pytest.raises(TokenizerError) as err:
        load_tokenizer_path(target)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_hf_tokenizer_json_without_the_package_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE"}}))
    with pytest.raises(TokenizerError, match="pip install tokenizers"):
        load_tokenizer_path(tmp_path)


def test_hf_tokenizer_json_with_the_package(tmp_path):
    hf_tokenizers = pytest.importorskip("tokenizers")
    model = hf_tokenizers.models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, "[UNK]")
    built = hf_tokenizers.Tokenizer(model)
    built.pre_tokenizer = hf_tokenizers.pre_tokenizers.Whitespace()
    built.save(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer_path(tmp_path / "tokenizer.json")
    assert tok.encode("hello world") == [1, 2] and tok.vocab_size == 3


def test_tokenizer_for_a_checkpoint_and_a_config(tmp_path):
    write_data_gym_bpe(tmp_path / "gpt2", MERGES)
    n = load_tokenizer_path(tmp_path / "gpt2").vocab_size
    model = tiny_model("nanogpt", n)
    save_nanogpt_checkpoint(tmp_path / "ckpt", model, iter_num=1, best_val_loss=1)
    loaded = load_checkpoint(tmp_path / "ckpt", tokenizer=tmp_path / "gpt2")
    assert loaded.tokenizer.name == "gpt2"
    assert loaded.info["tokenizer_source"] == str(tmp_path / "gpt2")
    spec = ModelSpec(config="tiny", overrides=[f"vocab_size={n}"], tokenizer=str(tmp_path / "gpt2"))
    session = Session.open(spec)
    try:
        assert session.tokenizer.encode(TEXT) == loaded.tokenizer.encode(TEXT)
    finally:
        session.close()
    small = tiny_model("nanogpt", 100)  # fewer tokens than the tokenizer: not its vocabulary
    save_nanogpt_checkpoint(tmp_path / "small", small, iter_num=1, best_val_loss=1)
    with pytest.raises(CheckpointError, match="not this model's vocabulary; pass the right"):
        load_checkpoint(tmp_path / "small", tokenizer=tmp_path / "gpt2")
    with pytest.raises(CheckpointError, match="--tokenizer .*: no such file"):
        load_checkpoint(tmp_path / "small", tokenizer=tmp_path / "missing.tiktoken")


def test_describe_says_which_tokenizer_and_how_to_get_bpe(tmp_path):
    fallback = default_tokenizer(50304)
    assert isinstance(fallback, ByteTokenizer)
    text = describe_tokenizer(fallback, "default")
    assert text.startswith("bytes, 50,304 tokens") and "--tokenizer path/to/gpt2.tiktoken" in text
    write_data_gym_bpe(tmp_path / "gpt2", MERGES)
    bpe = load_tokenizer_path(tmp_path / "gpt2")
    assert describe_tokenizer(bpe, str(tmp_path / "gpt2")) == (
        f"gpt2, {bpe.vocab_size} tokens, from {tmp_path / 'gpt2'}"
    )
    assert "--tokenizer" not in describe_tokenizer(ByteTokenizer(65, "no vocabulary"))


def test_a_gpt2_config_without_bpe_says_how_to_get_it():
    session = Session.open(ModelSpec(config="gpt2", device="meta"))
    try:
        assert isinstance(session.tokenizer, ByteTokenizer)
        assert any("--tokenizer path/to/gpt2.tiktoken" in note for note in session.notes)
    finally:
        session.close()


def test_a_hostile_tokenizer_pickle_is_refused_and_runs_nothing(tmp_path):
    from io_helpers import hostile_pickles

    from gpt_tui.io.checkpoints import UnsafeCheckpointError

    marker = tmp_path / "PAYLOAD_RAN"
    save_nanogpt_checkpoint(tmp_path / "ck", tiny_model("nanogpt", 30), iter_num=1, best_val_loss=1)
    for name, data in hostile_pickles(marker).items():
        (tmp_path / f"{name}.pkl").write_bytes(data)
        with pytest.raises(UnsafeCheckpointError):
            load_checkpoint(tmp_path / "ck", tokenizer=tmp_path / f"{name}.pkl")
    assert not marker.exists()


def test_gpt2_bpe_from_a_cached_r50k_base(tmp_path, monkeypatch):
    """tiktoken's r50k_base (GPT-2's ranks as a .tiktoken file), cached by an earlier run."""
    import hashlib

    from gpt_tui.io import tokenizers

    write_data_gym_bpe(tmp_path / "src", MERGES)
    write_tiktoken(tmp_path / "r50k.tiktoken", load_tokenizer_path(tmp_path / "src"))
    data = (tmp_path / "r50k.tiktoken").read_bytes()
    url, _ = tokenizers.GPT2_FILES["r50k_base"]
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / hashlib.sha1(url.encode()).hexdigest()).write_bytes(data)
    files = dict(tokenizers.GPT2_FILES, r50k_base=(url, hashlib.sha256(data).hexdigest()))
    monkeypatch.setattr(tokenizers, "GPT2_FILES", files)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    tok = default_tokenizer(50304)
    assert tok.name == "gpt2"
    assert tok.encode(TEXT) == load_tokenizer_path(tmp_path / "src").encode(TEXT)
