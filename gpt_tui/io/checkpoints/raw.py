"""A checkpoint read for a user's own model file (`--model-file`): its recorded arguments
and weights, not fitted to any of our configs (the user's config class may have others)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..tokenizers import Tokenizer
from .nanochat import (
    latest_model_file,
    nanochat_info,
    nanochat_settings,
    nanochat_vocab_files,
    read_nanochat_meta,
)
from .nanogpt import is_nanogpt_ckpt, nanogpt_info, nanogpt_vocab_files
from .reading import CheckpointError, is_state_dict, state_dict_of, torch_load
from .vocab import choose_tokenizer


@dataclass
class RawCheckpoint:
    path: Path
    model_args: dict[str, Any]  # nanoGPT `model_args`, or nanochat's every setting
    state_dict: dict[str, torch.Tensor]  # `_orig_mod.` prefixes stripped
    tokenizer: Tokenizer
    info: dict[str, Any] = field(default_factory=dict)
    nanochat: bool = False  # model_args may hold settings of ours nanochat's code has no field for


def _weights_file(path: Path) -> Path:
    if path.is_file():
        return path
    if (path / "ckpt.pt").is_file():
        return path / "ckpt.pt"
    latest = latest_model_file(path)
    if latest is not None:
        return latest
    raise CheckpointError(f"{path} holds neither ckpt.pt nor model_<step>.pt")


def read_raw_checkpoint(
    path: str | Path, meta_path: str | Path | None = None, tokenizer: str | Path | None = None
) -> RawCheckpoint:
    """Read a nanoGPT ckpt.pt or nanochat model_<step>.pt safely, for `--model-file`."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    weights = _weights_file(path)
    obj = torch_load(weights)
    if is_nanogpt_ckpt(obj):
        args = obj["model_args"]
        sd = state_dict_of(obj["model"], f"{weights.name} ['model']")
        info = nanogpt_info(obj)
        found = nanogpt_vocab_files(weights, obj)
    elif is_state_dict(obj):
        meta_file, meta = read_nanochat_meta(weights)
        args = nanochat_settings(meta)
        sd = state_dict_of(obj, weights.name)
        info = nanochat_info(meta_file, meta)
        found = nanochat_vocab_files(weights.parent)
    else:
        raise CheckpointError(
            f"{weights.name}: --model-file needs a nanoGPT ckpt.pt (model + model_args) or a "
            "nanochat model_<step>.pt with its meta_<step>.json"
        )
    if not isinstance(args, Mapping):
        raise CheckpointError(f"{weights.name}: the recorded model arguments are not a dict")
    args = dict(args)
    vocab = args.get("vocab_size")
    tok = choose_tokenizer(
        vocab if isinstance(vocab, int) else None, found, tokenizer or meta_path, info
    )
    return RawCheckpoint(weights, args, sd, tok, info, nanochat=not is_nanogpt_ckpt(obj))
