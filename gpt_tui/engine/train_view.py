"""Training view: what one training step on the prompt would see, without taking it.

One forward and backward pass with targets = the prompt shifted by one gives the loss and
every parameter's gradient. No optimizer step is taken: the gradients are read, then the
previous `.grad` values (usually None), `model.training` and grad mode are put back, so
the weights and the rest of the session are exactly as before.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gpt_tui.engine.model_access import (
    crop_to_context,
    model_context_len,
    model_device,
    output_logits,
)


@dataclass(frozen=True)
class GradRow:
    name: str  # parameter name (a tied tensor appears once, under its first name)
    shape: tuple[int, ...]
    grad_norm: float  # L2 norm of the gradient, in fp32
    param_norm: float
    ratio: float | None  # grad_norm / param_norm; None when the parameter is all zeros


@dataclass(frozen=True)
class TrainView:
    loss: float
    n_targets: int  # predictions the loss averages over (prompt length - 1)
    rows: tuple[GradRow, ...]  # trainable parameters, largest gradient norm first
    trainable_params: int  # elements with requires_grad
    frozen_params: int
    trainable_tensors: int
    frozen_tensors: tuple[str, ...]  # names of the parameters with requires_grad=False
    note: str | None = None


def _loss(model: torch.nn.Module, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The model's own loss if its forward takes targets, else cross-entropy of its logits."""
    if "targets" in inspect.signature(model.forward).parameters:
        output = model(idx, targets=targets)
        if isinstance(output, (tuple, list)) and len(output) > 1 and output[1] is not None:
            return output[1]
    else:
        output = model(idx)
    logits = output_logits(output)
    if logits.dim() != 3:
        raise ValueError(
            f"the training view needs logits for every position (B, T, V); the model "
            f"returned shape {tuple(logits.shape)}"
        )
    return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))


def train_view(model: torch.nn.Module, ids: Sequence[int], train_mode: bool = False) -> TrainView:
    """Loss and gradient norms of one forward + backward on `ids`; the weights are untouched.

    Dropout stays off unless `train_mode`, so the numbers are reproducible. Works even when
    the caller is inside `torch.inference_mode()` or `torch.no_grad()`.
    """
    ids = [int(i) for i in ids]
    if len(ids) < 2:
        raise ValueError("the training view needs a prompt of at least two tokens")
    context = model_context_len(model)
    ids, crop = crop_to_context(
        ids,
        None if context is None else context + 1,
        limit="the context length plus the last target",
    )
    notes = [crop] if crop else []
    device = model_device(model)

    named = list(model.named_parameters())
    trainable = [(n, p) for n, p in named if p.requires_grad]
    frozen = tuple(n for n, p in named if not p.requires_grad)
    saved_grads = {n: p.grad for n, p in named}
    was_training = model.training
    rows: list[GradRow] = []
    try:
        for _, p in named:
            p.grad = None
        model.train(train_mode)
        # Tensors made under an outer inference_mode cannot enter autograd: make them here.
        with torch.inference_mode(False), torch.enable_grad():
            idx = torch.tensor([ids[:-1]], dtype=torch.long, device=device)
            targets = torch.tensor([ids[1:]], dtype=torch.long, device=device)
            loss = _loss(model, idx, targets)
            if trainable:
                loss.backward()
        if trainable:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for _, p in trainable]
            # Two small tensors, one host transfer each: not one `.item()` per parameter.
            grad_norms = torch.stack([g.detach().float().norm() for g in grads]).tolist()
            param_norms = torch.stack([p.detach().float().norm() for _, p in trainable]).tolist()
            rows = [
                GradRow(n, tuple(p.shape), gn, pn, gn / pn if pn > 0 else None)
                for (n, p), gn, pn in zip(trainable, grad_norms, param_norms, strict=True)
            ]
            rows.sort(key=lambda r: r.grad_norm, reverse=True)
        else:
            notes.append("no parameter requires grad: nothing to differentiate, loss only")
        loss_value = float(loss.detach())
    finally:
        model.train(was_training)
        for n, p in named:
            p.grad = saved_grads[n]
    return TrainView(
        loss=loss_value,
        n_targets=len(ids) - 1,
        rows=tuple(rows),
        trainable_params=sum(p.numel() for _, p in trainable),
        frozen_params=sum(p.numel() for n, p in named if n in frozen),
        trainable_tensors=len(trainable),
        frozen_tensors=frozen,
        note="; ".join(notes) or None,
    )
