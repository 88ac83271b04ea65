"""Tiny models for the engine tests, with weights that carry signal."""

from __future__ import annotations

import torch

from gpt_tui.models import build_model, make_config


def tiny_nanochat() -> torch.nn.Module:
    """GQA nanochat; its init zeroes the head and output projections, so give them signal."""
    model = build_model(make_config("tiny", "nanochat", {"n_head": 4, "n_kv_head": 2}), "cpu")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("lm_head.weight", "c_proj.weight")):
                p.normal_(0.0, 0.3)
    return model
