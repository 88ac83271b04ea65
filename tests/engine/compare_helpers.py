"""Models for the compare, patching and attribution tests: our families, and the user model
files of tests/fixtures/user_models loaded with the very same weights."""

from __future__ import annotations

from pathlib import Path

import torch

from gpt_tui.io.model_file import load_model_file
from gpt_tui.models import build_model, make_config

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "user_models"

# The fields each family's fixture file knows (ours add some the files do not have).
FILE_ARGS = {
    "nanogpt": dict(
        block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=True
    ),
    "nanochat": dict(sequence_len=16, vocab_size=65, n_layer=2, n_head=4, n_kv_head=2, n_embd=32),
}


def ours(family: str, seed: int = 0, **overrides: object) -> torch.nn.Module:
    """One of our tiny models, every weight random (nanochat's init zeroes some)."""
    args = {k: v for k, v in FILE_ARGS[family].items() if k not in ("dropout",)}
    model = build_model(make_config("tiny", family, {**args, **overrides}), "cpu")
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.dim() == 2:
                p.normal_(0.0, 0.3)
    return model


def user_copy(model: torch.nn.Module, file: str) -> torch.nn.Module:
    """The model of fixture `file`, built from the family's arguments, with `model`'s weights."""
    family = model.config.family
    found = load_model_file(FIXTURES / file, model_args=FILE_ARGS[family])
    user = found.model_class(found.config_class(**FILE_ARGS[family])).eval()
    user.load_state_dict(model.state_dict())
    return user
