"""The one place a checkpoint's tokenizer is chosen, once its format is known:
the file the user named (`--tokenizer` / `--meta`), else the first vocabulary found
beside the checkpoint that fits, else the default for the model's vocabulary size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import safe_pickle
from ..tokenizer_files import load_tokenizer_path
from ..tokenizers import (
    ByteTokenizer,
    Tokenizer,
    TokenizerError,
    default_tokenizer,
    describe_tokenizer,
)
from .reading import CheckpointError, UnsafeCheckpointError


def _from_path(
    path: Path, vocab_size: int | None, info: dict[str, Any], explicit: bool
) -> Tokenizer | None:
    """Unsafe pickles always raise; other problems raise when the user named the file and
    otherwise become a note in `info` (the caller falls back)."""
    try:
        tok = load_tokenizer_path(path)
    except safe_pickle.UnsafePickleError as e:
        raise UnsafeCheckpointError(str(e)) from None
    except TokenizerError as e:
        if explicit:
            raise CheckpointError(f"{e}") from None
        info["tokenizer_note"] = f"{path.name} not used: {e}"
        return None
    if vocab_size is not None and tok.vocab_size > vocab_size:
        msg = (
            f"{path.name} has {tok.vocab_size} tokens but the model only {vocab_size}: "
            "not this model's vocabulary"
        )
        if explicit:
            raise CheckpointError(msg + "; pass the right file")
        info["tokenizer_note"] = msg
        return None
    info["tokenizer_source"] = str(path)
    return tok


def choose_tokenizer(
    vocab_size: int | None, found: list[Path], named: str | Path | None, info: dict[str, Any]
) -> Tokenizer:
    """The tokenizer for a model of `vocab_size` tokens (None: unknown, bytes by default);
    what was tried and why is noted in `info`."""
    tok = None
    if named is not None:
        tok = _from_path(Path(named).expanduser(), vocab_size, info, explicit=True)
    else:
        for candidate in found:
            tok = _from_path(candidate, vocab_size, info, explicit=False)
            if tok is not None:
                break
    if tok is None:
        tok = default_tokenizer(vocab_size or 256)
        reason = getattr(tok, "reason", "")
        if reason:
            info["tokenizer_note"] = "; ".join(filter(None, [info.get("tokenizer_note"), reason]))
        info["tokenizer_source"] = "default"
    info["tokenizer"] = tok.name
    info["tokenizer_vocab_size"] = tok.vocab_size
    return tok


def tokenizer_note(tok: Tokenizer, source: str | None, problem: str = "") -> str:
    """One line when the text is read through a guessed or fallback tokenizer: which one
    and why (`problem`: what the loader tried and could not use); "" for the model's own."""
    reason = getattr(tok, "reason", "")
    if not (problem or reason or isinstance(tok, ByteTokenizer)):
        return ""
    tried = problem.replace(reason, "").strip("; ") if reason else problem
    return "; ".join(filter(None, [f"tokenizer {describe_tokenizer(tok, source)}", tried]))
