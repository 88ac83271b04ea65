"""nanochat's checkpoints: `model_<step>.pt` (a bare state dict) + `meta_<step>.json`
(`model_config`, and the step, losses and settings of the run). The tokenizer is our
`tokenizer.json` (char form) beside it, or nanochat's `tokenizer.pkl` in its base dir.
Which era of nanochat's gpt.py the weights belong to is read in `nanochat_eras`."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ...models.config import ConfigError
from ..nanochat_eras import EXTRAS_KEY, nanochat_config_from_checkpoint, softcap_note
from .reading import CheckpointError, Parsed, plain, read_json, state_dict_of, torch_load

NANOCHAT_MODEL = re.compile(r"model_(\d+)\.pt$")


def nanochat_meta_file(model_file: Path) -> Path | None:
    m = NANOCHAT_MODEL.search(model_file.name)
    if m and (model_file.parent / f"meta_{m.group(1)}.json").is_file():
        return model_file.parent / f"meta_{m.group(1)}.json"
    metas = sorted(model_file.parent.glob("meta_*.json"))
    return metas[0] if len(metas) == 1 else None


def latest_model_file(folder: Path) -> Path | None:
    """The `model_<step>.pt` with the highest step in `folder`, if any."""
    steps = {}
    for f in folder.glob("model_*.pt"):
        m = NANOCHAT_MODEL.fullmatch(f.name)
        if m:
            steps[int(m.group(1))] = f
    return steps[max(steps)] if steps else None


def _tokenizer_places(folder: Path) -> Iterator[Path]:
    yield folder / "tokenizer.json"
    yield folder / "tokenizer.pkl"
    # nanochat keeps base_checkpoints/<tag>/ and tokenizer/ side by side in its base dir
    for parent in list(folder.resolve().parents)[:3]:
        yield parent / "tokenizer" / "tokenizer.pkl"
    if os.environ.get("NANOCHAT_BASE_DIR"):
        yield Path(os.environ["NANOCHAT_BASE_DIR"]) / "tokenizer" / "tokenizer.pkl"


def nanochat_vocab_files(folder: Path) -> list[Path]:
    return [f for f in _tokenizer_places(folder) if f.is_file()]


def read_nanochat_meta(model_file: Path) -> tuple[Path, Mapping[str, Any]]:
    """The meta_<step>.json beside `model_file` and its contents (with a model_config dict)."""
    meta_file = nanochat_meta_file(model_file)
    if meta_file is None:
        raise CheckpointError(
            f"{model_file.name}: nanochat weights need their meta_<step>.json (with "
            f"model_config) beside them; none found in {model_file.parent}"
        )
    meta = read_json(meta_file)
    if not isinstance(meta, Mapping) or not isinstance(meta.get("model_config"), Mapping):
        raise CheckpointError(f"{meta_file.name} has no 'model_config' dict")
    if not isinstance(meta.get(EXTRAS_KEY, {}), Mapping):
        raise CheckpointError(f"{meta_file.name}: '{EXTRAS_KEY}' is not a dict")
    return meta_file, meta


def nanochat_settings(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Every setting the meta records: nanochat's model_config and, in ours, the rest."""
    return {**meta["model_config"], **meta.get(EXTRAS_KEY, {})}


def nanochat_info(meta_file: Path, meta: Mapping[str, Any]) -> dict[str, Any]:
    info: dict[str, Any] = {
        k: plain(v) for k, v in meta.items() if k != "model_config" and not isinstance(v, dict)
    }
    info["meta_file"] = meta_file.name
    return info


def parse_nanochat(model_file: Path, state: Any | None) -> Parsed:
    meta_file, meta = read_nanochat_meta(model_file)
    if state is None:
        state = torch_load(model_file)
    sd = state_dict_of(state, model_file.name)
    settings = nanochat_settings(meta)
    try:
        config = nanochat_config_from_checkpoint(settings, sd, model_file.name)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    except TypeError as e:
        raise CheckpointError(f"{meta_file.name}: model_config does not fit ({e})") from None
    info = nanochat_info(meta_file, meta)
    info["softcap_note"] = softcap_note(config, settings, model_file.name)
    return Parsed(
        "nanochat",
        "nanochat",
        model_file,
        config,
        sd,
        info,
        nanochat_vocab_files(model_file.parent),
    )
