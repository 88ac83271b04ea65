"""Tokenizers read from local files, by content, never from the network:

- our char JSON (`{"type": "char", "chars": [...]}`), nanoGPT's `meta.pkl`, nanochat's
  `tokenizer.pkl` (a pickled tiktoken Encoding, read through the safe unpickler);
- a `.tiktoken` file (tiktoken's BPE ranks: one `base64(token) rank` per line);
- GPT-2's `encoder.json` + `vocab.bpe` (Hugging Face: `vocab.json` + `merges.txt`),
  given as a folder or as either file;
- a Hugging Face `tokenizer.json`, read with the `tokenizers` package when installed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import safe_pickle
from .tokenizers import (
    CharTokenizer,
    TiktokenTokenizer,
    Tokenizer,
    TokenizerError,
    _check_ids,
    _import_tiktoken,
    gpt2_bpe_from_files,
    gpt2_tokenizer,
    printable,
    tiktoken_file,
)

# The two spellings of GPT-2's vocabulary pair: (ranks, merges).
BPE_PAIRS = (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt"))


def encoding_from_state(state: Any, source: str) -> TiktokenTokenizer:
    """Build a tiktoken Encoding from a pickled Encoding's state, after checking it is data."""
    tiktoken = _import_tiktoken()
    if tiktoken is None:
        raise TokenizerError(f"{source} is a tiktoken tokenizer; pip install tiktoken to use it")
    if isinstance(state, str):  # a registered encoding pickled by name, e.g. "gpt2"
        if state == "gpt2":
            bpe = gpt2_tokenizer()
            if bpe is not None:
                return bpe
        raise TokenizerError(f"{source} names tiktoken's {state!r} encoding, not cached offline")
    ok = (
        isinstance(state, Mapping)
        and isinstance(state.get("name"), str)
        and isinstance(state.get("pat_str"), str)
        and isinstance(state.get("mergeable_ranks"), Mapping)
        and isinstance(state.get("special_tokens"), Mapping)
        and all(
            isinstance(k, bytes) and type(v) is int for k, v in state["mergeable_ranks"].items()
        )
        and all(isinstance(k, str) and type(v) is int for k, v in state["special_tokens"].items())
    )
    if not ok:
        raise TokenizerError(f"{source}: the pickled tiktoken Encoding has an unexpected layout")
    try:
        encoding = tiktoken.Encoding(
            name=state["name"],
            pat_str=state["pat_str"],
            mergeable_ranks=dict(state["mergeable_ranks"]),
            special_tokens=dict(state["special_tokens"]),
        )
    except Exception as e:  # noqa: BLE001 - tiktoken rejects bad tables in several ways
        raise TokenizerError(f"{source}: tiktoken rejected the encoding ({e})") from None
    return TiktokenTokenizer(encoding)


class HFTokenizer:
    """A Hugging Face `tokenizers` tokenizer (from a tokenizer.json)."""

    def __init__(self, tokenizer: Any, name: str) -> None:
        self.tokenizer = tokenizer
        self.name = name

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        _check_ids(ids, self.vocab_size)
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_str(self, id: int) -> str:
        if not 0 <= id < self.vocab_size:
            return f"<{id}>"
        return printable(self.tokenizer.decode([id], skip_special_tokens=False)) or f"<{id}>"


def _hf_tokenizer_json(path: Path) -> Any:
    try:
        from tokenizers import Tokenizer as HFTokenizerImpl
    except ImportError:
        raise TokenizerError(
            f"{path.name} is a Hugging Face tokenizer; pip install tokenizers to read it"
        ) from None
    try:
        return HFTokenizerImpl.from_file(str(path))
    except Exception as e:  # noqa: BLE001 - tokenizers raises its own exception types
        raise TokenizerError(f"{path.name}: tokenizers cannot read it ({e})") from None


def load_tokenizer_file(path: str | Path) -> Tokenizer:
    """A tokenizer from one file, by its content (see the module docstring).

    Raises TokenizerError, or safe_pickle.UnsafePickleError for a pickle that wants to run code.
    """
    path = Path(path)
    for ranks, merges in BPE_PAIRS:
        if path.name in (ranks, merges):
            return _bpe_pair(path.parent, ranks, merges)
    try:
        head = path.read_bytes()
    except FileNotFoundError:
        raise TokenizerError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TokenizerError(f"{path} is a folder, expected a tokenizer file") from None
    except OSError as e:
        raise TokenizerError(f"cannot read {path}: {e.strerror or e}") from None
    if path.suffix == ".tiktoken":
        return tiktoken_file(path)
    if head[:1] == b"\x80" or path.suffix == ".pkl":
        try:
            obj = safe_pickle.loads(head, path.name)
        except safe_pickle.UnsafePickleError:
            raise
        except safe_pickle.SafePickleError as e:
            raise TokenizerError(str(e)) from None
        if isinstance(obj, safe_pickle.EncodingState):
            return encoding_from_state(obj.state, path.name)
        return CharTokenizer.from_meta(obj, path.name)
    try:
        data = json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TokenizerError(
            f"{path.name} is neither JSON, a pickle nor a .tiktoken file: not a tokenizer "
            "gpt-tui can read"
        ) from None
    if isinstance(data, Mapping) and data.get("type") == "char":
        return CharTokenizer.from_json(data, path.name)
    if isinstance(data, Mapping) and isinstance(data.get("model"), Mapping):
        impl = _hf_tokenizer_json(path)
        return HFTokenizer(impl, name=f"hf:{data['model'].get('type', 'tokenizer')}")
    raise TokenizerError(f"{path.name}: JSON without a known tokenizer layout")


def _bpe_pair(folder: Path, ranks: str, merges: str) -> TiktokenTokenizer:
    if not (folder / ranks).is_file() or not (folder / merges).is_file():
        raise TokenizerError(f"GPT-2 BPE needs both {ranks} and {merges} in {folder}")
    return gpt2_bpe_from_files(folder / merges, folder / ranks)


def load_tokenizer_path(path: str | Path) -> Tokenizer:
    """A tokenizer from a file or a folder holding one (see the module docstring)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return load_tokenizer_file(path)
    for ranks, merges in BPE_PAIRS:
        if (path / ranks).is_file() and (path / merges).is_file():
            return _bpe_pair(path, ranks, merges)
    found = sorted(path.glob("*.tiktoken")) + [
        path / n for n in ("tokenizer.json", "tokenizer.pkl", "meta.pkl") if (path / n).is_file()
    ]
    if len(found) == 1:
        return load_tokenizer_file(found[0])
    if found:
        names = ", ".join(f.name for f in found[:4])
        raise TokenizerError(f"{path} holds several tokenizers ({names}): name the file")
    raise TokenizerError(
        f"{path} holds no tokenizer: looked for *.tiktoken, encoder.json + vocab.bpe, "
        "vocab.json + merges.txt, tokenizer.json, tokenizer.pkl, meta.pkl"
    )
