"""The options of numerics, memory and cost: what --dtype means for each of them."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..engine.core.session import Session

NUMERICS_FORMATS = ("bfloat16", "float16", "float8_e4m3fn", "float8_e5m2")
HEADS_SHOWN = 12  # the heads table's rows unless --all-heads


def memory_work(session: Session, batch: int, block: int) -> str:
    """What `memory` does while the screen would stay blank: the steps it measures."""
    from ..engine.analysis.memory import fit_sizes

    sizes = dict.fromkeys(fit_sizes(block, session.context_len))  # each measured once
    return (
        f"measuring {len(sizes)} training steps of {session.name} on {session.device} "
        f"({', '.join(f'{b} x {t}' for b, t in sizes)}) to forecast batch {batch} x {block}…"
    )


def cost_work(session: Session, batch: int, block: int) -> str:
    """What `cost` does meanwhile: FLOPs are counted, and off meta, passes are timed."""
    if session.device.type == "meta":
        return f"counting the FLOPs of {session.name} at batch {batch} x {block}…"
    return (
        f"timing 4 forward passes and a training step of {session.name} at batch {batch} x "
        f"{block} on {session.device}…"
    )


def add_numerics_args(p: argparse.ArgumentParser, whole: Callable, real: Callable) -> None:
    """--dtype here names the format asked about; the model itself opens in float32."""
    for action in p._actions:
        if "--dtype" in action.option_strings:
            action.help = (
                f"the format asked about: {' | '.join(NUMERICS_FORMATS)} (the model runs in "
                "float32; the fp32 check runs a copy cast to it)"
            )
    p.set_defaults(dtype="bfloat16")
    p.add_argument("--prompt", required=True)
    p.add_argument(
        "--no-fp32-check", action="store_true", help="skip running the pass in the dtype"
    )
    p.add_argument(
        "--steps",
        type=whole(1),
        metavar="N",
        help="also train N steps on the prompt and flag heads whose largest logit grows",
    )
    p.add_argument("--lr", type=real(0, above=True), default=1e-3, help="with --steps")
    p.add_argument(
        "--all-heads", action="store_true", help=f"list every head (default: the top {HEADS_SHOWN})"
    )
    p.add_argument("--json", action="store_true")


def add_size_args(p: argparse.ArgumentParser, whole: Callable, real: Callable, fit: bool) -> None:
    """--dtype here is the training step's autocast dtype, as train-step's and nanoGPT's
    train.py `dtype`; --weights-dtype casts the weights themselves."""
    for action in p._actions:
        if "--dtype" in action.option_strings:
            action.help = (
                "the step's autocast dtype, as in mixed-precision training: float32 | bfloat16 "
                "| float16 (weights, grads and optimizer state stay in --weights-dtype; "
                "nanochat keeps its embeddings in bfloat16, as it does)"
            )
    p.add_argument(
        "--weights-dtype",
        choices=["float32", "bfloat16", "float16"],
        default="float32",
        help="cast the weights themselves (and so grads and optimizer state); default float32",
    )
    p.add_argument("--batch", type=whole(1), default=1, help="batch size B (default 1)")
    p.add_argument("--block", type=whole(1), required=True, help="sequence length T")
    if fit:
        p.add_argument(
            "--fit", type=real(0, above=True), metavar="GIB", help="the memory budget, GiB"
        )
        p.add_argument("--optimizer", choices=["adamw", "muon"], default="adamw")
    p.add_argument("--json", action="store_true")
