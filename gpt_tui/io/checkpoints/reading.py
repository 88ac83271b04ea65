"""Reading checkpoint files safely: torch.load with weights_only=True only, JSON, and the
plain pieces every format parser shares (errors, the parsed result, state-dict checks)."""

from __future__ import annotations

import contextlib
import json
import pickle
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...errors import GptTuiError
from ...models.config import ConfigError, ModelConfig, config_from_dict
from .. import safe_pickle
from ..tokenizers import Tokenizer


class CheckpointError(GptTuiError):
    """A checkpoint cannot be loaded. The message is one line: the problem and the fix."""


class UnsafeCheckpointError(CheckpointError, safe_pickle.UnsafePickleError):
    """A file wants to run code (or holds non-tensor objects); refused, nothing ran."""


@dataclass
class LoadedCheckpoint:
    model: torch.nn.Module  # eval mode, on the requested device and dtype
    config: ModelConfig
    family: str  # "nanogpt" | "nanochat"
    tokenizer: Tokenizer | None
    format: str  # "nanogpt-ckpt" | "nanochat" | "hf-gpt2" | "model-file"
    path: Path  # the weights file that was read
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Parsed:
    """A checkpoint read and understood, before a model exists or a tokenizer is chosen."""

    format: str
    family: str
    path: Path
    config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    info: dict[str, Any]
    vocab_files: list[Path]  # vocabularies found beside the checkpoint, best first


_ZIP_MAGIC = b"PK\x03\x04"
MASK_BUFFER = re.compile(r"\.attn\.(bias|masked_bias)$")  # old causal-mask buffers


def sniff(path: Path) -> str:
    """'empty', 'zip' (torch.save), 'safetensors' or 'other' (maybe a legacy torch pickle)."""
    with open(path, "rb") as f:
        head = f.read(9)
    if not head:
        return "empty"
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 0:
        return "safetensors"  # its header length is checked before reading (check_safetensors)
    return "other"


def check_safetensors(path: Path) -> None:
    """A safetensors file's 8-byte header length must fit the file: a damaged or hostile
    one (10**12) would otherwise reach the reader."""
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
    size = path.stat().st_size
    if header_len > size - 8:
        raise CheckpointError(
            f"{path.name} is a damaged safetensors file: its header claims {header_len:,} "
            f"bytes and the file has {size:,}; download or save it again"
        )


@contextlib.contextmanager
def _numpy_scalars_allowed() -> Iterator[None]:
    """Let weights_only read numpy scalars (e.g. a fork's best_val_loss): plain data only."""
    try:
        import numpy as np
    except ImportError:
        yield
        return
    core = getattr(np, "_core", None) or np.core
    allowed = [core.multiarray.scalar, np.dtype]
    allowed += [type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64)]
    allowed += [type(np.dtype(t)) for t in (np.int32, np.bool_)]
    with torch.serialization.safe_globals(allowed):
        yield


def first_sentence(e: BaseException) -> str:
    """The gist of a library error: its first line, up to the first full stop."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text.split(". ")[0].rstrip(".")[:120]


def _unsafe_message(name: str, global_name: str) -> str:
    return (
        f"{name} cannot be loaded safely: it holds Python objects, not just tensors "
        f"({global_name}); refused — nothing from it was executed (if you trust it, "
        "re-save it with tensors and plain values only)"
    )


def torch_load(path: Path) -> Any:
    """torch.load with weights_only=True (memory-mapped when possible); errors made readable."""
    kind = sniff(path)
    if kind == "empty":
        raise CheckpointError(f"{path.name} is empty (0 bytes): the save was interrupted?")
    if kind == "safetensors":
        check_safetensors(path)
    try:
        with warnings.catch_warnings(), _numpy_scalars_allowed():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=kind == "zip")
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise UnsafeCheckpointError(_unsafe_message(path.name, found.group(1))) from None
        if kind == "other":
            names = [
                g
                for g in safe_pickle.scan_globals(path.read_bytes())
                if not g.startswith("torch.") and not safe_pickle.is_allowed(g)
            ]
            if names:
                raise UnsafeCheckpointError(_unsafe_message(path.name, names[0])) from None
        raise CheckpointError(
            f"{path.name} is not a PyTorch checkpoint torch.load can read safely "
            f"({_found(path) or 'damaged, or another format'})"
        ) from None
    except EOFError:
        raise CheckpointError(f"{path.name} is cut short (truncated file); save it again") from None
    except (RuntimeError, ValueError, OSError, KeyError, IndexError) as e:
        detail = first_sentence(e)
        if kind == "zip":
            raise CheckpointError(
                f"{path.name} is a damaged PyTorch file (truncated or corrupt zip: {detail}); "
                "save or copy it again"
            ) from None
        raise CheckpointError(
            f"{path.name} is not a PyTorch checkpoint ({_found(path) or detail}); expected a "
            "file from torch.save, safetensors, or a checkpoint folder"
        ) from None


def _found(path: Path) -> str | None:
    """What the file holds instead, in words: text and its first line, or its first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(ch.isprintable() or ch in "\n\r\t" for ch in text):
        line = text.splitlines()[0] if text.strip() else ""
        return f"it is a text file starting {line[:40]!r}"
    return "damaged, or another format: it starts " + " ".join(f"{b:02x}" for b in head[:8])


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path.name} is not readable JSON ({type(e).__name__})") from None


def is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def state_dict_of(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """`obj` checked to be a state dict of tensors, with compile/DDP prefixes stripped."""
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{source} holds a {type(obj).__name__}, not a state dict of tensors")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"{source}: entry {bad[0]!r} is a {type(obj[bad[0]]).__name__}, not a tensor"
        )
    return strip_prefixes(obj)


def strip_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop torch.compile's `_orig_mod.` (anywhere) and DDP's `module.` (when on every key)."""
    out = {k.replace("_orig_mod.", ""): v for k, v in state_dict.items()}
    if out and all(k.startswith("module.") for k in out):
        out = {k[len("module.") :]: v for k, v in out.items()}
    return out


def plain(value: Any) -> Any:
    """A JSON-friendly copy of a checkpoint value (tensors and numpy scalars to numbers)."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else f"tensor{tuple(value.shape)}"
    if hasattr(value, "item") and callable(value.item) and type(value).__module__ == "numpy":
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def make_config(family: str, values: Mapping[str, Any], source: str) -> ModelConfig:
    """One of our configs from recorded values; any misfit is a CheckpointError."""
    try:
        return config_from_dict(family, dict(values), source)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    except TypeError as e:  # e.g. a value of the wrong type reaching the dataclass
        raise CheckpointError(f"{source}: model config does not fit ({e})") from None
