"""Training batches: from a text file, a nanoGPT `train.bin` / `val.bin`, or the prompt.

Sampling follows nanoGPT's `get_batch`: B random offsets i, `x = data[i:i+T]`,
`y = data[i+1:i+T+1]`, drawn from a generator seeded by (seed, step) so that a batch is
reproducible on its own. A `.bin` is a uint16 memmap (nanoGPT's prepare.py); the `meta.pkl`
beside it (or the one named) holds the char vocabulary and is read through the safe
unpickler, never as code. Without one, the model's tokenizer decodes (GPT-2 BPE data).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import GptTuiError
from . import safe_pickle
from .paths import check_file
from .tokenizers import CharTokenizer, visible_controls

IGNORE = -1  # nanoGPT / nanochat's ignore_index: a target that is not scored


class BatchError(GptTuiError, ValueError):
    """The data cannot make a batch: a missing or short file, an id outside the vocabulary."""


@dataclass(frozen=True)
class Batch:
    """Inputs and targets (B, T), long, on the CPU, and how to read them."""

    x: torch.Tensor
    y: torch.Tensor
    source: str  # where the rows come from, for a headline
    offsets: tuple[int, ...]  # start of each row in the data (() for the prompt)


@dataclass(frozen=True)
class BatchRow:
    """One row for the inspector: the ids, their text, and the ignored targets."""

    offset: int | None
    input_ids: tuple[int, ...]
    target_ids: tuple[int, ...]
    input_text: tuple[str, ...]  # one printable piece per token, aligned with the ids
    target_text: tuple[str, ...]  # "·" where the target is ignored
    ignored: int  # targets equal to -1


@dataclass(frozen=True)
class BatchView:
    """The batch inspector's data: plain, detached, ready to render."""

    source: str
    rows: tuple[BatchRow, ...]
    block: int
    seed: int
    step: int

    @property
    def ignored_targets(self) -> int:
        return sum(r.ignored for r in self.rows)

    @property
    def tokens(self) -> int:
        return len(self.rows) * self.block


Decoder = Callable[[int], str]


class BatchSource:
    """A token stream to cut rows from, and a decoder for one token."""

    def __init__(self, data: np.ndarray | torch.Tensor, decode: Decoder, source: str) -> None:
        self.data = data
        self.decode = decode
        self.source = source

    def __len__(self) -> int:
        return len(self.data)

    def get_batch(self, batch: int, block: int, seed: int, step: int = 0) -> Batch:
        """nanoGPT's get_batch with a generator seeded by (seed, step)."""
        n = len(self.data)
        if n < block + 1:
            raise BatchError(
                f"{self.source} has {n} tokens: a row of --block {block} needs {block + 1} "
                f"(give a smaller --block or more data)"
            )
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        starts = torch.randint(n - block, (batch,), generator=gen).tolist()
        rows = [np.asarray(self.data[i : i + block + 1], dtype=np.int64) for i in starts]
        both = torch.from_numpy(np.stack(rows))
        return Batch(both[:, :-1].clone(), both[:, 1:].clone(), self.source, tuple(starts))


class FixedBatch(BatchSource):
    """One batch given whole (a saved case's, the user's own): every step takes it."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, decode: Decoder, source: str) -> None:
        if x.dim() != 2 or x.shape != y.shape:
            raise BatchError(
                f"{source}: inputs {tuple(x.shape)} and targets {tuple(y.shape)} must both "
                "be (B, T)"
            )
        super().__init__(x.reshape(-1), decode, source)
        self.batch = Batch(x.long().cpu(), y.long().cpu(), source, ())

    def get_batch(self, batch: int, block: int, seed: int, step: int = 0) -> Batch:
        return self.batch


def token_piece(text: str) -> str:
    """A token's text made printable on one line, for aligned rows."""
    text = text.replace("\n", "⏎").replace("\t", "→").replace("\r", "␍")
    return visible_controls(text) or "∅"


def read_meta(path: Path) -> CharTokenizer:
    """nanoGPT's meta.pkl as a char tokenizer, through the safe unpickler."""
    data = safe_pickle.load(path)  # its errors name the file already
    try:
        return CharTokenizer.from_meta(data, source=str(path))
    except GptTuiError as err:
        raise BatchError(f"{path}: {err}") from None


def bin_source(
    path: Path, meta: Path | None, decode: Decoder, vocab_size: int | None = None
) -> BatchSource:
    """A nanoGPT uint16 `.bin`; its `meta.pkl` (given, or beside it) decodes if present,
    and must have the model's `vocab_size` when that is given."""
    size = path.stat().st_size
    if size == 0:
        raise BatchError(f"--data {path} is empty (0 bytes): give a train.bin prepare.py wrote")
    if size % 2:
        raise BatchError(f"--data {path}: an odd number of bytes, not nanoGPT's uint16 tokens")
    data = np.memmap(path, dtype=np.uint16, mode="r")
    meta = meta if meta is not None else path.parent / "meta.pkl"
    if meta.exists():
        chars = read_meta(meta).chars
        if vocab_size is not None and len(chars) != vocab_size:
            raise BatchError(
                f"{meta} has a vocabulary of {len(chars)} characters and the model one of "
                f"{vocab_size}: --data {path.name} was prepared for another model (give the "
                "data this model was trained on)"
            )
        return BatchSource(data, lambda i: chars[i] if 0 <= i < len(chars) else "�", str(path))
    return BatchSource(data, decode, str(path))


def text_source(
    path: Path, encode: Callable[[str], list[int]], decode: Decoder, split: str = "all"
) -> BatchSource:
    """A UTF-8 text file through the model's tokenizer (`val`: its last 10%, as eval)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BatchError(f"--data {path} is neither UTF-8 text nor a .bin of token ids") from None
    if split == "val":
        text = text[int(0.9 * len(text)) :]
    try:
        ids = encode(text)
    except GptTuiError as err:
        raise BatchError(f"--data {path}: the model's tokenizer cannot encode it ({err})") from None
    name = f"{path} (val)" if split == "val" else str(path)
    return BatchSource(torch.tensor(ids, dtype=torch.long), decode, name)


def open_source(
    data: str,
    encode: Callable[[str], list[int]],
    decode: Decoder,
    meta: str | None = None,
    split: str = "all",
    vocab_size: int | None = None,
) -> BatchSource:
    """A text file or a nanoGPT `.bin` (by its suffix); `vocab_size`, the model's, is what
    a `.bin`'s meta.pkl must have."""
    # A nanoGPT data folder (data/shakespeare_char) holds the .bin files and input.txt.
    inside = ("train.bin", "val.bin", "input.txt")
    path = check_file(data, "--data", "a text file or a nanoGPT .bin", inside, BatchError)
    if path.suffix == ".bin":
        return bin_source(path, Path(meta) if meta else None, decode, vocab_size)
    return text_source(path, encode, decode, split)


def prompt_batch(ids: Sequence[int], block: int | None = None) -> Batch:
    """One row from the prompt: inputs are its ids, targets the same shifted by one."""
    ids = [int(i) for i in ids]
    if block is not None:
        ids = ids[-(block + 1) :]
    if len(ids) < 2:
        have = f"it has {len(ids)}" if ids else "it is empty"
        raise BatchError(
            f"a batch from the prompt needs at least two tokens and {have}: give a longer prompt"
        )
    both = torch.tensor([ids], dtype=torch.long)
    return Batch(both[:, :-1].clone(), both[:, 1:].clone(), "the prompt", ())


def check_vocab(batch: Batch, vocab_size: int) -> None:
    """Raise one line naming the first id outside [0, vocab) (targets may be -1)."""
    for name, t, low in (("input", batch.x, 0), ("target", batch.y, IGNORE)):
        bad = ((t < low) | (t >= vocab_size)) & ~((t == IGNORE) & (low == IGNORE))
        if bool(bad.any()):
            row, col = (int(v) for v in bad.nonzero()[0])
            value = int(t[row, col])
            raise BatchError(
                f"{name} id {value} at row {row}, position {col} is outside the model's "
                f"vocabulary of {vocab_size} (check that the data was encoded for this model)"
            )


def batch_view(batch: Batch, decode: Decoder, seed: int = 0, step: int = 0) -> BatchView:
    rows = []
    for r in range(batch.x.shape[0]):
        xs, ys = batch.x[r].tolist(), batch.y[r].tolist()
        rows.append(
            BatchRow(
                offset=batch.offsets[r] if batch.offsets else None,
                input_ids=tuple(xs),
                target_ids=tuple(ys),
                input_text=tuple(token_piece(decode(i)) for i in xs),
                target_text=tuple("·" if i == IGNORE else token_piece(decode(i)) for i in ys),
                ignored=sum(1 for i in ys if i == IGNORE),
            )
        )
    return BatchView(batch.source, tuple(rows), int(batch.x.shape[1]), seed, step)
