"""Tokenizers: round trips, readable errors, printable labels, offline GPT-2 BPE."""

from __future__ import annotations

import json
import pickle
import sys
import time

import pytest
from io_helpers import MERGES, TEXT, write_data_gym_bpe

from gpt_tui.io import tokenizers
from gpt_tui.io.tokenizer_files import load_tokenizer_file
from gpt_tui.io.tokenizers import (
    ByteTokenizer,
    CharTokenizer,
    TiktokenTokenizer,
    Tokenizer,
    TokenizerError,
    default_tokenizer,
    describe_tokenizer,
    printable,
)
from gpt_tui.models import make_config


def test_char_round_trip_and_meta(char_tok):
    assert char_tok.decode(char_tok.encode(TEXT)) == TEXT
    again = CharTokenizer.from_meta(char_tok.to_meta())
    assert again.chars == char_tok.chars
    assert CharTokenizer.from_json(char_tok.to_json()).chars == char_tok.chars
    assert isinstance(char_tok, Tokenizer)


def test_char_unknown_characters_are_named(char_tok):
    with pytest.raises(TokenizerError) as err:
        char_tok.encode("hear me, Zoë!")
    msg = str(err.value)
    assert "'Z'" in msg and "'ë'" in msg and "'!'" in msg
    assert f"{char_tok.vocab_size}-character vocabulary" in msg


def test_out_of_range_ids(char_tok):
    with pytest.raises(TokenizerError, match=f"token id {char_tok.vocab_size} is out of range"):
        char_tok.decode([0, char_tok.vocab_size])
    with pytest.raises(TokenizerError, match="out of range"):
        ByteTokenizer().decode([256])
    with pytest.raises(TokenizerError, match="out of range"):
        ByteTokenizer().decode([-1])


@pytest.mark.parametrize(
    "meta, problem",
    [
        (["a"], "holds a list"),
        ({"vocab_size": 2}, "no 'itos'"),
        ({"itos": {0: "a", 2: "b"}}, "ids 0..1"),
        ({"itos": {0: "ab"}}, "single characters"),
        ({"itos": {0: "a"}, "vocab_size": 5}, "vocab_size=5"),
    ],
)
def test_bad_meta_dicts(meta, problem):
    with pytest.raises(TokenizerError, match=problem):
        CharTokenizer.from_meta(meta)


def test_byte_round_trip_and_labels():
    tok = ByteTokenizer(model_vocab=300)
    text = "héllo\n wörld ✓"
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode([104, 105, 256, 299]) == "hi<256><299>"
    assert [tok.token_str(i) for i in (104, 10, 32, 9, 0, 0xE2, 280)] == [
        "h",
        "⏎",
        "␣",
        "⇥",
        "<0x00>",
        "<0xE2>",
        "<280>",
    ]


def test_byte_tokenizer_for_a_small_vocabulary():
    tok = ByteTokenizer(model_vocab=65, reason="no vocabulary")
    assert tok.encode("!0") == [33, 48]
    with pytest.raises(TokenizerError, match="0x68"):
        tok.encode("hi")


def test_char_labels():
    tok = CharTokenizer(["\n", " ", "a", "\x07"])
    assert [tok.token_str(i) for i in range(5)] == ["⏎", "␣", "a", "<0x07>", "<4>"]
    assert printable("a b\nc") == "a␣b⏎c"


def test_tiktoken_encoding_labels():
    tiktoken = pytest.importorskip("tiktoken")
    ranks = {bytes([i]): i for i in range(256)} | {b" t": 256, b"\xe2\x9c": 257}
    enc = tiktoken.Encoding(name="t", pat_str=r"\S+|\s+", mergeable_ranks=ranks, special_tokens={})
    tok = TiktokenTokenizer(enc)
    assert tok.token_str(256) == "␣t"
    assert tok.token_str(257) == "<0xE2 0x9C>"  # half a UTF-8 character
    assert tok.token_str(10_000) == "<10000>"
    assert tok.decode(tok.encode("a ✓ t")) == "a ✓ t"
    with pytest.raises(TokenizerError):
        tok.decode([258])


def test_default_tokenizer_never_waits_for_the_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "nothing-here"))
    start = time.monotonic()
    tok = default_tokenizer(make_config("gpt2"))
    assert time.monotonic() - start < 2.0
    assert isinstance(tok, ByteTokenizer) and tok.vocab_size == 50257
    assert "not cached" in tok.reason
    small = default_tokenizer(make_config("tiny"))  # 65 tokens: shakespeare_char, said so
    assert isinstance(small, CharTokenizer) and small.vocab_size == 65
    assert small.decode(small.encode("ROMEO:")) == "ROMEO:"
    assert "shakespeare_char" in small.reason and "shakespeare_char" in describe_tokenizer(small)
    other = default_tokenizer(100)
    assert isinstance(other, ByteTokenizer) and "no vocabulary found" in other.reason


def test_gpt2_bpe_from_the_tiktoken_cache(tmp_path, monkeypatch):
    """With the two cached files tiktoken would download, GPT-2 BPE loads offline."""
    pytest.importorskip("tiktoken")
    import hashlib

    cache = tmp_path / "cache"
    vocab_bpe, encoder_json = write_data_gym_bpe(tmp_path / "src", MERGES)
    files = {}
    for key, src in (("vocab_bpe", vocab_bpe), ("encoder_json", encoder_json)):
        url, _ = tokenizers.GPT2_FILES[key]
        cache.mkdir(exist_ok=True)
        (cache / hashlib.sha1(url.encode()).hexdigest()).write_bytes(src.read_bytes())
        files[key] = (url, hashlib.sha256(src.read_bytes()).hexdigest())  # our tiny files
    monkeypatch.setattr(tokenizers, "GPT2_FILES", files)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    tok = default_tokenizer(50304)
    assert isinstance(tok, TiktokenTokenizer) and tok.name == "gpt2"
    assert tok.decode(tok.encode("hello world<|endoftext|>")) == "hello world<|endoftext|>"
    # a cached file with the wrong contents is not used (tiktoken would re-download it)
    files["vocab_bpe"] = (files["vocab_bpe"][0], "0" * 64)
    assert tokenizers.gpt2_tokenizer() is None


def test_load_tokenizer_file_by_content(tmp_path, char_tok, monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # as if not installed
    (tmp_path / "a.json").write_text(json.dumps(char_tok.to_json()))
    (tmp_path / "b.bin").write_bytes(pickle.dumps(char_tok.to_meta()))
    (tmp_path / "hf.json").write_text(json.dumps({"model": {"type": "BPE"}}))
    (tmp_path / "junk").write_bytes(b"\x00\x01garbage")
    assert load_tokenizer_file(tmp_path / "a.json").chars == char_tok.chars
    assert load_tokenizer_file(tmp_path / "b.bin").chars == char_tok.chars
    with pytest.raises(TokenizerError, match="Hugging Face tokenizer; pip install tokenizers"):
        load_tokenizer_file(tmp_path / "hf.json")
    with pytest.raises(TokenizerError, match="neither JSON, a pickle nor a .tiktoken file"):
        load_tokenizer_file(tmp_path / "junk")
    with pytest.raises(TokenizerError, match="no such file"):
        load_tokenizer_file(tmp_path / "missing.pkl")
