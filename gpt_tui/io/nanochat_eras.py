"""Which nanochat era a checkpoint comes from, and the config that loads it.

nanochat's gpt.py gained features over time (per-layer residual lambdas, value
embeddings, sliding windows, ...). The era is read off the state-dict keys present.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..models.config import ConfigError, NanoChatConfig, config_from_dict

# Keys every classic-era block has; anything outside these patterns is a newer feature.
_CLASSIC_BLOCK_PARTS = ("attn.c_q", "attn.c_k", "attn.c_v", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def unknown_keys(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """State-dict keys the classic architecture does not have."""
    out = []
    for key in state_dict:
        if key in ("transformer.wte.weight", "lm_head.weight"):
            continue
        parts = key.split(".")
        if (
            len(parts) >= 4
            and parts[:2] == ["transformer", "h"]
            and ".".join(parts[3:-1]) in _CLASSIC_BLOCK_PARTS
        ):
            continue
        out.append(key)
    return out


def nanochat_config_from_checkpoint(
    model_config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor], source: str
) -> NanoChatConfig:
    """The config that loads `state_dict`, from the checkpoint's `model_config`.

    Raises ConfigError naming the keys of an era this version cannot place.
    """
    extra = unknown_keys(state_dict)
    if extra:
        shown = ", ".join(extra[:5]) + (f" (+{len(extra) - 5} more)" if len(extra) > 5 else "")
        raise ConfigError(
            f"{source}: a newer nanochat era with keys this version does not support: {shown}"
        )
    return config_from_dict("nanochat", dict(model_config), source)
