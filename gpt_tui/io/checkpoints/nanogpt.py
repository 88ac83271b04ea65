"""nanoGPT's `ckpt.pt`: a dict with `model` (a state dict, maybe with the `_orig_mod.`
prefix of a compiled model), `model_args`, `config`, `iter_num` and `best_val_loss`.
The char vocabulary is `meta.pkl` beside it or in `data/<dataset>/`; without one,
nanoGPT's sample.py assumes GPT-2's encoding."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .reading import CheckpointError, Parsed, make_config, plain, state_dict_of


def is_nanogpt_ckpt(obj: Any) -> bool:
    return isinstance(obj, Mapping) and "model" in obj and "model_args" in obj


def _safe_dataset_name(name: Any) -> bool:
    return (
        isinstance(name, str) and bool(re.fullmatch(r"[\w.\-]+", name)) and name not in (".", "..")
    )


def find_meta_pkl(
    ckpt_path: str | Path, dataset: str | None = None, search_from: list[Path] | None = None
) -> Path | None:
    """nanoGPT's char vocabulary for a checkpoint: `meta.pkl` beside it, else
    `data/<dataset>/meta.pkl` under the checkpoint's folder, its parents, or the cwd.
    """
    ckpt_path = Path(ckpt_path)
    folder = ckpt_path if ckpt_path.is_dir() else ckpt_path.parent
    if (folder / "meta.pkl").is_file():
        return folder / "meta.pkl"
    if not _safe_dataset_name(dataset):
        return None
    bases = search_from or [folder, *list(folder.resolve().parents)[:4], Path.cwd()]
    for base in bases:
        candidate = base / "data" / str(dataset) / "meta.pkl"
        if candidate.is_file():
            return candidate
    return None


def train_config_of(ckpt: Mapping[str, Any]) -> Mapping[str, Any]:
    config = ckpt.get("config")
    return config if isinstance(config, Mapping) else {}


def nanogpt_info(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """What a ckpt.pt records about its training run, as plain values."""
    train_config = train_config_of(ckpt)
    dataset = train_config.get("dataset")
    return {
        "iter_num": plain(ckpt.get("iter_num")),
        "best_val_loss": plain(ckpt.get("best_val_loss")),
        "dataset": dataset if isinstance(dataset, str) else None,
        "train_config": plain(train_config),
    }


def nanogpt_vocab_files(path: Path, ckpt: Mapping[str, Any]) -> list[Path]:
    found = find_meta_pkl(path, train_config_of(ckpt).get("dataset"))
    return [found] if found is not None else []


def parse_nanogpt(path: Path, ckpt: Mapping[str, Any]) -> Parsed:
    model_args = ckpt.get("model_args")
    if not isinstance(model_args, Mapping):
        raise CheckpointError(f"{path.name}: 'model_args' is not a dict of model settings")
    sd = state_dict_of(ckpt.get("model"), f"{path.name} ['model']")
    config = make_config("nanogpt", model_args, path.name)
    return Parsed(
        "nanogpt-ckpt",
        "nanogpt",
        path,
        config,
        sd,
        nanogpt_info(ckpt),
        nanogpt_vocab_files(path, ckpt),
    )
