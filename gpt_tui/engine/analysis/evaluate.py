"""Mean cross-entropy of a model over a text: `gpt-tui eval`.

The text is cut into non-overlapping context-sized windows; every position of every window
is predicted (targets = inputs shifted by one) and the windows tile the text, so every token
but the very first is scored exactly once. Splits follow nanoGPT's prepare.py: the first
90% of the text is train, the last 10% val.

A model is called as a training step calls it (`wants_targets`): nanoGPT's forward gives
every position's logits only when given targets (else the last position's alone), while
nanochat's gives them without (and the loss alone with). The loss is always ours, from the
logits, so both families and our own are scored the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ...errors import GptTuiError
from ..core.model_access import output_logits
from ..training.step import wants_targets

Split = Literal["train", "val", "all"]


class EvalError(GptTuiError, ValueError):
    """The text cannot be evaluated (too short); the message says what to give instead."""


@dataclass(frozen=True)
class EvalResult:
    split: str
    tokens: int  # tokens scored
    characters: int  # characters of the text scored
    loss: float  # mean nats per token
    bits_per_char: float
    windows: int
    context: int


def split_text(text: str, split: Split) -> str:
    n = int(0.9 * len(text))
    if split == "train":
        return text[:n]
    if split == "val":
        return text[n:]
    if split == "all":
        return text
    raise EvalError(f"unknown split {split!r}: use train, val or all")


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module,
    ids: list[int],
    context: int,
    device: torch.device,
    *,
    split: str = "val",
    characters: int | None = None,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Mean loss over `ids` in windows of `context + 1` tokens (inputs and shifted targets)."""
    if len(ids) < 2:
        raise EvalError("the text is too short to evaluate: it needs at least two tokens")
    data = torch.tensor(ids, dtype=torch.long)
    starts = list(range(0, len(ids) - 1, context))
    total_nats, total_tokens = 0.0, 0
    targets: bool | None = None
    for b in range(0, len(starts), batch_size):
        batch_starts = starts[b : b + batch_size]
        # Windows are equal length except possibly the last, so score it on its own.
        groups: dict[int, list[int]] = {}
        for s in batch_starts:
            groups.setdefault(min(context, len(ids) - 1 - s), []).append(s)
        for length, group in groups.items():
            x = torch.stack([data[s : s + length] for s in group]).to(device)  # (B, T)
            y = torch.stack([data[s + 1 : s + 1 + length] for s in group]).to(device)  # (B, T)
            if targets is None:
                targets = wants_targets(model, x)
            logits = output_logits(model(x, targets=y) if targets else model(x)).float()
            if logits.dim() != 3 or logits.shape[:2] != x.shape:
                called = "model(x, targets=y)" if targets else "model(x)"
                raise EvalError(
                    f"eval needs logits for every position, {tuple(x.shape)} + (V,); "
                    f"{called} returned {tuple(logits.shape)}"
                )
            nats = F.cross_entropy(
                logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum"
            )
            total_nats += float(nats)
            total_tokens += y.numel()
        if progress is not None:
            progress(min(b + batch_size, len(starts)), len(starts))
    loss = total_nats / total_tokens
    chars = characters if characters is not None else total_tokens
    return EvalResult(
        split=split,
        tokens=total_tokens,
        characters=chars,
        loss=loss,
        bits_per_char=total_nats / math.log(2) / max(1, chars),
        windows=len(starts),
        context=context,
    )
