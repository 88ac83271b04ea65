"""Tokenizers: char-level (nanoGPT meta.pkl), GPT-2 / nanochat BPE via tiktoken, raw bytes.

Every tokenizer has the same small surface (`Tokenizer`): a name, a vocabulary size,
`encode`, `decode`, and `token_str` (a printable label for one token, for heatmap axes).

No network: tiktoken downloads GPT-2's files on first use unless they are cached. We look
for the cached files ourselves and build the encoding from them, so nothing ever waits on
the network; without them the caller gets a `ByteTokenizer` that says why.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import GptTuiError


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
WHITESPACE_GLYPHS = {"\n": "⏎", " ": "␣", "\t": "⇥", "\r": "␍"}


def printable(text: str) -> str:
    """`text` with whitespace and control characters made visible, for one-line labels: a
    control character below U+0100 is written as a byte that is not text is, `<0x10>`."""
    out = []
    for ch in text:
        if ch in WHITESPACE_GLYPHS:
            out.append(WHITESPACE_GLYPHS[ch])
        elif not ch.isprintable() and ord(ch) < 0x100:
            out.append(f"<0x{ord(ch):02X}>")
        elif not ch.isprintable():
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def visible_controls(text: str) -> str:
    """`text` with control characters drawn, not sent: C0 as their U+2400 symbols (ESC ␛,
    NUL ␀), DEL ␡, other unprintables as \\xNN / \\uNNNN, so a byte cannot drive the terminal."""
    out = []
    for ch in text:
        code = ord(ch)
        if code < 0x20:
            out.append(chr(0x2400 + code))
        elif code == 0x7F:
            out.append("␡")
        elif not ch.isprintable() and ch != " ":
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


# nanoGPT's shakespeare_char vocabulary (data/shakespeare_char/prepare.py): what a 65-token
# model without its meta.pkl most likely reads.
SHAKESPEARE_CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SHAKESPEARE_GUESS = (
    "no vocabulary found: its 65 tokens are read as nanoGPT's shakespeare_char characters "
    "(give the run's meta.pkl if yours differ)"
)


@dataclass
class CharTokenizer:
    """One token per character, ids in sorted character order (as nanoGPT's prepare.py)."""

    chars: list[str]
    name: str = "char"
    reason: str = ""  # set when the vocabulary is a guess: why, shown to the user

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
                "(raw bytes are used because no vocabulary was found: give the run's "
                "meta.pkl or tokenizer file)"
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
    "r50k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken",
        "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
    ),
}
# GPT-2's pre-tokenizer split, in tiktoken's equivalent form (r50k_pat_str).
GPT2_PAT_STR = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)


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


def _data_gym_byte_decoder() -> dict[str, int]:
    """GPT-2's encoder.json spells bytes as characters: printable non-space bytes as
    themselves, the other 68 bytes as chr(256), chr(257), ... in byte order."""
    kept = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    decoder = {chr(b): b for b in kept}
    others = [b for b in range(256) if b not in set(kept)]
    decoder.update({chr(256 + n): b for n, b in enumerate(others)})
    return decoder


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TokenizerError(f"cannot read {path.name} ({type(e).__name__})") from None


def gpt2_bpe_from_files(vocab_bpe: str | Path, encoder_json: str | Path) -> TiktokenTokenizer:
    """GPT-2 BPE from local `vocab.bpe` + `encoder.json` (HF: `merges.txt` + `vocab.json`).

    The ranks are encoder.json's (tiktoken merges by rank); vocab.bpe is checked to list
    one merge per non-byte token. Read here, not by tiktoken, whose loader copies local
    files into its cache keyed by path (a changed file would come back stale).
    """
    tiktoken = _import_tiktoken()
    if tiktoken is None:
        raise TokenizerError("GPT-2 BPE needs tiktoken: pip install 'gpt-tui[tokenizers]'")
    vocab_bpe, encoder_json = Path(vocab_bpe), Path(encoder_json)
    names = f"{vocab_bpe.name} + {encoder_json.name}"
    try:
        encoder = json.loads(_read_text(encoder_json))
    except json.JSONDecodeError:
        encoder = None
    if not isinstance(encoder, dict):
        raise TokenizerError(f"{encoder_json.name} is not a JSON object: not GPT-2's encoder")
    merges = [
        line for line in _read_text(vocab_bpe).splitlines() if line and not line.startswith("#")
    ]
    decoder = _data_gym_byte_decoder()
    special = {k: v for k, v in encoder.items() if k.startswith("<|")}
    try:
        ranks = {
            bytes(decoder[ch] for ch in token): int(rank)
            for token, rank in encoder.items()
            if token not in special
        }
    except (AttributeError, KeyError, TypeError, ValueError):
        raise TokenizerError(f"{names}: encoder.json is not GPT-2's byte-level layout") from None
    if sorted(ranks.values()) != list(range(len(ranks))) or len(merges) != len(ranks) - 256:
        raise TokenizerError(
            f"{names} do not match: {len(ranks)} tokens need {len(ranks) - 256} merges, "
            f"vocab.bpe lists {len(merges)}"
        )
    specials = {str(k): int(v) for k, v in special.items()} or {"<|endoftext|>": len(ranks)}
    try:
        encoding = tiktoken.Encoding(
            name="gpt2", pat_str=GPT2_PAT_STR, mergeable_ranks=ranks, special_tokens=specials
        )
    except Exception as e:  # noqa: BLE001 - tiktoken rejects bad tables in several ways
        raise TokenizerError(f"{names}: tiktoken rejected the vocabulary ({e})") from None
    return TiktokenTokenizer(encoding, name="gpt2")


def tiktoken_file(path: Path, name: str | None = None) -> TiktokenTokenizer:
    """A `.tiktoken` ranks file (GPT-2's is tiktoken's `r50k_base`). The file records no
    split pattern or special tokens: GPT-2's pattern is used, with `<|endoftext|>` after
    the last rank. Read here, not by tiktoken's loader, which copies it into its cache."""
    tiktoken = _import_tiktoken()
    if tiktoken is None:
        raise TokenizerError(f"{path.name} is a tiktoken file; pip install tiktoken to use it")
    try:
        lines = path.read_bytes().splitlines()
    except OSError as e:
        raise TokenizerError(f"cannot read {path}: {e.strerror or e}") from None
    ranks: dict[bytes, int] = {}
    for n, line in enumerate(lines, 1):
        try:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, binascii.Error):
            raise TokenizerError(
                f"{path.name}:{n}: not a .tiktoken line (expected 'base64token rank')"
            ) from None
    if not ranks or sorted(ranks.values()) != list(range(len(ranks))):
        raise TokenizerError(f"{path.name}: ranks are not 0..N-1, so not a BPE ranks file")
    try:
        encoding = tiktoken.Encoding(
            name=path.stem,
            pat_str=GPT2_PAT_STR,
            mergeable_ranks=ranks,
            special_tokens={"<|endoftext|>": len(ranks)},
        )
    except Exception as e:  # noqa: BLE001 - tiktoken rejects bad tables in several ways
        raise TokenizerError(f"{path.name}: tiktoken rejected the ranks ({e})") from None
    return TiktokenTokenizer(encoding, name=name or f"tiktoken:{path.stem}")


def gpt2_tokenizer() -> TiktokenTokenizer | None:
    """GPT-2 BPE if tiktoken and its cached files are here; None otherwise. Never downloads."""
    tiktoken = _import_tiktoken()
    if tiktoken is None:
        return None
    loaded = getattr(getattr(tiktoken, "registry", None), "ENCODINGS", {}).get("gpt2")
    if loaded is not None:
        return TiktokenTokenizer(loaded, name="gpt2")
    files = {key: _cached_file(url, sha) for key, (url, sha) in GPT2_FILES.items()}
    try:
        if files.get("vocab_bpe") and files.get("encoder_json"):
            return gpt2_bpe_from_files(files["vocab_bpe"], files["encoder_json"])
        if files.get("r50k_base"):  # the same ranks, as tiktoken's r50k_base caches them
            return tiktoken_file(files["r50k_base"], name="gpt2")
    except TokenizerError:
        return None
    return None


GET_BPE_HINT = (
    "pass --tokenizer path/to/gpt2.tiktoken (or GPT-2's encoder.json + vocab.bpe) for GPT-2 BPE"
)


def gpt2_unavailable_reason() -> str:
    if _import_tiktoken() is None:
        return "GPT-2 BPE needs tiktoken (pip install 'gpt-tui[tokenizers]'); showing raw bytes"
    cache = tiktoken_cache_dir()
    where = f"in {cache}" if cache else "(TIKTOKEN_CACHE_DIR is empty: caching off)"
    return (
        f"GPT-2 BPE files are not cached {where} and there is no download here; showing raw "
        f"bytes ({GET_BPE_HINT})"
    )


def describe_tokenizer(tok: Tokenizer, source: str | None = None) -> str:
    """One line for the status bar and `doctor`: which tokenizer, its size, where it came
    from; for raw bytes or a guessed vocabulary, why (and how to get BPE)."""
    text = f"{tok.name}, {tok.vocab_size:,} tokens"
    if source and source != "default":
        text += f", from {source}"
    reason = getattr(tok, "reason", "")
    if isinstance(tok, ByteTokenizer):
        text += f": {reason}" if reason else ": raw bytes"
        if tok.vocab_size >= 50257 and GET_BPE_HINT not in text:
            text += f"; {GET_BPE_HINT}"
    elif reason:  # a guessed vocabulary
        text += f": {reason}"
    return text


def default_tokenizer(config: Any) -> Tokenizer:
    """The best tokenizer for a model whose own vocabulary file was not found.

    `config` is a model config (or a vocabulary size). GPT-2-sized vocabularies (50257, and
    nanoGPT's padded 50304) get GPT-2 BPE when available offline; 65 tokens, nanoGPT's
    shakespeare_char characters (said in `.reason`: a guess); anything else raw bytes, with
    the reason in `.reason`.
    """
    vocab = config if isinstance(config, int) else int(config.vocab_size)
    if vocab == len(SHAKESPEARE_CHARS):
        return CharTokenizer(list(SHAKESPEARE_CHARS), reason=SHAKESPEARE_GUESS)
    if vocab in (50257, 50304):
        bpe = gpt2_tokenizer()
        if bpe is not None:
            return bpe
        return ByteTokenizer(vocab, reason=gpt2_unavailable_reason())
    return ByteTokenizer(
        vocab, reason=f"no vocabulary found for this {vocab}-token model; showing raw bytes"
    )
