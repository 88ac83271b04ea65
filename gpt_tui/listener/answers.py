"""What a listened run answers an attached client, in the training thread at a step
boundary. Every answer but `apply_changes` reads the run and leaves it as it was (the
random state put back, copies for anything that steps)."""

from __future__ import annotations

import copy
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn as nn

from ..engine.training.watch_compile import copy_without_hooks, inner_module
from ..errors import GptTuiError


class ChangeError(GptTuiError):
    """The client's changes do not fit the live model: nothing of them was applied."""


def loss_of(output: Any) -> torch.Tensor | None:
    items = output if isinstance(output, tuple) else (output,)
    return next((t for t in items if isinstance(t, torch.Tensor) and t.dim() == 0), None)


def logits_of(output: Any) -> torch.Tensor | None:
    items = output if isinstance(output, tuple) else (output,)
    return next((t for t in items if isinstance(t, torch.Tensor) and t.dim() > 0), None)


def batch_of(call: tuple[tuple[Any, ...], dict[str, Any]] | None) -> tuple[Any, ...]:
    args, kwargs = call or ((), {})
    return (*args, *kwargs.values())


def state(model: nn.Module, step: int, output: Any, batch: tuple[Any, ...]) -> dict[str, Any]:
    loss = loss_of(output)
    return {
        "step": step,
        "loss": None if loss is None else float(loss.detach()),
        "batch": [list(t.shape) for t in batch if isinstance(t, torch.Tensor)],
        "model": type(inner_module(model)).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "pid": os.getpid(),
    }


def layout(model: nn.Module) -> dict[str, Any]:
    """Each tensor the client may change: its name, shape and dtype as the run has them."""
    tensors = inner_module(model).state_dict(keep_vars=True)
    return {"tensors": {k: [list(v.shape), str(v.dtype)] for k, v in tensors.items()}}


def health(model: nn.Module, losses: Iterable[torch.Tensor]) -> dict[str, Any]:
    """The run's figures at this boundary: its recent losses, and its gradients and
    weights as the optimizer left them (read now, only because a client asked)."""
    params = [p for p in inner_module(model).parameters()]
    grads = [p.grad.detach() for p in params if p.grad is not None]
    figures: dict[str, Any] = {"losses": [float(x) for x in losses]}
    if grads:
        norms = torch.stack([g.float().norm() for g in grads])
        figures["grad_norm"] = float(torch.linalg.vector_norm(norms))
        figures["nonfinite_grads"] = int(sum(int((~torch.isfinite(g)).sum()) for g in grads))
    with torch.no_grad():
        figures["weight_norm"] = float(
            torch.linalg.vector_norm(torch.stack([p.detach().float().norm() for p in params]))
        )
        figures["nonfinite_weights"] = int(sum(int((~torch.isfinite(p)).sum()) for p in params))
    return figures


def _rng_state() -> tuple[torch.Tensor, list[torch.Tensor]]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return torch.get_rng_state(), cuda


def _set_rng_state(rng: tuple[torch.Tensor, list[torch.Tensor]]) -> None:
    torch.set_rng_state(rng[0])
    if rng[1]:
        torch.cuda.set_rng_state_all(rng[1])


def forward(model: nn.Module, call: tuple[tuple[Any, ...], dict[str, Any]] | None) -> dict:
    """The last batch through the live model without grad; the random state put back
    (dropout draws from it: the run must draw the same numbers)."""
    if call is None:
        return {"error": "no training batch seen yet"}
    args, kwargs = call
    rng = _rng_state()
    try:
        with torch.no_grad():
            output = inner_module(model)(*args, **kwargs)
    finally:
        _set_rng_state(rng)
    loss, logits = loss_of(output), logits_of(output)
    answer: dict[str, Any] = {"loss": None if loss is None else float(loss)}
    if logits is not None:
        x = logits.detach().float()
        answer["logits"] = {
            "shape": list(x.shape),
            "mean": float(x.mean()),
            "std": float(x.std()),
            "finite": bool(torch.isfinite(x).all()),
        }
    return answer


def train_copy(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    call: tuple[tuple[Any, ...], dict[str, Any]] | None,
) -> dict[str, Any]:
    """One training step of the last batch on a copy of the model and of the optimizer."""
    if call is None:
        return {"error": "no training batch seen yet"}
    args, kwargs = call
    live = inner_module(model)
    twin = copy_without_hooks(live)
    rng = _rng_state()
    try:
        place = {id(p): i for i, p in enumerate(live.parameters())}
        params = list(twin.parameters())
        groups = [
            {**g, "params": [params[place[id(p)]] for p in g["params"]]}
            for g in optimizer.param_groups
        ]
        opt = type(optimizer)(groups)
        # load_state_dict keeps the tensors it is given: the copy's step must not move
        # the run's moments.
        opt.load_state_dict(copy.deepcopy(optimizer.state_dict()))
        before = [p.detach().clone() for p in twin.parameters()]
        with torch.enable_grad():
            loss = loss_of(twin(*args, **kwargs))
            if loss is None:
                return {"error": "the model returned no loss for the last batch"}
            loss.backward()
        grads = [p.grad for p in twin.parameters() if p.grad is not None]
        norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
        opt.step()
    finally:
        _set_rng_state(rng)
    change = max(
        float((p.detach() - b).norm() / b.norm()) if float(b.norm()) else math.inf
        for p, b in zip(twin.parameters(), before, strict=True)
    )
    return {"loss": float(loss.detach()), "grad_norm": norm, "max_relative_change": change}


def write_live_case(
    model: nn.Module, step: int, facts: dict[str, Any], batch: tuple[Any, ...]
) -> tuple[Path, Path, str]:
    """The live state (weights, the last batch, the step) as a case, in the format of
    `gpt_tui.watch`'s reports, inside a new private temporary folder: (that folder, the
    case's folder in it, its summary). The caller sends its files and removes it."""
    from ..engine.training.watch_case import CASE_FILE, read_case
    from ..engine.training.watch_finding import Finding
    from ..engine.training.watch_report import write_case
    from ..io.checkpoints.save import atomic_write_text

    root = Path(tempfile.mkdtemp(prefix="gpt-tui-attach-"))  # 0700, this user's
    loss = "" if facts["loss"] is None else f", loss {facts['loss']:.4f}"
    summary = f"the live run, pid {os.getpid()}, at step {step}{loss}"
    watch = facts.get("health", {}).get("watch")
    if watch is not None:  # the app shows the summary beside the run's batch: keep it there
        summary += f"; watch: {watch['finding'] or 'no non-finite value so far'}"
    tensors = tuple(t for t in batch if isinstance(t, torch.Tensor))
    finding = Finding(step, cast(Any, "attach"), "the live run", summary)
    written = write_case(root, inner_module(model), finding, tensors, None)
    if written.path is None:
        raise GptTuiError(f"the case could not be written: {written.error}")
    case = read_case(written.path)
    case.update(summary=summary, attach=facts)
    atomic_write_text(written.path / CASE_FILE, json.dumps(case, indent=2) + "\n")
    atomic_write_text(written.path / "README.md", f"# gpt-tui attach: {summary}\n")
    return root, written.path, summary


def _changed(old: torch.Tensor, new: torch.Tensor) -> int:
    """How many elements differ (two NaNs in one place are no change)."""
    differ = old != new
    if old.is_floating_point():
        differ &= ~(torch.isnan(old) & torch.isnan(new))
    return int(differ.sum())


def read_changes(model: nn.Module, blob: bytes) -> dict[str, torch.Tensor]:
    """The client's changed tensors, checked against the live model: a tensor file (read
    with weights_only, never unpickled as objects) of names the model has, each with the
    live tensor's shape and dtype. Raises ChangeError naming the first misfit."""
    try:
        data = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as err:  # whatever torch.load makes of foreign bytes
        raise ChangeError(f"not a tensor file: {str(err).splitlines()[0][:120]}") from None
    if not isinstance(data, dict) or not data:
        raise ChangeError(f"a {type(data).__name__}, not a dict of name -> tensor")
    live = inner_module(model).state_dict(keep_vars=True)
    for name, new in data.items():
        if not isinstance(name, str) or name not in live:
            raise ChangeError(f"{name!r} is none of the model's parameters or buffers")
        if not isinstance(new, torch.Tensor) or new.layout != torch.strided:
            raise ChangeError(f"{name}: a {type(new).__name__}, not a dense tensor")
        old = live[name]
        if new.shape != old.shape or new.dtype != old.dtype:
            raise ChangeError(
                f"{name}: {tuple(new.shape)} {new.dtype} sent, the run's is "
                f"{tuple(old.shape)} {old.dtype}"
            )
    return data


def apply_changes(model: nn.Module, changes: dict[str, torch.Tensor]) -> list[list[Any]]:
    """Copy the checked changes into the live tensors, in place: the optimizer holds the
    same Parameter objects, so its state (Adam's moments, the step count) stays theirs and
    carries on. Returns [name, elements changed, elements] per tensor."""
    live = inner_module(model).state_dict(keep_vars=True)
    applied, seen = [], set()
    with torch.no_grad():
        for name, new in changes.items():
            target = live[name]
            if id(target) in seen:  # a tied weight, under its second name
                continue
            seen.add(id(target))
            new = new.to(target.device)
            applied.append([name, _changed(target.detach(), new), target.numel()])
            target.copy_(new)
    return applied
