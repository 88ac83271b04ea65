"""Telling checkpoint formats apart by content; a path may be a file or a folder.

- `nanogpt-ckpt`: a torch.save'd dict with `model` and `model_args` (see nanogpt.py);
- `nanochat`: a bare state dict with `attn.c_q` keys and its meta_<step>.json (nanochat.py);
- `hf-gpt2`: safetensors, or a bare state dict whose c_attn is Conv1D-shaped (hf_gpt2.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .hf_gpt2 import parse_hf_gpt2
from .nanochat import latest_model_file, parse_nanochat
from .nanogpt import is_nanogpt_ckpt, parse_nanogpt
from .reading import CheckpointError, Parsed, is_state_dict, sniff, strip_prefixes, torch_load

_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def parse_file(path: Path) -> Parsed:
    if sniff(path) == "safetensors":
        return parse_hf_gpt2(path, None)
    obj = torch_load(path)
    if is_nanogpt_ckpt(obj):
        return parse_nanogpt(path, obj)
    if is_state_dict(obj):
        keys = list(strip_prefixes(obj))
        if any(".attn.c_q." in k for k in keys):
            return parse_nanochat(path, obj)
        if any(k.endswith("attn.c_attn.weight") for k in keys):
            c_attn = next(v for k, v in obj.items() if k.endswith("attn.c_attn.weight"))
            if c_attn.ndim == 2 and c_attn.shape[1] == 3 * c_attn.shape[0]:  # Conv1D: (C, 3C)
                return parse_hf_gpt2(path, obj)
            raise CheckpointError(
                f"{path.name} is a bare nanoGPT state dict without model_args; save it as "
                "nanoGPT does: torch.save({'model': sd, 'model_args': {...}}, 'ckpt.pt')"
            )
        raise CheckpointError(
            f"{path.name} is a state dict of an unknown model (keys like {keys[0]!r}); "
            "gpt-tui reads nanoGPT, nanochat and GPT-2 weights"
        )
    if isinstance(obj, Mapping):
        shown = ", ".join(map(str, list(obj)[:6]))
        raise CheckpointError(
            f"{path.name} holds a dict with keys {shown or '(none)'}: not a nanoGPT ckpt.pt "
            "(model, model_args), nanochat or GPT-2 checkpoint"
        )
    raise CheckpointError(f"{path.name} holds a {type(obj).__name__}, not a checkpoint dict")


def parse_folder(folder: Path) -> Parsed:
    latest = latest_model_file(folder)
    if latest is not None:
        return parse_nanochat(latest, None)
    if (folder / "config.json").is_file():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (folder / name).is_file():
                return parse_file(folder / name)
        if (folder / "model.safetensors.index.json").is_file():
            raise CheckpointError(
                f"{folder}: sharded safetensors are not supported; GPT-2 sizes fit one file"
            )
    if (folder / "ckpt.pt").is_file():
        return parse_file(folder / "ckpt.pt")
    weights = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix in _WEIGHT_SUFFIXES)
    if len(weights) == 1:  # a guess: the folder's one weights file, named if it fails
        try:
            return parse_file(weights[0])
        except CheckpointError as err:
            raise type(err)(
                f"{folder} holds no ckpt.pt, so its one {weights[0].suffix} file was read: {err}"
            ) from None
    found = f" (found {', '.join(f.name for f in weights[:5])}: which one?)" if weights else ""
    raise CheckpointError(
        f"{folder} holds no checkpoint gpt-tui recognises{found}: looked for ckpt.pt, "
        "model_<step>.pt + meta_<step>.json, config.json + model.safetensors/pytorch_model.bin"
    )


def parse(path: Path) -> Parsed:
    """Read and understand the checkpoint at `path` (file or folder); no model built yet."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    try:
        if path.is_dir():
            return parse_folder(path)
        return parse_file(path)
    except PermissionError as e:
        raise CheckpointError(f"cannot read {e.filename or path}: permission denied") from None
    except IsADirectoryError as e:
        raise CheckpointError(f"{e.filename or path} is a folder, expected a file") from None
