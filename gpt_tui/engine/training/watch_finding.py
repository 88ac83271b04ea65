"""`Finding`: where the first non-finite value of a watched run arose, and how to say it.

Its own module so that the watch, its process-group exchange and its case files can all
name it without importing one another.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch

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
    # Why the saved case's step, run again, cannot reach this finding (None: it can).
    unreplayable: str | None = None

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


# A place in backward order: (module, None) for the module's own backward; (module, next)
# for the gradient its output received, against what `next`, reading that output, sent.
BackwardPlace = tuple[str, str | None]


class MicroNames(NamedTuple):
    """What a micro-step's key is decoded with: its modules in forward order, its places in
    backward order, the gradient into the model's loss (None: none came) and whether the
    model returned one."""

    forward: list[str]
    backward: list[BackwardPlace]
    into_loss: torch.Tensor | None
    model_loss: bool


NO_NAMES = MicroNames([], [], None, False)
LOSS_WHY = "the logits were finite; are all the targets ignored (-1)? then it is 0/0"


def name_place(
    place: int, names: MicroNames, lookups: set[str]
) -> tuple[Phase, str, str, str | None]:
    """(phase, where, detail, why a case cannot replay it) of a place in a micro-step's
    order: its forward modules, the loss, the gradient into the loss, into the logits the
    model returned beside it, then into the model's output, then its backward modules
    (`lookups`: the embeddings, which take token ids)."""
    forward, backward = names.forward, names.backward
    if place < len(forward):
        name = forward[place]
        # An embedding's input is token ids: what it returns comes from its weights.
        why = "it looks up token ids" if name in lookups else "its input was finite"
        return "forward", name, why, None
    place -= len(forward)
    if place == 0:
        return "loss", "loss", LOSS_WHY, None
    if place == 1:  # one host read, at the finding only: NaN or Inf tells which mistake
        value = float(names.into_loss) if names.into_loss is not None else None
        return "loss", "loss", _into_loss_text(value), UNREPLAYABLE_LOSS
    output = backward[0][0] if backward else "the model's output"
    if place == 2 and names.into_loss is not None:  # the model's loss took part
        return "loss", output, _into_returned_text(output), UNREPLAYABLE_AUX
    if place == 2:  # the loop's loss alone, from the logits the model returned
        return "loss", output, _into_output_text(output, names.model_loss), UNREPLAYABLE_OUTSIDE
    place -= 1
    if place == 2 and names.into_loss is not None:
        why = f"the gradient into it was finite; what its backward passed into {output} was not"
        return "backward", "loss", why, None
    if place == 2:
        return "loss", output, _into_output_text(output, names.model_loss), UNREPLAYABLE_OUTSIDE
    i = place - 3
    name, after = backward[i] if i < len(backward) else (f"module {i} of the backward order", None)
    if after is not None:
        return "backward", name, _from_outside_text(after), None
    return "backward", name, "its grad_output was finite", None


def _from_outside_text(after: str) -> str:
    """Why a module's output is named when the gradient it received was not finite while
    the module reading it sent a finite one back."""
    return (
        f"{FROM_OUTSIDE} while {after}, the next module, sent a finite one back: it came from "
        "between them, from code outside the watched modules or a loss taken on this "
        "activation (an auxiliary loss, in the model or your loop?)"
    )


FROM_OUTSIDE = "the gradient into its output was not finite"


def _into_loss_text(value: float | None) -> str:
    """Why backward's start is named when the gradient into the model's (finite) loss was
    not finite: `value` is that gradient as this process holds it (under torchrun, finite
    on a rank that did not make it: then the text names no mistake)."""
    if value is not None and math.isnan(value):
        return (
            "the loss backward() started from was NaN: the model's loss was finite, the "
            "gradient into it NaN (loss * nan after the model returned it?)"
        )
    if value is not None and math.isinf(value):
        return (
            "the loss backward() started from was scaled by a factor that is not finite: the "
            f"model's loss was finite, the gradient into it {value} (a loss divided by 0, as "
            "by a gradient-accumulation count of 0?)"
        )
    return (
        "the model's loss was finite, the gradient into it not: the loss backward() started "
        "from was made from it and was not finite (loss * nan, loss / 0?)"
    )


def _into_returned_text(output: str) -> str:
    """Why the model's output is named when what the loop took from the logits the model
    returned beside its (finite) loss sent a gradient into them that was not finite."""
    return (
        f"the gradient your loop sent into the logits the model returned ({output}) was not "
        "finite while the model's loss sent a finite one: a term your loop computed from the "
        "logits (an auxiliary loss, a z-loss?) was not finite"
    )


def _into_output_text(output: str, model_loss: bool) -> str:
    """Why backward's start is named when the gradient into the model's output was already
    not finite and backward did not come through the model's own loss."""
    outside = "not the loss the model returned" if model_loss else "from its logits"
    return (
        f"the gradient into the model's output ({output}) was already not finite while every "
        f"forward value was finite: the loss backward() started from, computed outside the "
        f"model ({outside}), was not finite (all its targets ignored, 0/0? divided by 0?)"
    )


UNREPLAYABLE_LOSS = (
    "backward() started from a value your loop made from the model's loss after the model "
    "returned it (loss * nan, loss / 0); the step run again calls backward() on the model's "
    "own loss of the saved batch, so it cannot find this again"
)
UNREPLAYABLE_AUX = (
    "your loop added a term computed from the logits to the model's loss; the step run "
    "again calls backward() on the model's own loss of the saved batch, so it cannot find "
    "this again"
)
UNREPLAYABLE_OUTSIDE = (
    "your loop computed the loss backward() started from outside the model; the step run "
    "again calls backward() on the model's own loss of the saved batch, so it cannot find "
    "this again"
)


def ranks_text(ranks: tuple[int, ...]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(map(str, ranks))
