"""Checkpoints in the upstream formats, read safely and checked against the model.

Formats, told apart by content (a path may be a file or a folder):
- `nanogpt-ckpt`: nanoGPT's `ckpt.pt`, a dict with `model` (state dict, maybe with the
  `_orig_mod.` prefix of a compiled model), `model_args`, `config`, `iter_num`,
  `best_val_loss`; the char vocabulary from `meta.pkl` beside it or in `data/<dataset>/`.
- `nanochat`: `model_<step>.pt` (a state dict) + `meta_<step>.json` (`model_config`);
  the tokenizer from `tokenizer.json` (our char form) or nanochat's `tokenizer.pkl`.
- `hf-gpt2`: GPT-2 weights in the Hugging Face layout (`model.safetensors` or
  `pytorch_model.bin` + `config.json`): Conv1D weights, stored (in, out), are transposed into
  nn.Linear's (out, in); keys with or without `transformer.`; the head tied to `wte`.

Safety: tensors come through `torch.load(weights_only=True)` only, with no unsafe fallback;
pickled vocabularies through `safe_pickle`. Every problem is a `CheckpointError` whose
message is one line naming the problem and the fix.

Memory: the model is built on the `meta` device (no storage), then each checkpoint tensor
is moved to the device and dtype and assigned in place (`load_state_dict(assign=True)`),
so there is never a randomly initialised copy beside the loaded one. On CPU in the
checkpoint's own dtype the weights stay memory-mapped from the file (copy-on-write).

Writing lives here beside reading so the two formats cannot drift apart.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from ..errors import GptTuiError
from ..models import build_model
from ..models.config import (
    ConfigError,
    ModelConfig,
    NanoChatConfig,
    NanoGPTConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
)
from . import safe_pickle
from .nanochat_eras import nanochat_config_from_checkpoint
from .tokenizers import (
    CharTokenizer,
    Tokenizer,
    TokenizerError,
    default_tokenizer,
    gpt2_bpe_from_files,
    load_tokenizer_file,
)


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
    format: str  # "nanogpt-ckpt" | "nanochat" | "hf-gpt2"
    path: Path  # the weights file that was read
    info: dict[str, Any] = field(default_factory=dict)


# --- reading files safely ---------------------------------------------------------------

_ZIP_MAGIC = b"PK\x03\x04"


def _sniff(path: Path) -> str:
    """'empty', 'zip' (torch.save), 'safetensors' or 'other' (maybe a legacy torch pickle)."""
    with open(path, "rb") as f:
        head = f.read(9)
    if not head:
        return "empty"
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if len(head) == 9 and head[8:9] == b"{":
        header_len = int.from_bytes(head[:8], "little")
        if 0 < header_len <= path.stat().st_size - 8:
            return "safetensors"
    return "other"


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


def _first_sentence(e: BaseException) -> str:
    """The gist of a library error: its first line, up to the first full stop."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text.split(". ")[0].rstrip(".")[:120]


def _unsafe_message(name: str, global_name: str) -> str:
    return (
        f"{name} cannot be loaded safely: it holds Python objects, not just tensors "
        f"({global_name}); refused — nothing from it was executed (if you trust it, "
        "re-save it with tensors and plain values only)"
    )


def _torch_load(path: Path) -> Any:
    """torch.load with weights_only=True (memory-mapped when possible); errors made readable."""
    kind = _sniff(path)
    if kind == "empty":
        raise CheckpointError(f"{path.name} is empty (0 bytes): the save was interrupted?")
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
            "(damaged, or another format)"
        ) from None
    except EOFError:
        raise CheckpointError(f"{path.name} is cut short (truncated file); save it again") from None
    except (RuntimeError, ValueError, OSError, KeyError, IndexError) as e:
        detail = _first_sentence(e)
        if kind == "zip":
            raise CheckpointError(
                f"{path.name} is a damaged PyTorch file (truncated or corrupt zip: {detail}); "
                "save or copy it again"
            ) from None
        raise CheckpointError(
            f"{path.name} is not a PyTorch checkpoint ({detail}); expected a file from "
            "torch.save, safetensors, or a checkpoint folder"
        ) from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path.name} is not readable JSON ({type(e).__name__})") from None


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
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


_MASK_BUFFER = re.compile(r"\.attn\.(bias|masked_bias)$")  # old causal-mask buffers


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a checkpoint value (tensors and numpy scalars to numbers)."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else f"tensor{tuple(value.shape)}"
    if hasattr(value, "item") and callable(value.item) and type(value).__module__ == "numpy":
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


# --- the pieces of a checkpoint, before a model exists ----------------------------------


@dataclass
class _Parsed:
    format: str
    family: str
    path: Path
    config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    info: dict[str, Any]
    tokenizer: Tokenizer | None


def _config(family: str, values: Mapping[str, Any], source: str) -> ModelConfig:
    try:
        return config_from_dict(family, dict(values), source)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    except TypeError as e:  # e.g. a value of the wrong type reaching the dataclass
        raise CheckpointError(f"{source}: model config does not fit ({e})") from None


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


def _tokenizer_from_file(
    path: Path, config: ModelConfig, info: dict[str, Any], explicit: bool
) -> Tokenizer | None:
    """Load a vocabulary file. Unsafe pickles always raise; other problems raise when the user
    named the file and otherwise become a note in `info` (the caller falls back)."""
    try:
        tok = load_tokenizer_file(path)
    except safe_pickle.UnsafePickleError as e:
        raise UnsafeCheckpointError(str(e)) from None
    except TokenizerError as e:
        if explicit:
            raise CheckpointError(f"{e}") from None
        info["tokenizer_note"] = f"{path.name} not used: {e}"
        return None
    if tok.vocab_size > config.vocab_size:
        msg = (
            f"{path.name} has {tok.vocab_size} tokens but the model only {config.vocab_size}: "
            "not this model's vocabulary"
        )
        if explicit:
            raise CheckpointError(msg + "; pass the right file")
        info["tokenizer_note"] = msg
        return None
    info["tokenizer_source"] = str(path)
    return tok


def _fallback_tokenizer(config: ModelConfig, info: dict[str, Any]) -> Tokenizer:
    tok = default_tokenizer(config)
    reason = getattr(tok, "reason", "")
    if reason:
        info["tokenizer_note"] = "; ".join(filter(None, [info.get("tokenizer_note"), reason]))
    info["tokenizer_source"] = "default"
    return tok


def _finish_tokenizer(tok: Tokenizer | None, info: dict[str, Any]) -> Tokenizer | None:
    if tok is not None:
        info["tokenizer"] = tok.name
        info["tokenizer_vocab_size"] = tok.vocab_size
    return tok


def _parse_nanogpt(path: Path, ckpt: Mapping[str, Any], meta_path: Path | None) -> _Parsed:
    model_args = ckpt.get("model_args")
    if not isinstance(model_args, Mapping):
        raise CheckpointError(f"{path.name}: 'model_args' is not a dict of model settings")
    sd = _state_dict(ckpt.get("model"), f"{path.name} ['model']")
    config = _config("nanogpt", model_args, path.name)
    train_config = ckpt.get("config") if isinstance(ckpt.get("config"), Mapping) else {}
    dataset = train_config.get("dataset")
    info: dict[str, Any] = {
        "iter_num": _plain(ckpt.get("iter_num")),
        "best_val_loss": _plain(ckpt.get("best_val_loss")),
        "dataset": dataset if isinstance(dataset, str) else None,
        "train_config": _plain(train_config),
    }
    tok = None
    if meta_path is not None:
        tok = _tokenizer_from_file(meta_path, config, info, explicit=True)
    else:
        found = find_meta_pkl(path, dataset)
        if found is not None:
            tok = _tokenizer_from_file(found, config, info, explicit=False)
    if tok is None:  # nanoGPT's sample.py: no meta.pkl means GPT-2 encodings
        tok = _fallback_tokenizer(config, info)
    return _Parsed("nanogpt-ckpt", "nanogpt", path, config, sd, info, _finish_tokenizer(tok, info))


_NANOCHAT_MODEL = re.compile(r"model_(\d+)\.pt$")


def _nanochat_meta_file(model_file: Path) -> Path | None:
    m = _NANOCHAT_MODEL.search(model_file.name)
    if m and (model_file.parent / f"meta_{m.group(1)}.json").is_file():
        return model_file.parent / f"meta_{m.group(1)}.json"
    metas = sorted(model_file.parent.glob("meta_*.json"))
    return metas[0] if len(metas) == 1 else None


def _nanochat_tokenizer_files(folder: Path) -> Iterator[Path]:
    yield folder / "tokenizer.json"
    yield folder / "tokenizer.pkl"
    # nanochat keeps base_checkpoints/<tag>/ and tokenizer/ side by side in its base dir
    for parent in list(folder.resolve().parents)[:3]:
        yield parent / "tokenizer" / "tokenizer.pkl"
    if os.environ.get("NANOCHAT_BASE_DIR"):
        yield Path(os.environ["NANOCHAT_BASE_DIR"]) / "tokenizer" / "tokenizer.pkl"


def _parse_nanochat(model_file: Path, state: Any | None, meta_path: Path | None) -> _Parsed:
    meta_file = _nanochat_meta_file(model_file)
    if meta_file is None:
        raise CheckpointError(
            f"{model_file.name}: nanochat weights need their meta_<step>.json (with "
            f"model_config) beside them; none found in {model_file.parent}"
        )
    meta = _read_json(meta_file)
    if not isinstance(meta, Mapping) or not isinstance(meta.get("model_config"), Mapping):
        raise CheckpointError(f"{meta_file.name} has no 'model_config' dict")
    if state is None:
        state = _torch_load(model_file)
    sd = _state_dict(state, model_file.name)
    try:
        config = nanochat_config_from_checkpoint(meta["model_config"], sd, model_file.name)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    except TypeError as e:
        raise CheckpointError(f"{meta_file.name}: model_config does not fit ({e})") from None
    info: dict[str, Any] = {
        k: _plain(v) for k, v in meta.items() if k != "model_config" and not isinstance(v, dict)
    }
    info["meta_file"] = meta_file.name
    tok = None
    if meta_path is not None:
        tok = _tokenizer_from_file(meta_path, config, info, explicit=True)
    else:
        for candidate in _nanochat_tokenizer_files(model_file.parent):
            if candidate.is_file():
                tok = _tokenizer_from_file(candidate, config, info, explicit=False)
                if tok is not None:
                    break
    if tok is None:
        tok = _fallback_tokenizer(config, info)
    return _Parsed(
        "nanochat", "nanochat", model_file, config, sd, info, _finish_tokenizer(tok, info)
    )


# --- GPT-2 in the Hugging Face layout ---------------------------------------------------

_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def hf_gpt2_to_nanogpt(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename HF GPT-2 keys to nanoGPT's and turn Conv1D (in, out) weights into (out, in).

    Consumes `state_dict` entry by entry so only one tensor exists twice at a time.
    """
    c_attn = next((v for k, v in state_dict.items() if k.endswith("h.0.attn.c_attn.weight")), None)
    conv1d = c_attn is not None and c_attn.ndim == 2 and c_attn.shape[1] == 3 * c_attn.shape[0]
    out: dict[str, torch.Tensor] = {}
    for key in list(state_dict):
        t = state_dict.pop(key)
        name = key.removeprefix("transformer.")
        if _MASK_BUFFER.search(name):
            continue
        if name == "lm_head.weight":
            out[name] = t
            continue
        if conv1d and name.endswith(_CONV1D) and t.ndim == 2:
            t = t.t().contiguous()
        out["transformer." + name] = t
    return out


def gpt2_config_from_hf(values: Mapping[str, Any], source: str = "config.json") -> NanoGPTConfig:
    """A nanogpt config (bias=True) from a Hugging Face GPT-2 `config.json`."""
    model_type = values.get("model_type")
    if model_type not in (None, "gpt2"):
        raise CheckpointError(
            f"{source}: model_type {model_type!r} is not GPT-2; gpt-tui reads GPT-2 weights in "
            "the Hugging Face layout, nanoGPT ckpt.pt and nanochat checkpoints"
        )
    block = values.get("n_positions", values.get("n_ctx"))
    wanted = dict(
        n_layer=values.get("n_layer"),
        n_head=values.get("n_head"),
        n_embd=values.get("n_embd"),
        block_size=block,
        vocab_size=values.get("vocab_size"),
    )
    missing = [k for k, v in wanted.items() if v is None]
    if missing:
        raise CheckpointError(f"{source} lacks {', '.join(missing)} (a GPT-2 config.json?)")
    n_inner = values.get("n_inner")
    if n_inner is not None and n_inner != 4 * wanted["n_embd"]:
        raise CheckpointError(
            f"{source}: n_inner={n_inner} but the nanogpt family has a 4x MLP "
            f"({4 * wanted['n_embd']})"
        )
    config = _config("nanogpt", {**wanted, "bias": True, "dropout": 0.0}, source)
    assert isinstance(config, NanoGPTConfig)
    return config


def _gpt2_config_from_weights(sd: Mapping[str, torch.Tensor], source: str) -> NanoGPTConfig:
    wte, wpe = sd.get("transformer.wte.weight"), sd.get("transformer.wpe.weight")
    if wte is None or wpe is None:
        raise CheckpointError(f"{source}: no wte/wpe weights, and no config.json beside it")
    layers = {int(m.group(1)) for k in sd if (m := re.match(r"transformer\.h\.(\d+)\.", k))}
    n_embd = int(wte.shape[1])
    if n_embd % 64:
        raise CheckpointError(
            f"{source}: cannot tell n_head from the weights (n_embd={n_embd}); "
            "put the model's config.json beside it"
        )
    values = dict(
        n_layer=len(layers),
        n_head=n_embd // 64,  # every GPT-2 size uses 64-wide heads
        n_embd=n_embd,
        block_size=int(wpe.shape[0]),
        vocab_size=int(wte.shape[0]),
        bias=True,
    )
    config = _config("nanogpt", values, source)
    assert isinstance(config, NanoGPTConfig)
    return config


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors import safe_open
    except ImportError:
        raise CheckpointError(
            f"{path.name} is a safetensors file; pip install 'gpt-tui[safetensors]' to read it"
        ) from None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(
            f"{path.name} is a damaged safetensors file ({_first_sentence(e)})"
        ) from None


def _parse_hf(weights: Path, state: Any | None, meta_path: Path | None) -> _Parsed:
    raw = _read_safetensors(weights) if state is None else _state_dict(state, weights.name)
    sd = hf_gpt2_to_nanogpt(dict(raw))
    del raw
    info: dict[str, Any] = {}
    config_json = weights.parent / "config.json"
    if config_json.is_file():
        hf = _read_json(config_json)
        if not isinstance(hf, Mapping):
            raise CheckpointError(f"{config_json.name} is not a JSON object")
        config = gpt2_config_from_hf(hf, config_json.name)
        info["hf_config"] = config_json.name
        act = hf.get("activation_function", "gelu_new")
        if act != "gelu":
            info["note"] = (
                f"GPT-2 uses {act} (tanh-approximated GELU); this model uses exact GELU as "
                "nanoGPT does, so logits differ slightly from Hugging Face's"
            )
    else:
        config = _gpt2_config_from_weights(sd, weights.name)
        info["note"] = "no config.json: shapes read off the weights, n_head assumes 64-wide heads"
    tok = None
    if meta_path is not None:
        tok = _tokenizer_from_file(meta_path, config, info, explicit=True)
    else:
        vocab_json, merges = weights.parent / "vocab.json", weights.parent / "merges.txt"
        if vocab_json.is_file() and merges.is_file():
            try:
                tok = gpt2_bpe_from_files(merges, vocab_json)
                info["tokenizer_source"] = str(vocab_json.parent)
            except TokenizerError as e:
                info["tokenizer_note"] = str(e)
    if tok is None:
        tok = _fallback_tokenizer(config, info)
    return _Parsed("hf-gpt2", "nanogpt", weights, config, sd, info, _finish_tokenizer(tok, info))


# --- telling formats apart --------------------------------------------------------------


def _parse_file(path: Path, meta_path: Path | None) -> _Parsed:
    kind = _sniff(path)
    if kind == "safetensors":
        return _parse_hf(path, None, meta_path)
    obj = _torch_load(path)
    if isinstance(obj, Mapping) and "model" in obj and "model_args" in obj:
        return _parse_nanogpt(path, obj, meta_path)
    if _is_state_dict(obj):
        keys = list(strip_prefixes(obj))
        if any(".attn.c_q." in k for k in keys):
            return _parse_nanochat(path, obj, meta_path)
        if any(k.endswith("attn.c_attn.weight") for k in keys):
            head = next(v for k, v in obj.items() if k.endswith("attn.c_attn.weight"))
            if head.ndim == 2 and head.shape[1] == 3 * head.shape[0]:  # Conv1D: (C, 3C)
                return _parse_hf(path, obj, meta_path)
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


_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def _parse_folder(folder: Path, meta_path: Path | None) -> _Parsed:
    steps = {}
    for f in folder.glob("model_*.pt"):
        m = _NANOCHAT_MODEL.fullmatch(f.name)
        if m:
            steps[int(m.group(1))] = f
    if steps:
        return _parse_nanochat(steps[max(steps)], None, meta_path)
    if (folder / "config.json").is_file():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (folder / name).is_file():
                return _parse_file(folder / name, meta_path)
        if (folder / "model.safetensors.index.json").is_file():
            raise CheckpointError(
                f"{folder}: sharded safetensors are not supported; GPT-2 sizes fit one file"
            )
    if (folder / "ckpt.pt").is_file():
        return _parse_file(folder / "ckpt.pt", meta_path)
    weights = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix in _WEIGHT_SUFFIXES)
    if len(weights) == 1:
        return _parse_file(weights[0], meta_path)
    found = f" (found {', '.join(f.name for f in weights[:5])}: which one?)" if weights else ""
    raise CheckpointError(
        f"{folder} holds no checkpoint gpt-tui recognises{found}: looked for ckpt.pt, "
        "model_<step>.pt + meta_<step>.json, config.json + model.safetensors/pytorch_model.bin"
    )


def _parse(path: str | Path, meta_path: str | Path | None) -> _Parsed:
    path = Path(path).expanduser()
    meta = Path(meta_path).expanduser() if meta_path is not None else None
    if meta is not None and not meta.is_file():
        raise CheckpointError(f"--meta {meta}: no such file")
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    try:
        if path.is_dir():
            return _parse_folder(path, meta)
        return _parse_file(path, meta)
    except PermissionError as e:
        raise CheckpointError(f"cannot read {e.filename or path}: permission denied") from None
    except IsADirectoryError as e:
        raise CheckpointError(f"{e.filename or path} is a folder, expected a file") from None


# --- building the model -----------------------------------------------------------------


def _shape(t: Any) -> str:
    return "(" + ", ".join(str(int(s)) for s in t) + ")"


def _describe_config(config: ModelConfig) -> str:
    keys = ["n_layer", "n_head", "n_embd", "vocab_size"]
    keys += ["block_size"] if isinstance(config, NanoGPTConfig) else ["n_kv_head", "sequence_len"]
    return ", ".join(f"{k}={getattr(config, k)}" for k in keys)


def check_fit(
    state_dict: Mapping[str, torch.Tensor],
    expected: Mapping[str, tuple[int, ...]],
    source: str,
    config: ModelConfig,
) -> None:
    """Raise CheckpointError naming missing / unexpected / mis-shaped keys (first few, counts)."""
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [
        f"{k}: checkpoint {_shape(state_dict[k].shape)} vs model {_shape(expected[k])}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k])
    ]
    if not (missing or unexpected or misshaped):
        return

    def part(items: list[str], label: str) -> str:
        if not items:
            return f"0 {label}"
        shown = ", ".join(items[:3]) + (", ..." if len(items) > 3 else "")
        return f"{len(items)} {label} ({shown})"

    raise CheckpointError(
        f"{source} does not fit a {config.family} model with {_describe_config(config)}: "
        f"{part(missing, 'missing')}, {part(unexpected, 'unexpected')}, "
        f"{part(misshaped, 'mis-shaped')}"
    )


def _fill_meta_buffers(model: torch.nn.Module, config: ModelConfig, device: torch.device) -> None:
    """Non-persistent buffers are not in checkpoints; recompute the ones left on `meta`."""
    if device.type == "meta":
        return
    left = [name for name, b in model.named_buffers() if b.device.type == "meta"]
    if not left:
        return
    if isinstance(config, NanoChatConfig) and set(left) <= {"cos", "sin"}:
        from ..models.nanochat import rotary_tables

        tables = rotary_tables(config.sequence_len, config.head_dim, config.rope_base, device)
        for name, table in zip(("cos", "sin"), tables, strict=True):
            model.register_buffer(name, table.to(model.get_buffer(name).dtype), persistent=False)
        return
    # Buffers of a kind we cannot recompute here: take them from a model built for real.
    dtype = next(model.parameters()).dtype
    donor = build_model(config, device, dtype)
    donor_buffers = dict(donor.named_buffers())
    for name in left:
        owner, _, leaf = name.rpartition(".")
        module = model.get_submodule(owner) if owner else model
        module.register_buffer(leaf, donor_buffers[name], persistent=False)
    del donor


def _build_and_load(p: _Parsed, device: torch.device | str, dtype: torch.dtype) -> torch.nn.Module:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise CheckpointError(
            f"unknown device {device!r}: use cpu, cuda, cuda:N, mps or meta"
        ) from None
    model = build_model(p.config, "meta", dtype)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    sd = p.state_dict
    if p.family == "nanogpt":
        for k in [k for k in sd if _MASK_BUFFER.search(k) and k not in expected]:
            del sd[k]
        # lm_head is tied to wte: load wte once, then tie (one copy on the device).
        expected.pop("lm_head.weight", None)
        head, wte = sd.pop("lm_head.weight", None), sd.get("transformer.wte.weight")
        if (
            head is not None
            and wte is not None
            and head.shape == wte.shape
            and head.data_ptr() != wte.data_ptr()
            and not torch.equal(head, wte)
        ):
            raise CheckpointError(
                f"{p.path.name}: lm_head.weight differs from transformer.wte.weight, but the "
                "nanogpt family ties them; an untied head is not supported"
            )
    check_fit(sd, expected, p.path.name, p.config)
    loaded: dict[str, torch.Tensor] = {}
    try:
        for key in list(sd):
            t = sd.pop(key)
            loaded[key] = t.to(device=dev, dtype=dtype if t.is_floating_point() else None)
        model.load_state_dict(loaded, strict=p.family != "nanogpt", assign=True)
    except (torch.OutOfMemoryError, MemoryError):
        raise CheckpointError(
            f"out of memory loading {p.path.name} on {dev}: try --dtype bfloat16 or --device cpu"
        ) from None
    except (RuntimeError, AssertionError) as e:  # e.g. a device this torch build lacks
        raise CheckpointError(f"cannot put {p.path.name} on {dev}: {_first_sentence(e)}") from None
    del loaded
    if p.family == "nanogpt":
        model.lm_head.weight = model.transformer.wte.weight
    _fill_meta_buffers(model, p.config, dev)
    model.eval()
    return model


def load_checkpoint(
    path: str | Path,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    meta_path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> LoadedCheckpoint:
    """Load a nanoGPT, nanochat or Hugging Face GPT-2 checkpoint (file or folder) safely.

    `meta_path` names the vocabulary file (meta.pkl, tokenizer.pkl or tokenizer.json)
    when it is not found beside the checkpoint. `overrides` change config fields the
    checkpoint does not record right (`--set softcap=20`). Raises CheckpointError (one line).
    """
    parsed = _parse(path, meta_path)
    if overrides:
        try:
            parsed.config = apply_overrides(parsed.config, overrides, parsed.path.name)
        except ConfigError as e:
            raise CheckpointError(str(e)) from None
        parsed.info["overrides"] = dict(overrides)
    model = _build_and_load(parsed, device, dtype)
    return LoadedCheckpoint(
        model=model,
        config=parsed.config,
        family=parsed.family,
        tokenizer=parsed.tokenizer,
        format=parsed.format,
        path=parsed.path,
        info=parsed.info,
    )


@dataclass
class RawCheckpoint:
    """A checkpoint read for a user's own model file: its recorded arguments and weights,
    not yet fitted to any of our configs (the user's config class may have other fields)."""

    path: Path
    model_args: dict[str, Any]  # nanoGPT `model_args`, or nanochat `model_config`
    state_dict: dict[str, torch.Tensor]  # `_orig_mod.` prefixes stripped
    tokenizer: Tokenizer | None
    info: dict[str, Any] = field(default_factory=dict)


def _weights_file(path: Path) -> Path:
    if path.is_file():
        return path
    if (path / "ckpt.pt").is_file():
        return path / "ckpt.pt"
    steps = sorted(path.glob("model_*.pt"), key=lambda f: f.name)
    if steps:
        return steps[-1]
    raise CheckpointError(f"{path} holds neither ckpt.pt nor model_<step>.pt")


def read_raw_checkpoint(path: str | Path, meta_path: str | Path | None = None) -> RawCheckpoint:
    """Read a nanoGPT ckpt.pt or nanochat model_<step>.pt safely, for `--model-file`."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    meta = Path(meta_path).expanduser() if meta_path is not None else None
    weights = _weights_file(path)
    obj = _torch_load(weights)
    info: dict[str, Any] = {}
    if isinstance(obj, Mapping) and "model" in obj and "model_args" in obj:
        args = obj["model_args"]
        sd = _state_dict(obj["model"], f"{weights.name} ['model']")
        train_config = obj.get("config") if isinstance(obj.get("config"), Mapping) else {}
        info.update(
            iter_num=_plain(obj.get("iter_num")), best_val_loss=_plain(obj.get("best_val_loss"))
        )
        vocab = meta or find_meta_pkl(weights, train_config.get("dataset"))
    elif _is_state_dict(obj):
        meta_file = _nanochat_meta_file(weights)
        if meta_file is None:
            raise CheckpointError(
                f"{weights.name}: a bare state dict needs its meta_<step>.json "
                "(with model_config) beside it"
            )
        meta_json = _read_json(meta_file)
        args = meta_json.get("model_config") if isinstance(meta_json, Mapping) else None
        sd = _state_dict(obj, weights.name)
        vocab = meta or next(
            (f for f in _nanochat_tokenizer_files(weights.parent) if f.is_file()), None
        )
    else:
        raise CheckpointError(
            f"{weights.name}: --model-file needs a nanoGPT ckpt.pt (model + model_args) or a "
            "nanochat model_<step>.pt with its meta_<step>.json"
        )
    if not isinstance(args, Mapping):
        raise CheckpointError(f"{weights.name}: the recorded model arguments are not a dict")
    args = dict(args)
    tok = None
    if vocab is not None:
        limit = SimpleNamespace(vocab_size=int(args.get("vocab_size", 1 << 30)))
        tok = _tokenizer_from_file(vocab, limit, info, explicit=meta is not None)
    return RawCheckpoint(weights, args, strip_prefixes(sd), _finish_tokenizer(tok, info), info)


def describe_checkpoint(path: str | Path, meta_path: str | Path | None = None) -> dict[str, Any]:
    """What a checkpoint holds (format, config, info, tensor count and size), without a model.

    Tensors are memory-mapped where possible, so this is cheap even for large files.
    """
    p = _parse(path, meta_path)
    seen: set[int] = set()
    n_params = n_bytes = 0
    dtypes: set[str] = set()
    for t in p.state_dict.values():
        dtypes.add(str(t.dtype).removeprefix("torch."))
        if t.data_ptr() in seen and t.data_ptr() != 0:
            continue
        seen.add(t.data_ptr())
        n_params += t.numel()
        n_bytes += t.numel() * t.element_size()
    return {
        "format": p.format,
        "family": p.family,
        "path": str(p.path),
        "config": config_to_dict(p.config),
        "tensors": len(p.state_dict),
        "params": n_params,
        "bytes": n_bytes,
        "dtypes": sorted(dtypes),
        "tokenizer": p.tokenizer.name if p.tokenizer is not None else None,
        "info": p.info,
    }


# --- writing ------------------------------------------------------------------------------


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
