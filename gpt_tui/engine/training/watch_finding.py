"""`Finding`: where the first non-finite value of a watched run arose, and how to say it.

Its own module so that the watch, its process-group exchange and its case files can all
name it without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .held_values import HeldValues

Phase = Literal["forward", "loss", "backward", "gradients", "optimizer"]


@dataclass(frozen=True)
class Finding:
    """Where the first non-finite value of a watched run arose."""

    step: int  # the optimizer's step as the loop counts it (without optimizer=: the forward)
    phase: Phase
    where: str  # a module path, "loss", or a parameter name
    detail: str  # why that place: "its input was finite", ...
    report: str | None = None  # the folder the case was saved to
    micro_step: int | None = None  # the micro-step within the step (0 = its first forward)
    micro_steps: int | None = None  # micro-steps per step, once a step has ended
    rank: int | None = None  # under torch.distributed: the (lowest) rank where it arose
    ranks: tuple[int, ...] = ()  # every rank where the same first value arose
    received: str | None = None  # how this rank got it from another one, if it did
    held: tuple[HeldValues, ...] = ()  # the module's parameters already non-finite there
    command: str | None = None  # the command that reopens the saved case, as typed

    @property
    def when(self) -> str:
        text = f"step {self.step}"
        if self.micro_step is not None and (self.micro_step or (self.micro_steps or 1) > 1):
            text += f", micro-step {self.micro_step}"
            text += f" of {self.micro_steps}" if self.micro_steps else ""
        return text

    @property
    def summary(self) -> str:
        on = ""
        if self.rank is not None:
            on = f" on {ranks_text(self.ranks or (self.rank,))}"
        where = f"{self.where} ({self.detail})"
        if self.received:
            text = f"{self.received}; the first non-finite value was{on}, {self.when}, "
            text += f"{self.phase}, {where}"
        else:
            text = f"{self.when}: the first non-finite value is{on} in {self.phase} at {where}"
        if self.report:
            text += f"; case saved to {self.report}"
            text += f", open it with: {self.command}" if self.command else ""
        return text


def ranks_text(ranks: tuple[int, ...]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(map(str, ranks))
