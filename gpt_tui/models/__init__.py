"""The two GPT families and how to build one on a device."""

from __future__ import annotations

import torch

from . import nanochat, nanogpt
from .config import PRESETS, ConfigError, ModelConfig, make_config
from .nanochat import NanoChatConfig
from .nanogpt import NanoGPTConfig

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def model_class(config: ModelConfig) -> type[torch.nn.Module]:
    return nanogpt.GPT if isinstance(config, NanoGPTConfig) else nanochat.GPT


def build_model(
    config: ModelConfig,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int | None = 0,
) -> torch.nn.Module:
    """Build a model directly on `device` (no CPU copy first; `meta` allocates nothing)."""
    if seed is not None:
        torch.manual_seed(seed)
    with torch.device(device):
        model = model_class(config)(config)
    model.to(dtype=dtype)
    model.eval()
    return model


__all__ = [
    "DTYPES",
    "PRESETS",
    "ConfigError",
    "ModelConfig",
    "NanoChatConfig",
    "NanoGPTConfig",
    "build_model",
    "make_config",
    "model_class",
]
