"""Tokenizers: char-level (nanoGPT meta.pkl), GPT-2 / nanochat BPE via tiktoken, raw bytes.

Every tokenizer has the same small surface (`Tokenizer`): a name, a vocabulary size,
`encode`, `decode`, and `token_str` (a printable label for one token, for heatmap axes).

No network: tiktoken downloads GPT-2's files on first use unless they are cached. We look
for the cached files ourselves and build the encoding from them, so nothing ever waits on
the network; without them the caller gets a `ByteTokenizer` that says why.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import GptTuiError
from . import safe_pickle


class TokenizerError(GptTuiError, ValueError):
    """Text or ids the tokenizer cannot handle; the message says which and why."""


@runtime_checkable
class Tokenizer(Protocol):
    name: str

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def token_str(self, id: int) -> str: ...


# Characters that would be invisible or break a one-line label.
_VISIBLE = {"\n": "⏎", " ": "␣", "\t": "⇥", "\r": "␍"}


def printable(text: str) -> str:
    """`text` with whitespace and control characters made visible, for one-line labels."""
    out = []
    for ch in text:
        if ch in _VISIBLE:
            out.append(_VISIBLE[ch])
        elif not ch.isprintable():
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def _bytes_label(b: bytes) -> str:
    """A token's bytes as text when they are whole UTF-8, else as hex like <0xE2 0x80>."""
    try:
        return printable(b.decode("utf-8"))
    except UnicodeDecodeError:
        return "<" + " ".join(f"0x{x:02X}" for x in b) + ">"


def _check_ids(ids: Sequence[int], vocab_size: int) -> None:
    bad = [i for i in ids if not 0 <= int(i) < vocab_size]
    if bad:
        raise TokenizerError(
            f"token id {int(bad[0])} is out of range for a vocabulary of {vocab_size}"
            + (f" ({len(bad)} such ids)" if len(bad) > 1 else "")
        )


@dataclass
class CharTokenizer:
    """One token per character, ids in sorted character order (as nanoGPT's prepare.py)."""

    chars: list[str]
    name: str = "char"

    def __post_init__(self) -> None:
        self.stoi = {ch: i for i, ch in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    @classmethod
    def from_meta(cls, meta: Any, source: str = "meta.pkl") -> CharTokenizer:
        """From the dict nanoGPT's data/*/prepare.py pickles: {'vocab_size', 'itos', 'stoi'}."""
        if not isinstance(meta, Mapping):
            raise TokenizerError(
                f"{source} holds a {type(meta).__name__}, not nanoGPT's vocabulary dict"
            )
        itos = meta.get("itos")
        if not isinstance(itos, Mapping) and isinstance(meta.get("stoi"), Mapping):
            itos = {i: s for s, i in meta["stoi"].items()}
        if not isinstance(itos, Mapping) or not itos:
            keys = ", ".join(map(str, list(meta)[:6])) or "none"
            raise TokenizerError(f"{source} has no 'itos' / 'stoi' vocabulary (keys: {keys})")
        n = len(itos)
        if sorted(itos) != list(range(n)) or not all(
            isinstance(s, str) and len(s) == 1 for s in itos.values()
        ):
            raise TokenizerError(f"{source}: 'itos' must map ids 0..{n - 1} to single characters")
        declared = meta.get("vocab_size", n)
        if declared != n:
            raise TokenizerError(f"{source}: vocab_size={declared} but 'itos' has {n} entries")
        return cls([itos[i] for i in range(n)])

    @classmethod
    def from_json(cls, data: Any, source: str = "tokenizer.json") -> CharTokenizer:
        """From our JSON form {"type": "char", "chars": [...]}."""
        chars = data.get("chars") if isinstance(data, Mapping) else None
        if (
            not isinstance(chars, list)
            or not chars
            or not all(isinstance(c, str) and len(c) == 1 for c in chars)
            or len(set(chars)) != len(chars)
        ):
            raise TokenizerError(f"{source}: 'chars' must be a list of distinct single characters")
        return cls(list(chars))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        unknown = sorted({ch for ch in text if ch not in self.stoi})
        if unknown:
            shown = ", ".join(repr(ch) for ch in unknown[:8])
            more = f" (+{len(unknown) - 8} more)" if len(unknown) > 8 else ""
            known = "".join(self.chars)
            known = known if len(known) <= 70 else known[:67] + "..."
            raise TokenizerError(
                f"characters not in the model's {self.vocab_size}-character vocabulary: "
                f"{shown}{more}; it knows only {known!r}"
            )
        return [self.stoi[ch] for ch in text]

    def decode(self, ids: Sequence[int]) -> str:
        _check_ids(ids, self.vocab_size)
        return "".join(self.chars[int(i)] for i in ids)

    def token_str(self, id: int) -> str:
        if not 0 <= id < self.vocab_size:
            return f"<{id}>"
        return printable(self.chars[id])

    def to_meta(self) -> dict:
        """The dictionary nanoGPT's data/*/prepare.py pickles as meta.pkl."""
        return {
            "vocab_size": self.vocab_size,
            "itos": dict(enumerate(self.chars)),
            "stoi": self.stoi,
        }

    def to_json(self) -> dict:
        return {"type": "char", "chars": list(self.chars)}


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255: the fallback when the model's vocabulary is unknown.

    `model_vocab` is the model's vocabulary size. Ids from 256 up to it have no known text
    and decode as '<id>'; a model with fewer than 256 tokens cannot take every byte, so
    encoding such a byte is an error. `reason` says why bytes are used (shown to the user).
    """

    name = "bytes"

    def __init__(self, model_vocab: int = 256, reason: str = "") -> None:
        self.model_vocab = model_vocab
        self.reason = reason

    @property
    def vocab_size(self) -> int:
        return self.model_vocab

    def encode(self, text: str) -> list[int]:
        ids = list(text.encode("utf-8"))
        bad = sorted({i for i in ids if i >= self.model_vocab})
        if bad:
            shown = ", ".join(f"0x{b:02X}" for b in bad[:8])
            raise TokenizerError(
                f"bytes {shown} are outside this model's {self.model_vocab}-token vocabulary "
                "(raw bytes are used because no vocabulary was found)"
            )
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        _check_ids(ids, self.vocab_size)
        out: list[str] = []
        run = bytearray()
        for i in ids:
            i = int(i)
            if i < 256:
                run.append(i)
                continue
            out.append(run.decode("utf-8", errors="replace"))
            run.clear()
            out.append(f"<{i}>")
        out.append(run.decode("utf-8", errors="replace"))
        return "".join(out)

    def token_str(self, id: int) -> str:
        if not 0 <= id < 256:
            return f"<{id}>"
        if id < 128:
            return printable(chr(id))
        return f"<0x{id:02X}>"


class TiktokenTokenizer:
    """A tiktoken BPE `Encoding` (GPT-2's, or nanochat's from its tokenizer.pkl)."""

    def __init__(self, encoding: Any, name: str | None = None) -> None:
        self.encoding = encoding
        self.name = name or f"tiktoken:{encoding.name}"

    @property
    def vocab_size(self) -> int:
        return int(self.encoding.n_vocab)

    def encode(self, text: str) -> list[int]:
        return list(self.encoding.encode(text, allowed_special="all"))

    def decode(self, ids: Sequence[int]) -> str:
        _check_ids(ids, self.vocab_size)
        try:
            return self.encoding.decode([int(i) for i in ids])
        except (KeyError, ValueError) as e:  # a hole in the id range
            raise TokenizerError(f"cannot decode ids with {self.name}: {e}") from None

    def token_str(self, id: int) -> str:
        if not 0 <= id < self.vocab_size:
            return f"<{id}>"
        try:
            return _bytes_label(self.encoding.decode_single_token_bytes(id))
        except (KeyError, ValueError):
            return f"<{id}>"


# --- tiktoken without the network -------------------------------------------------------

# Where tiktoken's gpt2 encoding comes from, and the sha256 it checks (tiktoken_ext).
GPT2_FILES: dict[str, tuple[str, str]] = {
    "vocab_bpe": (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    ),
    "encoder_json": (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    ),
}
# GPT-2's pre-tokenizer split, in tiktoken's equivalent form (r50k_pat_str).
GPT2_PAT_STR = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)
GPT2_SPECIAL = {"<|endoftext|>": 50256}


def tiktoken_cache_dir() -> Path | None:
    """tiktoken's cache folder, resolved as tiktoken does; None when caching is off."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return Path(os.environ[var]) if os.environ[var] else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def _cached_file(url: str, sha256: str) -> Path | None:
    cache = tiktoken_cache_dir()
    if cache is None:
        return None
    path = cache / hashlib.sha1(url.encode()).hexdigest()
    try:
        ok = path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    except OSError:
        return None
    return path if ok else None


def _import_tiktoken() -> Any:
    try:
        import tiktoken
    except ImportError:
        return None
    return tiktoken


def gpt2_bpe_from_files(vocab_bpe: str | Path, encoder_json: str | Path) -> TiktokenTokenizer:
    """GPT-2 BPE from local `vocab.bpe` + `encoder.json` (HF: `merges.txt` + `vocab.json`)."""
    tiktoken = _import_tiktoken()
    if tiktoken is None:
        raise TokenizerError("GPT-2 BPE needs tiktoken: pip install 'gpt-tui[tokenizers]'")
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    try:
        ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(vocab_bpe), encoder_json_file=str(encoder_json)
        )
        encoding = tiktoken.Encoding(
            name="gpt2",
            pat_str=GPT2_PAT_STR,
            mergeable_ranks=ranks,
            special_tokens={"<|endoftext|>": len(ranks)},
        )
    except Exception as e:  # noqa: BLE001 - tiktoken checks with assert / KeyError / ValueError
        raise TokenizerError(
            f"{Path(vocab_bpe).name} + {Path(encoder_json).name} are not a GPT-2 BPE "
            f"vocabulary ({type(e).__name__})"
        ) from None
    return TiktokenTokenizer(encoding, name="gpt2")


def gpt2_tokenizer() -> TiktokenTokenizer | None:
    """GPT-2 BPE if tiktoken and its cached files are here; None otherwise. Never downloads."""
    tiktoken = _import_tiktoken()
    if tiktoken is None:
        return None
    loaded = getattr(getattr(tiktoken, "registry", None), "ENCODINGS", {}).get("gpt2")
    if loaded is not None:
        return TiktokenTokenizer(loaded, name="gpt2")
    files = {key: _cached_file(url, sha) for key, (url, sha) in GPT2_FILES.items()}
    if any(p is None for p in files.values()):
        return None
    try:
        return gpt2_bpe_from_files(files["vocab_bpe"], files["encoder_json"])
    except TokenizerError:
        return None


def gpt2_unavailable_reason() -> str:
    if _import_tiktoken() is None:
        return "GPT-2 BPE needs tiktoken (pip install 'gpt-tui[tokenizers]'); showing raw bytes"
    cache = tiktoken_cache_dir()
    where = f"in {cache}" if cache else "(TIKTOKEN_CACHE_DIR is empty: caching off)"
    return (
        f"GPT-2 BPE files are not cached {where} and there is no download here; showing raw "
        "bytes (run tiktoken.get_encoding('gpt2') once with network, or set TIKTOKEN_CACHE_DIR)"
    )


def default_tokenizer(config: Any) -> Tokenizer:
    """The best tokenizer for a model whose own vocabulary file was not found.

    `config` is a model config (or a vocabulary size). GPT-2-sized vocabularies (50257, and
    nanoGPT's padded 50304) get GPT-2 BPE when available offline; anything else raw bytes.
    A `ByteTokenizer` carries the reason in `.reason`.
    """
    vocab = config if isinstance(config, int) else int(config.vocab_size)
    if vocab in (50257, 50304):
        bpe = gpt2_tokenizer()
        if bpe is not None:
            return bpe
        return ByteTokenizer(vocab, reason=gpt2_unavailable_reason())
    return ByteTokenizer(
        vocab, reason=f"no vocabulary found for this {vocab}-token model; showing raw bytes"
    )


# --- reading tokenizer files ------------------------------------------------------------


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


def load_tokenizer_file(path: str | Path) -> Tokenizer:
    """A tokenizer from a file, by its content: our char JSON, a nanoGPT meta.pkl, or a
    nanochat tokenizer.pkl (pickled tiktoken Encoding), read through the safe unpickler.

    Raises TokenizerError, or safe_pickle.UnsafePickleError for a pickle that wants to run code.
    """
    path = Path(path)
    try:
        head = path.read_bytes()
    except FileNotFoundError:
        raise TokenizerError(f"{path}: no such file") from None
    except OSError as e:
        raise TokenizerError(f"cannot read {path}: {e.strerror or e}") from None
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
            f"{path.name} is neither JSON nor a pickle: not a tokenizer gpt-tui can read"
        ) from None
    if isinstance(data, Mapping) and data.get("type") == "char":
        return CharTokenizer.from_json(data, path.name)
    if isinstance(data, Mapping) and isinstance(data.get("model"), Mapping):
        raise TokenizerError(
            f"{path.name} is a Hugging Face tokenizers file, which gpt-tui does not read; "
            "for GPT-2 put vocab.json + merges.txt beside the weights"
        )
    raise TokenizerError(f"{path.name}: JSON without a known tokenizer layout")
