"""Which parameters of a module hold NaN or Inf: read once, when a finding is made.

A module whose output is the first non-finite one while its input was finite may simply
be computing with a weight that is already NaN (a bad checkpoint, an earlier step's
update, a user's write). The finding then names that weight and how many values, rather
than only the module. Never called on the hot path: only once a finding exists.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass(frozen=True)
class HeldValues:
    """A parameter holding non-finite values: its full name and how many of each."""

    name: str
    nan: int
    inf: int

    @property
    def counts(self) -> str:
        parts = [f"{n} {what}" for n, what in ((self.nan, "NaN"), (self.inf, "Inf")) if n]
        return " and ".join(parts)


def nonfinite_parameters(named: Iterable[tuple[str, torch.Tensor]]) -> tuple[HeldValues, ...]:
    """The floating-point tensors of `named` (name, parameter) that hold NaN or Inf, in its
    order. Counted on the parameters' device, read back in one transfer."""
    floats = [(n, p) for n, p in named if p.is_floating_point()]
    if not floats:
        return ()
    device = floats[0][1].device
    counts = torch.stack([
        torch.stack([p.detach().isnan().sum(), p.detach().isinf().sum()]).to(device)
        for _, p in floats
    ])  # fmt: skip
    rows = counts.tolist()  # the one host read
    return tuple(
        HeldValues(n, nan, inf)
        for (n, _), (nan, inf) in zip(floats, rows, strict=True)
        if nan or inf
    )


def module_parameters(model: nn.Module, path: str) -> list[tuple[str, torch.Tensor]]:
    """The parameters of the module at `path` (its submodules' included), named in full;
    none when the path names no module of the model."""
    try:
        module = model.get_submodule(path)
    except AttributeError:
        return []
    return [(f"{path}.{n}" if path else n, p) for n, p in module.named_parameters()]


def held_text(held: tuple[HeldValues, ...], when: str) -> str | None:
    """`transformer.h.1.mlp.c_fc.weight already held 1 NaN at this forward`, naming the
    first such parameter and how many others there are; None when there is none."""
    if not held:
        return None
    first = held[0]
    text = f"{first.name} already held {first.counts} {when}"
    if len(held) > 1:
        text += f" (and {len(held) - 1} more of the module's parameters)"
    return text
