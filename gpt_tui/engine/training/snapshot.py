"""The weights put back after a training step: a bit-exact snapshot of parameters and
buffers, taken into one buffer per model that is reused step after step."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn

# One snapshot buffer per model, reused step after step: copying into memory already
# mapped is about twice as fast as cloning into fresh pages. A nested `restored` of the
# same model (while the buffer is in use) gets fresh copies.
_SNAPSHOTS: weakref.WeakKeyDictionary[nn.Module, dict[str, torch.Tensor]] = (
    weakref.WeakKeyDictionary()
)
_IN_USE: set[int] = set()


def _snapshot(
    model: nn.Module, state: dict[str, torch.Tensor], check: Callable[[], None] | None
) -> dict[str, torch.Tensor]:
    """Copies of `state`, into the model's buffer when it fits; `check()` before each."""
    check = check or (lambda: None)
    buffers = _SNAPSHOTS.get(model) if id(model) not in _IN_USE else None
    fits = (
        buffers is not None
        and buffers.keys() == state.keys()
        and all(
            (b.shape, b.dtype, b.device) == (v.shape, v.dtype, v.device)
            for b, v in zip(buffers.values(), state.values(), strict=True)
        )
    )
    if not fits:
        buffers = {}
        for k, v in state.items():
            check()
            buffers[k] = v.detach().clone()
        if id(model) not in _IN_USE:
            _SNAPSHOTS[model] = buffers
        return buffers
    with torch.no_grad():
        for k, v in state.items():
            check()
            buffers[k].copy_(v.detach())
    return buffers


@contextmanager
def restored(
    model: nn.Module, keep: bool = False, check: Callable[[], None] | None = None
) -> Iterator[dict[str, torch.Tensor]]:
    """Parameters and buffers (bit-exact copies), `.grad`s and the mode put back on exit.
    `check()` runs before each tensor is saved: a cancel there has changed nothing. The
    copies it yields are valid inside the block only."""
    owner = id(model) not in _IN_USE
    saved = _snapshot(model, model.state_dict(keep_vars=True), check)
    _IN_USE.add(id(model))
    grads = {n: p.grad for n, p in model.named_parameters()}
    mode = model.training
    try:
        yield saved
    finally:
        if owner:
            _IN_USE.discard(id(model))
        if not keep:
            with torch.no_grad():
                for k, v in model.state_dict(keep_vars=True).items():
                    v.detach().copy_(saved[k])
        for n, p in model.named_parameters():
            p.grad = grads[n]
        model.train(mode)
