"""Attention logits that grow step over step: N real training steps on the prompt, each
head's largest pre-softmax logit measured before the first and after every step.

A head whose largest logit rises at every step is flagged: attention logit growth is a
known source of training instability (the softmax saturates, its gradient vanishes, and the
loss spikes), and QK norm or a logit softcap is the usual remedy. The weights are put back
afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from ...io.batches import prompt_batch
from ..training.step import StepOptions, Stepper, restored
from .numerics import head_logit_max
from .probes import Probes

if TYPE_CHECKING:
    from ..core.session import Session


@dataclass(frozen=True)
class HeadGrowth:
    layer: int
    head: int
    max_logits: tuple[float, ...]  # before step 1, then after each step
    growing: bool  # rose at every step

    @property
    def ratio(self) -> float:
        first = self.max_logits[0]
        return self.max_logits[-1] / first if first > 0 else float("inf")


@dataclass(frozen=True)
class GrowthReport:
    steps: int
    lr: float
    losses: tuple[float, ...]  # each step's loss (before its update)
    heads: tuple[HeadGrowth, ...]

    @property
    def flagged(self) -> tuple[HeadGrowth, ...]:
        return tuple(h for h in self.heads if h.growing)


def _maxima(model: nn.Module, x: torch.Tensor) -> dict[tuple[int, int], float]:
    """(layer, head) -> the largest logit of that head on x."""
    out: dict[tuple[int, int], float] = {}
    with Probes(model, attention_layers="all") as probes:
        probes.run(x)
        for layer, call in sorted(probes.capture.calls.items()):
            maxima = head_logit_max(call)
            if maxima is not None:
                for head, value in enumerate(maxima.cpu().tolist()):
                    out[(layer, head)] = value
    return out


def head_logit_growth(
    session: Session, prompt: str | Sequence[int], steps: int, lr: float = 1e-3
) -> GrowthReport:
    """`steps` AdamW steps at `lr` on the prompt; each head's largest logit along them."""
    ids, _ = session.prompt_ids(prompt)
    batch = prompt_batch(ids, session.context_len)
    model = session.model
    x = batch.x.to(session.device)
    with restored(model):
        stepper = Stepper(model, StepOptions(lr=lr, clip=1.0))
        history = [_maxima(model, x)]
        losses = []
        for _ in range(steps):
            losses.append(stepper.step(batch).loss)
            history.append(_maxima(model, x))
    heads = []
    for key in sorted(history[0]):
        values = tuple(h[key] for h in history)
        rising = len(values) > 1 and all(b > a for a, b in zip(values, values[1:], strict=False))
        heads.append(HeadGrowth(key[0], key[1], values, rising))
    return GrowthReport(steps, lr, tuple(losses), tuple(heads))
