"""The watch's flags in order, and the first place where one turned non-finite.

A flag is a 0-dim fp32 sum on the device, non-finite exactly when its tensor is; a micro-step
is a list of (before, after) pairs: each forward module's (input, output), the loss, the
gradients where backward starts, then backward's places (`backward_places`). `micro_key`
finds the first pair whose before is finite and after is not, without a host read.
"""

from __future__ import annotations

import torch

from .watch_finding import BackwardPlace
from .watch_ranks import first_bad

Flags = tuple[str, torch.Tensor | None, torch.Tensor | None]  # (module, before, after)
FlagPair = tuple[torch.Tensor | None, torch.Tensor | None]


def backward_places(
    backward: list[Flags], links: dict[str, str]
) -> tuple[list[BackwardPlace], list[FlagPair]]:
    """The backward order's places and their (before, after) flags: each module's own
    backward (grad_output, grad_input) and, before a module whose output a module backward
    has passed reads (`links`: reader -> the module before it), that link (what the reader
    sent, the gradient the output received): not finite only there, the gradient came from
    outside the chain."""
    sent: dict[str, torch.Tensor | None] = {}  # module -> what its backward sent
    places: list[BackwardPlace] = []
    pairs: list[FlagPair] = []
    for name, grad_output, grad_input in backward:
        for reader in [n for n, m in links.items() if m == name and n in sent]:
            places.append((name, reader))
            pairs.append((sent[reader], grad_output))
        places.append((name, None))
        pairs.append((grad_output, grad_input))
        sent[name] = grad_input
    return places, pairs


def micro_key(forward: list[FlagPair], rest: list[FlagPair], offset: int) -> torch.Tensor | None:
    """The first place, `offset` + its index in forward + rest, where a flag turned
    non-finite while the one before it was finite, as a device tensor (NO_KEY for none);
    None when no flag is present. A missing flag (None) counts as finite."""
    flags = [f for pair in (*forward, *rest) for f in pair]
    present = [f for f in flags if f is not None]
    if not present:
        return None
    finite = torch.isfinite(torch.stack(present))
    finite = torch.cat([finite, finite.new_ones(1)])  # the last: a missing flag
    order, k = [], 0
    for f in flags:
        order.append(len(present) if f is None else k)
        k += f is not None
    pairs = finite[torch.tensor(order, device=finite.device)].view(-1, 2)
    return first_bad(pairs[:, 0] & ~pairs[:, 1], offset)
