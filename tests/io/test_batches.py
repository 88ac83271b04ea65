"""Batches from a text file, a nanoGPT .bin + meta.pkl, or the prompt."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from gpt_tui.io.batches import (
    Batch,
    BatchError,
    batch_view,
    check_vocab,
    open_source,
    prompt_batch,
)
from gpt_tui.io.safe_pickle import UnsafePickleError
from gpt_tui.io.tokenizers import CharTokenizer

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 4


def write_bin(folder, text: str) -> tuple:
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    np.array([stoi[c] for c in text], dtype=np.uint16).tofile(folder / "val.bin")
    meta = {"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}
    (folder / "meta.pkl").write_bytes(pickle.dumps(meta))
    return folder / "val.bin", chars


def no_tokenizer(_text: str) -> list[int]:
    raise AssertionError("a .bin is already tokens")


def test_a_bin_and_meta_decode_to_the_text_at_their_offsets(tmp_path):
    path, chars = write_bin(tmp_path, TEXT)
    source = open_source(str(path), no_tokenizer, lambda i: "?")
    batch = source.get_batch(3, 12, seed=7)
    assert batch.x.shape == batch.y.shape == (3, 12) and batch.x.dtype == torch.long
    view = batch_view(batch, source.decode, seed=7)
    for row in view.rows:
        i = row.offset
        assert "".join(chars[t] for t in row.input_ids) == TEXT[i : i + 12]
        assert "".join(chars[t] for t in row.target_ids) == TEXT[i + 1 : i + 13]
        assert "".join(row.input_text).replace("⏎", "\n") == TEXT[i : i + 12]
        assert row.ignored == 0
    # Seeded: the same batch again; another step, another batch.
    assert torch.equal(source.get_batch(3, 12, seed=7).x, batch.x)
    assert source.get_batch(3, 12, seed=7, step=1).offsets != batch.offsets


def test_meta_pkl_is_read_through_the_safe_unpickler(tmp_path):
    path, _ = write_bin(tmp_path, TEXT)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "meta.pkl").write_bytes(pickle.dumps({"itos": Evil()}))
    with pytest.raises(UnsafePickleError, match="meta.pkl wants to run code"):
        open_source(str(path), no_tokenizer, lambda i: "?")


def test_a_text_file_goes_through_the_tokenizer(tmp_path):
    tok = CharTokenizer.from_text(TEXT)
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    source = open_source(str(tmp_path / "t.txt"), tok.encode, lambda i: tok.decode([i]))
    batch = source.get_batch(2, 8, seed=1)
    for r, i in enumerate(batch.offsets):
        assert tok.decode(batch.x[r].tolist()) == TEXT[i : i + 8]
        assert tok.decode(batch.y[r].tolist()) == TEXT[i + 1 : i + 9]


def test_bad_data_is_one_line(tmp_path):
    with pytest.raises(BatchError, match="no such file"):
        open_source(str(tmp_path / "absent.txt"), list, str)
    (tmp_path / "odd.bin").write_bytes(b"abc")
    with pytest.raises(BatchError, match="odd number of bytes"):
        open_source(str(tmp_path / "odd.bin"), list, str)
    (tmp_path / "short.txt").write_text("abc")
    source = open_source(str(tmp_path / "short.txt"), lambda t: [1, 2, 3], str)
    with pytest.raises(BatchError, match="needs 9"):
        source.get_batch(1, 8, seed=0)


def test_ids_outside_the_vocabulary_are_named_with_their_position():
    x = torch.tensor([[1, 2, 3], [4, 70, 5]])
    y = torch.tensor([[2, 3, -1], [70, 5, 6]])
    with pytest.raises(BatchError, match="input id 70 at row 1, position 1 is outside"):
        check_vocab(Batch(x, y, "t", ()), 65)
    x[1, 1] = 0
    with pytest.raises(BatchError, match="target id 70 at row 1, position 0"):
        check_vocab(Batch(x, y, "t", ()), 65)
    y[1, 0] = -1
    check_vocab(Batch(x, y, "t", ()), 65)  # -1 targets are ignored, not errors


def test_prompt_batch_and_ignored_counts():
    batch = prompt_batch([5, 6, 7, 8, 9], block=3)
    assert batch.x.tolist() == [[6, 7, 8]] and batch.y.tolist() == [[7, 8, 9]]
    y = batch.y.clone()
    y[0, :2] = -1
    view = batch_view(Batch(batch.x, y, "p", ()), lambda i: chr(90 + i))
    assert view.rows[0].ignored == 2 and view.ignored_targets == 2
    assert view.rows[0].target_text == ("·", "·", chr(99))
    with pytest.raises(BatchError, match="at least two tokens"):
        prompt_batch([1])
