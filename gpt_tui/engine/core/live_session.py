"""A `Session` on a model that is already live in the user's process (`gpt_tui.inspect`).

Nothing is copied or moved: the model keeps its device and dtype. The family is read from
its weights' names, as for a `--model-file` (nanochat's blocks carry c_q/c_k/v), and a
tokenizer that was not given is chosen from the vocabulary size.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ...errors import GptTuiError
from ..generation.sampling import decode_ids
from .model_access import find_block_list, model_device, unwrap_model
from .session import Session


class LiveModelError(GptTuiError, ValueError):
    """The live model or batch handed to `inspect` cannot be opened; the message says why."""


def _vocab_size(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    size = getattr(config, "vocab_size", None)
    if isinstance(size, int):
        return size
    embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    if not embeddings:
        raise LiveModelError(
            f"{type(model).__name__} has no config.vocab_size and no nn.Embedding: "
            "pass tokenizer= so gpt-tui knows its vocabulary"
        )
    return embeddings[0].num_embeddings


def live_session(
    model: nn.Module, idx: torch.Tensor | None = None, *, tokenizer: Any = None
) -> tuple[Session, str | None]:
    """The session, and the prompt: the first row of `idx` decoded (None without idx)."""
    from ...io.tokenizers import default_tokenizer

    model = unwrap_model(model)
    if not isinstance(model, nn.Module) or find_block_list(model) is None:
        raise LiveModelError(
            f"{type(model).__name__} has no list of repeated blocks (an nn.ModuleList of "
            "transformer blocks): gpt-tui finds a GPT's parts by that structure"
        )
    notes = []
    if tokenizer is None:
        tokenizer = default_tokenizer(_vocab_size(model))
        if getattr(tokenizer, "reason", ""):  # a guess, or raw bytes: say so and the way out
            notes.append(f"{tokenizer.reason}; pass tokenizer='data/<dataset>/meta.pkl'")
    prompt = None
    if idx is not None:
        if not isinstance(idx, torch.Tensor) or idx.dtype != torch.long or idx.dim() not in (1, 2):
            raise LiveModelError("idx must be token ids: a long tensor of shape (B, T) or (T,)")
        row = idx if idx.dim() == 1 else idx[0]
        prompt = decode_ids(tokenizer, row.tolist())
    names = [name for name, _ in model.named_parameters()]
    family = "nanochat" if any(".attn.c_q." in n for n in names) else "nanogpt"
    param = next(model.parameters(), None)
    model.eval()  # dropout off while inspecting; `inspect` puts the flag back
    session = Session(
        model,
        tokenizer,
        name=f"{type(model).__name__} (live)",
        family=family,
        source="the live model of your script",
        device=model_device(model),
        dtype=param.dtype if param is not None else torch.float32,
        info={"format": "live"},
        notes=notes,
    )
    return session, prompt
