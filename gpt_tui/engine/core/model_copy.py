"""A copy of a model without its hooks, in another dtype if asked.

A model under gpt-tui carries hooks (probes, interventions, the runner's cancel checks, a
paused stepper's) whose closures hold what registered them: `copy.deepcopy` would copy
those objects too, and the copy's passes would feed them. Here the structure is copied on
`meta` and each tensor then filled once, straight in the dtype asked for: memory grows by
one copy in that dtype, never a full-width copy first; a tied weight stays tied.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn as nn


def _go_on() -> None:
    return None


def dtype_copy(
    model: nn.Module, dtype: torch.dtype | None, check: Callable[[], None] = _go_on
) -> nn.Module:
    """`model`'s copy with no hooks, its floating tensors in `dtype` (None: as they are);
    `check()` runs before each tensor is filled, so a cancel stops the copy within one."""
    tensors = [*model.parameters(), *model.buffers()]
    memo: dict[int, object] = {}
    for t in tensors:
        if id(t) not in memo:
            empty = torch.empty_like(t, device="meta")
            memo[id(t)] = (
                nn.Parameter(empty, t.requires_grad) if isinstance(t, nn.Parameter) else empty
            )
    for module in model.modules():  # hooks are not copied (they may hold a paused frame)
        for name, value in vars(module).items():
            if "hook" in name and isinstance(value, dict):
                memo[id(value)] = type(value)()
    clone = copy.deepcopy(model, memo)
    filled: dict[int, torch.Tensor] = {}  # a tied weight stays tied
    sources = dict(zip((id(memo[id(t)]) for t in tensors), tensors, strict=True))
    for module in clone.modules():
        for table in (module._parameters, module._buffers):
            for name, meta in table.items():
                if meta is None:
                    continue
                if id(meta) not in filled:
                    check()
                    src = sources[id(meta)].detach()
                    cast = dtype is not None and src.is_floating_point()
                    data = src.to(dtype, copy=True) if cast else src.clone()
                    is_param = isinstance(meta, nn.Parameter)
                    filled[id(meta)] = nn.Parameter(data, meta.requires_grad) if is_param else data
                table[name] = filled[id(meta)]
    return clone
