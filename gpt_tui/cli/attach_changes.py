"""What the user changed in the app's copy of a live run (`gpt-tui attach --allow-changes`):
the copy's weights and buffers as the app opened them, against what they are when it ends.

The app changes weights through the Code tab's `!statement` at a paused line (e.g.
`!self.c_proj.weight.data.zero_()`) and, in the same way, any buffer. A training step in the
Train tab puts the weights back, and ablations and scalings are hooks on the copy, not
weights: neither is a change to send.
"""

from __future__ import annotations

from typing import Any

import torch

CLOSE_SECONDS = 60.0


def _differs(old: torch.Tensor, new: torch.Tensor) -> bool:
    differ = old != new
    if old.is_floating_point():
        differ &= ~(torch.isnan(old) & torch.isnan(new))  # a NaN kept is no change
    return bool(differ.any())


class ChangeTracker:
    """`opened(debugger)` when the app has opened the copy; `changed()` once it has ended."""

    def __init__(self) -> None:
        self._debugger: Any = None
        self._before: dict[str, torch.Tensor] = {}

    def opened(self, debugger: Any) -> None:
        self._debugger = debugger
        state = debugger.session.model.state_dict()
        self._before = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}

    def changed(self) -> dict[str, torch.Tensor]:
        """The tensors that differ from the opened copy, on the CPU (a tied weight once)."""
        debugger = self._debugger
        if debugger is None:
            return {}
        # The app leaves without waiting for the engine: let its last work unwind first.
        debugger.closed.wait(CLOSE_SECONDS)
        out, seen = {}, set()
        for name, tensor in debugger.session.model.state_dict(keep_vars=True).items():
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
            before = self._before.get(name)
            now = tensor.detach().to("cpu")
            if before is not None and before.shape == now.shape and _differs(before, now):
                out[name] = now.clone()
        return out
