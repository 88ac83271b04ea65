"""Helpers for the io tests: tiny models, hostile pickles, a tiny GPT-2-style vocabulary."""

from __future__ import annotations

import builtins
import json
import pickle
from pathlib import Path

import torch

from gpt_tui.models import build_model, make_config

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n"


def tiny_model(family: str, vocab_size: int, **overrides) -> torch.nn.Module:
    """A tiny model whose weights are all non-zero (nanochat zero-inits its head)."""
    config = make_config("tiny", family, {"vocab_size": vocab_size, **overrides})
    model = build_model(config, "cpu", torch.float32, seed=3)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model


def logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        out, _ = model(torch.tensor([ids]))
    return out


class OpenFile:
    """Unpickling this calls open(path, 'w'): the marker file appears if the payload runs."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (builtins.open, (self.path, "w"))


class ExecCode:
    """Unpickling this calls exec() on code that writes the marker file."""

    def __init__(self, path: Path) -> None:
        self.code = f"open({str(path)!r}, 'w').write('ran')"

    def __reduce__(self):
        return (builtins.exec, (self.code,))


def hostile_pickles(marker: Path) -> dict[str, bytes]:
    """Pickles whose loading would create `marker`, in several protocols and shapes."""
    return {
        "open-p2": pickle.dumps({"model": OpenFile(marker)}, protocol=2),
        "open-p4": pickle.dumps(OpenFile(marker), protocol=4),
        "exec-p0": pickle.dumps({"vocab_size": 3, "itos": ExecCode(marker)}, protocol=0),
        "exec-p5": pickle.dumps([ExecCode(marker)], protocol=5),
    }


def write_data_gym_bpe(folder: Path, merges: list[tuple[bytes, bytes]]) -> tuple[Path, Path]:
    """A tiny GPT-2-style vocabulary (vocab.bpe + encoder.json, the data-gym byte alphabet):
    the 256 byte tokens, then one token per merge, then <|endoftext|>."""
    order = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    char_of = {b: chr(b) for b in order}
    # the other bytes (space, controls, ...) take chr(256), chr(257), ... in byte order
    extra = [b for b in range(256) if not (chr(b).isprintable() and chr(b) != " ")]
    for n, b in enumerate(extra):
        char_of[b] = chr(256 + n)
    order += extra

    def enc(bs: bytes) -> str:
        return "".join(char_of[x] for x in bs)

    encoder = {enc(bytes([b])): rank for rank, b in enumerate(order)}
    lines = ["#version: 0.2"]
    for a, b in merges:
        encoder[enc(a + b)] = len(encoder)
        lines.append(f"{enc(a)} {enc(b)}")
    encoder["<|endoftext|>"] = len(encoder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_bpe, encoder_json = folder / "vocab.bpe", folder / "encoder.json"
    vocab_bpe.write_text("\n".join(lines) + "\n", encoding="utf-8")
    encoder_json.write_text(json.dumps(encoder), encoding="utf-8")
    return vocab_bpe, encoder_json


MERGES = [(b"h", b"e"), (b"l", b"l"), (b"he", b"ll"), (b" ", b"w")]
