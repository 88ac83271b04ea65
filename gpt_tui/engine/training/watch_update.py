"""What an optimizer finding's case needs to apply the update again: the weights, gradients
and optimizer state from just before it.

The update changes the weights in place, and copying them before every step would cost a
copy on every step, so the watch copies them only when it can tell, before the update, that
the update will break them: a setting of a parameter group (lr, eps, betas, weight decay)
that is not finite. That check reads the groups' plain numbers on the host, no tensor; an
update that overflows with finite settings leaves a case holding the broken weights.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn


def nonfinite_settings(group: dict[str, Any], tensors: bool = True) -> list[str]:
    """`lr is inf`, ... for each setting of a parameter group that is not finite; a 1-element
    tensor setting is read too when `tensors` (one host read: only at a finding)."""
    bad = []
    for key, value in group.items():
        if key == "params":
            continue
        values = value if isinstance(value, (tuple, list)) else (value,)
        numbers = [
            float(v)
            for v in values
            if isinstance(v, float) or (tensors and isinstance(v, torch.Tensor) and v.numel() == 1)
        ]
        if not all(map(math.isfinite, numbers)):
            bad.append(f"{key} is {numbers[0] if len(numbers) == 1 else tuple(numbers)}")
    return bad


@dataclass(frozen=True)
class BeforeUpdate:
    """The step's inputs to the update, copied just before it (by parameter name)."""

    weights: dict[str, torch.Tensor]
    grads: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    optimizer_class: str
    groups: list[list[str]]  # each group's parameters by name, in the optimizer's order


def copy_before_update(model: nn.Module, optimizer: torch.optim.Optimizer) -> BeforeUpdate:
    """The weights, gradients and optimizer state as they are now (copies)."""
    with torch.no_grad():
        named = list(model.named_parameters())
        weights = {n: p.detach().clone() for n, p in named}
        grads = {n: p.grad.detach().clone() for n, p in named if p.grad is not None}
    state = copy.deepcopy(optimizer.state_dict())  # tensors cloned: the update changes them
    groups = group_names(model, optimizer)
    return BeforeUpdate(weights, grads, state, type(optimizer).__name__, groups)


def group_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[list[str]]:
    """Each of the optimizer's groups as its parameters' names in `model`, in order ("" for
    one the model does not have): what a saved state's numbered parameters are."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [[names.get(id(p), "") for p in g["params"]] for g in optimizer.param_groups]


def update_will_break(optimizer: torch.optim.Optimizer) -> bool:
    """Whether a group's plain-number setting is not finite (no tensor is read), for an
    optimizer of torch.optim's, the only ones a case applies again (no other code runs)."""
    if getattr(torch.optim, type(optimizer).__name__, None) is not type(optimizer):
        return False
    return any(nonfinite_settings(g, tensors=False) for g in optimizer.param_groups)
