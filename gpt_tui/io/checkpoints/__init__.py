"""Checkpoints in the upstream formats, read safely and checked against the model.

Formats, told apart by content (`detect`): nanoGPT's `ckpt.pt` (`nanogpt`), nanochat's
`model_<step>.pt` + `meta_<step>.json` (`nanochat`), GPT-2 in the Hugging Face layout
(`hf_gpt2`). Reading happens in three steps, each in one place: parse the format
(config, state dict, vocabularies found beside it), choose the tokenizer (`vocab`), build
the model and load the weights (`build`). Writing (`save`) is atomic.

Safety: tensors come through `torch.load(weights_only=True)` only, with no unsafe fallback;
pickled vocabularies through `safe_pickle`. Every problem is a `CheckpointError` whose
message is one line naming the problem and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ...models.config import ConfigError, apply_overrides
from ...models.progress import ProgressFn, report
from .build import build_and_load
from .detect import parse
from .hf_gpt2 import gpt2_config_from_hf
from .nanogpt import find_meta_pkl
from .raw import read_raw_checkpoint
from .reading import CheckpointError, LoadedCheckpoint, UnsafeCheckpointError
from .save import atomic_write, save_nanochat_checkpoint, save_nanogpt_checkpoint
from .vocab import choose_tokenizer

__all__ = [
    "CheckpointError",
    "LoadedCheckpoint",
    "UnsafeCheckpointError",
    "atomic_write",
    "find_meta_pkl",
    "gpt2_config_from_hf",
    "load_checkpoint",
    "read_raw_checkpoint",
    "save_nanochat_checkpoint",
    "save_nanogpt_checkpoint",
]


def load_checkpoint(
    path: str | Path,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    meta_path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    tokenizer: str | Path | None = None,
    progress: ProgressFn | None = None,
) -> LoadedCheckpoint:
    """Load a nanoGPT, nanochat or Hugging Face GPT-2 checkpoint (file or folder) safely.

    `meta_path` names the vocabulary file (meta.pkl, tokenizer.pkl or tokenizer.json)
    when it is not found beside the checkpoint; `tokenizer` names any tokenizer
    `load_tokenizer_path` reads (a .tiktoken file, GPT-2's encoder.json + vocab.bpe, a
    tokenizer.json). `overrides` change config fields the checkpoint does not record right
    (`--set softcap=20`). `progress` hears reading, building and moving to device.
    Raises CheckpointError (one line).
    """
    path = Path(path).expanduser()
    if meta_path is not None and tokenizer is not None:
        raise CheckpointError("--meta and --tokenizer both name a vocabulary; give only one")
    named = meta_path if meta_path is not None else tokenizer
    if named is not None and not Path(named).expanduser().exists():
        flag = "--meta" if meta_path is not None else "--tokenizer"
        raise CheckpointError(f"{flag} {named}: no such file or folder")
    size = _size(path)
    report(progress, "reading", 0, size, "bytes")
    parsed = parse(path)  # memory-mapped where the format allows: pages load on first use
    report(progress, "reading", size, size, "bytes")
    if overrides:
        try:
            parsed.config = apply_overrides(parsed.config, overrides, parsed.path.name)
        except ConfigError as e:
            raise CheckpointError(str(e)) from None
        parsed.info["overrides"] = dict(overrides)
    softcap = parsed.info.pop("softcap_note", None)
    if softcap and "softcap" not in (overrides or {}):
        parsed.info.setdefault("notes", []).append(softcap)
    tok = choose_tokenizer(parsed.config.vocab_size, parsed.vocab_files, named, parsed.info)
    model = build_and_load(parsed, device, dtype, progress)
    return LoadedCheckpoint(
        model=model,
        config=parsed.config,
        family=parsed.family,
        tokenizer=tok,
        format=parsed.format,
        path=parsed.path,
        info=parsed.info,
    )


def _size(path: Path) -> int:
    """Bytes of a checkpoint file, or of the files in a checkpoint folder."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return path.stat().st_size if path.exists() else 0
