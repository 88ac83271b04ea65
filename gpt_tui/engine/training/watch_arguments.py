"""The arguments `gpt_tui.watch` and `gpt_tui.listen` are given, checked before anything is
hooked: one clear error naming what was given and the fix."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ...errors import GptTuiError


class WatchArgumentError(GptTuiError, TypeError):
    """`watch()` was given something it cannot watch; the message names it and the fix."""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"a {type(value).__name__}"


def check_arguments(model: Any, optimizer: Any, every: Any) -> None:
    """One clear error for a model, optimizer or `every` that cannot be watched."""
    if isinstance(model, type):
        raise WatchArgumentError(
            f"watch({model.__name__}): that is a class; give the torch.nn.Module your loop "
            "trains, the model itself (gpt_tui.watch(model, optimizer=optimizer))"
        )
    if not isinstance(model, nn.Module):
        raise WatchArgumentError(
            f"watch({_short(model)}): give the torch.nn.Module your loop trains, "
            f"not a {type(model).__name__} (gpt_tui.watch(model, optimizer=optimizer))"
        )
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise WatchArgumentError(
            f"optimizer={_short(optimizer)}: give the torch.optim.Optimizer your loop "
            f"steps, not a {type(optimizer).__name__} "
            "(e.g. optimizer=torch.optim.AdamW(model.parameters()))"
        )
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise WatchArgumentError(f"every={every!r}: check every N >= 1 steps (an int)")
    if optimizer is not None:
        mine = {id(p) for p in model.parameters()}
        theirs = [p for group in optimizer.param_groups for p in group["params"]]
        if theirs and not any(id(p) in mine for p in theirs):
            raise WatchArgumentError(
                f"the optimizer's {len(theirs)} parameters are none of this model's: give "
                "the optimizer made from this model (torch.optim.AdamW(model.parameters()))"
            )
