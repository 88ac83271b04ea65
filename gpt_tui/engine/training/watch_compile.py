"""`watch` on a model that runs through `torch.compile`, or wrapped for DDP.

A compiled graph ignores module hooks registered after it was built (dynamo does not
guard on them). So when the watch attaches to a compiled model it resets dynamo's caches
(`torch._dynamo.reset()`, dynamo's own API), the next call recompiles with the hooks
traced in, and the watch says so; it resets them again when it ends, so the compiled
code keeps no trace of its hooks. Should the hooks still not run (a graph that refuses
them), the watch checks what lies outside the graph (the loss, the gradients after
backward, the parameters after the optimizer's step) and replays the failing micro-batch
eagerly on a copy of the model to name the module (`replay_eagerly`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn

from ..analysis.probe_points import first_tensor


def inner_module(model: nn.Module) -> nn.Module:
    """The module the hooks go on: inside DDP / FSDP-style wrappers (`.module`) and
    `torch.compile`'s OptimizedModule (`._orig_mod`), in any nesting."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            wrapped = getattr(model, "module", None)
            is_ddp = isinstance(model, torch.nn.parallel.DistributedDataParallel)
            inner = wrapped if is_ddp and isinstance(wrapped, nn.Module) else None
        if inner is None:
            return model
        model = inner


def is_compiled(model: nn.Module) -> bool:
    """Whether the model, or a wrapper of it, runs through torch.compile (an
    OptimizedModule, or `module.compile()` in place)."""
    while True:
        if getattr(model, "_compiled_call_impl", None) is not None:
            return True
        if isinstance(getattr(model, "_orig_mod", None), nn.Module):
            return True
        inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module) or inner is model:
            return False
        model = inner


def recompile() -> str:
    """Drop dynamo's compiled code so that the next call recompiles with the hooks."""
    torch._dynamo.reset()
    return (
        "the model runs through torch.compile: reset dynamo (torch._dynamo.reset()) so "
        "that the next step recompiles with the watch's hooks (every compiled function "
        "of this process recompiles once)"
    )


def copy_without_hooks(model: nn.Module) -> nn.Module:
    """A deep copy of the model without its forward hooks and pre-hooks: they hold the
    objects that registered them (a watch, a listener), which must be neither copied nor
    fed by the copy."""
    memo: dict[int, Any] = {}
    for module in model.modules():
        for hooks in (module._forward_hooks, module._forward_pre_hooks):
            memo[id(hooks)] = type(hooks)()
    return copy.deepcopy(model, memo)


def replay_eagerly(
    model: nn.Module,
    calls: Sequence[tuple[tuple[Any, ...], dict[str, Any]]],
    watch_factory: Callable[[nn.Module, Callable[..., None]], Any],
) -> tuple[int, Any] | None:
    """Run the step's micro-batches (the model's calls) forward and backward on an eager
    copy under a fresh watch (`watch_factory(copy, on_finding)`): the first (micro-step,
    finding), or None."""
    twin = copy_without_hooks(model)
    twin.train(model.training)
    found: list[Any] = []
    watch = watch_factory(twin, lambda finding, _batch: found.append(finding))
    try:
        for micro, (args, kwargs) in enumerate(calls):
            with torch.enable_grad():
                output = twin(*args, **kwargs)
                items = output if isinstance(output, tuple) else (output,)
                losses = [t for t in items if isinstance(t, torch.Tensor) and t.dim() == 0]
                if losses:
                    losses[0].backward()
                elif first_tensor(output) is not None:
                    first_tensor(output).float().sum().backward()
            watch.flush()
            if found:
                return micro, found[0]
    finally:
        watch.close()
    return None
