"""GPT-2 weights in the Hugging Face layout: `model.safetensors` or `pytorch_model.bin`
beside `config.json`. HF keeps Conv1D weights as (in, out); they are transposed into
nn.Linear's (out, in). Keys come with or without `transformer.`; the head is tied to `wte`.
The activation follows `config.json`'s `activation_function` (GPT-2's `gelu_new` is the
tanh approximation), so logits match Hugging Face's own."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ...models.config import NanoGPTConfig
from .reading import (
    MASK_BUFFER,
    CheckpointError,
    Parsed,
    check_safetensors,
    first_sentence,
    make_config,
    read_json,
    state_dict_of,
)

_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")

# Hugging Face's activation names -> torch's GELU `approximate`.
GELU_APPROXIMATE = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}


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
        if MASK_BUFFER.search(name):
            continue
        if name == "lm_head.weight":
            out[name] = t
            continue
        if conv1d and name.endswith(_CONV1D) and t.ndim == 2:
            t = t.t().contiguous()
        out["transformer." + name] = t
    return out


def has_gelu_field() -> bool:
    """Whether our nanoGPT config can select the tanh GELU (`gelu_approximate`)."""
    return "gelu_approximate" in {f.name for f in dataclasses.fields(NanoGPTConfig)}


def _activation(values: Mapping[str, Any], source: str) -> str:
    act = values.get("activation_function", "gelu_new")
    if act not in GELU_APPROXIMATE:
        raise CheckpointError(
            f"{source}: activation_function {act!r} is not one GPT-2 uses; gpt-tui reads "
            f"{', '.join(GELU_APPROXIMATE)}"
        )
    return GELU_APPROXIMATE[act]


def gpt2_config_from_hf(values: Mapping[str, Any], source: str = "config.json") -> NanoGPTConfig:
    """A nanogpt config (bias=True, the checkpoint's GELU) from a Hugging Face `config.json`."""
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
    approximate = _activation(values, source)
    extra = {"gelu_approximate": approximate} if has_gelu_field() else {}
    config = make_config("nanogpt", {**wanted, "bias": True, "dropout": 0.0, **extra}, source)
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
    if has_gelu_field():
        values["gelu_approximate"] = "tanh"  # what every released GPT-2 uses
    config = make_config("nanogpt", values, source)
    assert isinstance(config, NanoGPTConfig)
    return config


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors import safe_open
    except ImportError:
        raise CheckpointError(
            f"{path.name} is a safetensors file; pip install 'gpt-tui[safetensors]' to read it"
        ) from None
    check_safetensors(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(
            f"{path.name} is a damaged safetensors file ({first_sentence(e)})"
        ) from None


def parse_hf_gpt2(weights: Path, state: Any | None) -> Parsed:
    raw = _read_safetensors(weights) if state is None else state_dict_of(state, weights.name)
    sd = hf_gpt2_to_nanogpt(dict(raw))
    del raw
    info: dict[str, Any] = {}
    config_json = weights.parent / "config.json"
    if config_json.is_file():
        hf = read_json(config_json)
        if not isinstance(hf, Mapping):
            raise CheckpointError(f"{config_json.name} is not a JSON object")
        config = gpt2_config_from_hf(hf, config_json.name)
        info["hf_config"] = config_json.name
        act = hf.get("activation_function", "gelu_new")
        if GELU_APPROXIMATE[act] == "tanh" and not has_gelu_field():
            info["note"] = (
                f"GPT-2 uses {act} (tanh-approximated GELU); this version computes exact GELU, "
                "so logits differ slightly from Hugging Face's"
            )
    else:
        config = _gpt2_config_from_weights(sd, weights.name)
        info["note"] = (
            "no config.json: shapes read off the weights, n_head assumes 64-wide heads"
            + (", GELU is GPT-2's tanh approximation" if has_gelu_field() else "")
        )
    folder = weights.parent
    pairs = [("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")]
    vocab = [folder for a, b in pairs if (folder / a).is_file() and (folder / b).is_file()][:1]
    if (folder / "tokenizer.json").is_file():
        vocab.append(folder / "tokenizer.json")
    return Parsed("hf-gpt2", "nanogpt", weights, config, sd, info, vocab)
