"""A model file's own compute dtype, held for the length of each pass.

nanochat (since March 2026) does not use autocast and does not cast its model: its
`gpt.py` imports a module global `COMPUTE_DTYPE` (from `NANOCHAT_DTYPE`, fp32 on a CPU),
casts the activations to it, keeps its rotary tables in it and asserts they are. A model of
such a file cast to bf16 can only run while that global says bf16 too: a hold sets it on
the model's module for each pass of that model and puts it back after, as `NANOCHAT_DTYPE`
would have set it at import. Other models of the same file keep the file's value. A model
without such a global is left as it is.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

NAME = "COMPUTE_DTYPE"


def _module_of(model: nn.Module) -> object | None:
    while True:  # the user's own class, inside torch.compile's and DDP's wrappers
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            break
    module = sys.modules.get(type(model).__module__)
    return module if isinstance(getattr(module, NAME, None), torch.dtype) else None


def compute_dtype_of(model: nn.Module) -> torch.dtype | None:
    """The compute dtype the model's module names now (None: it names none)."""
    module = _module_of(model)
    return getattr(module, NAME) if module is not None else None


class ComputeDtypeHold:
    """While held, each pass of `model` runs with its module's `COMPUTE_DTYPE` = `dtype`.
    Holds nest: the restoring hook goes first, so a later hold restores before an earlier."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        self._module = module = _module_of(model)
        self._saved: list[object] = []
        self._handles = []
        if module is None:
            return
        saved = self._saved

        def enter(_m: nn.Module, _args: object) -> None:
            saved.append(getattr(module, NAME))
            setattr(module, NAME, dtype)

        def leave(_m: nn.Module, _args: object, _out: object) -> None:
            if saved:
                setattr(module, NAME, saved.pop())

        self._handles = [
            model.register_forward_pre_hook(enter),
            # also when the pass raises; first, so holds unwind in the order they nest
            model.register_forward_hook(leave, always_call=True, prepend=True),
        ]

    def release(self) -> None:
        for handle in self._handles:
            handle.remove()
        if self._saved:  # a cancel (a BaseException) skips the hook: the first value goes back
            setattr(self._module, NAME, self._saved[0])
            self._saved.clear()


@contextmanager
def own_compute_dtype(model: nn.Module, dtype: torch.dtype) -> Iterator[None]:
    """A hold on `model` for the length of the block."""
    hold = ComputeDtypeHold(model, dtype)
    try:
        yield
    finally:
        hold.release()
