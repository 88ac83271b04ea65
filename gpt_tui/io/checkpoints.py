"""Checkpoints in the upstream formats: nanoGPT ckpt.pt (+ meta.pkl) and nanochat
model_<step>.pt + meta_<step>.json.

Writing lives here beside reading so the two formats cannot drift apart.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch

from ..models.config import config_to_dict
from .tokenizers import CharTokenizer


def save_nanogpt_checkpoint(
    out_dir: str | Path,
    model: torch.nn.Module,
    *,
    iter_num: int,
    best_val_loss: float,
    train_config: dict[str, Any] | None = None,
    tokenizer: CharTokenizer | None = None,
    compiled_prefix: bool = False,
) -> Path:
    """Write `ckpt.pt` as nanoGPT's train.py does (and `meta.pkl` for a char vocabulary).

    `compiled_prefix` writes keys as a torch.compile'd model would (`_orig_mod.` prefix).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = "_orig_mod." if compiled_prefix else ""
    state = {prefix + k: v.detach().cpu() for k, v in model.state_dict().items()}
    ckpt = {
        "model": state,
        "model_args": config_to_dict(model.config),
        "iter_num": iter_num,
        "best_val_loss": float(best_val_loss),
        "config": dict(train_config or {}),
    }
    path = out / "ckpt.pt"
    torch.save(ckpt, path)
    if tokenizer is not None:
        with open(out / "meta.pkl", "wb") as f:
            pickle.dump(tokenizer.to_meta(), f)
    return path


def save_nanochat_checkpoint(
    out_dir: str | Path,
    model: torch.nn.Module,
    *,
    step: int,
    extra_meta: dict[str, Any] | None = None,
    tokenizer: CharTokenizer | None = None,
) -> Path:
    """Write `model_<step>.pt` and `meta_<step>.json` as nanochat's checkpoint manager does.

    A char vocabulary is stored as `tokenizer.json` (plain JSON, nothing to unpickle).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    path = out / f"model_{step:06d}.pt"
    torch.save(state, path)
    meta = {"step": step, "model_config": config_to_dict(model.config), **(extra_meta or {})}
    (out / f"meta_{step:06d}.json").write_text(json.dumps(meta, indent=2))
    if tokenizer is not None:
        (out / "tokenizer.json").write_text(json.dumps({"type": "char", "chars": tokenizer.chars}))
    return path
