"""A model file's own compute dtype, held for the length of one pass.

nanochat (since March 2026) does not use autocast and does not cast its model: its
`gpt.py` imports a module global `COMPUTE_DTYPE` (from `NANOCHAT_DTYPE`, fp32 on a CPU),
casts the activations to it, keeps its rotary tables in it and asserts they are. A copy of
such a model cast to bf16 can only run while that global says bf16 too: this sets it on the
model's module for each pass of that model and puts it back after, as `NANOCHAT_DTYPE`
would have set it at import. A model without such a global is left as it is.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .model_access import unwrap_model

NAME = "COMPUTE_DTYPE"


def _module_of(model: nn.Module) -> object | None:
    module = sys.modules.get(type(unwrap_model(model)).__module__)
    return module if isinstance(getattr(module, NAME, None), torch.dtype) else None


def compute_dtype_of(model: nn.Module) -> torch.dtype | None:
    """The compute dtype the model's module names now (None: it names none)."""
    module = _module_of(model)
    return getattr(module, NAME) if module is not None else None


@contextmanager
def own_compute_dtype(model: nn.Module, dtype: torch.dtype) -> Iterator[None]:
    """While open, each pass of `model` runs with its module's `COMPUTE_DTYPE` = `dtype`."""
    module = _module_of(model)
    if module is None:
        yield
        return
    saved: list[object] = []

    def enter(_m: nn.Module, _args: object) -> None:
        saved.append(getattr(module, NAME))
        setattr(module, NAME, dtype)

    def leave(_m: nn.Module, _args: object, _out: object) -> None:
        if saved:
            setattr(module, NAME, saved.pop())

    handles = [
        model.register_forward_pre_hook(enter),
        model.register_forward_hook(leave, always_call=True),  # also when the pass raises
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        if saved:  # a cancel (a BaseException) skips the hook: the first value goes back
            setattr(module, NAME, saved[0])
