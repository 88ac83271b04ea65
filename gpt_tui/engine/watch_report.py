"""The reproducible case a watched run saves at its first non-finite value.

A report folder holds, each file written atomically:
- the weights as they were when the step began: `ckpt.pt` in nanoGPT's format (our
  nanoGPT family and models from the user's own file) or nanochat's `model_<step>.pt` +
  `meta_<step>.json` (our nanochat family);
- `batch.pt`: the step's inputs (token ids, targets), as plain tensors;
- `optimizer.pt`: the optimizer's state, when the watch was given one;
- `case.json`: the finding, and how to open the case;
- `README.md`: the same for a person, with the exact command.
Nothing in it needs a pickle of a class to load: `torch.load(weights_only=True)` reads all.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from ..errors import GptTuiError
from ..io.checkpoints.save import atomic_torch_save, atomic_write_text
from .probes import unwrap_model
from .watch import Finding, Watch

if TYPE_CHECKING:
    from .session import Session

CASE_FILE = "case.json"


def _model_args(config: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    return {k: v for k, v in vars(config).items() if not k.startswith("_")}


def _user_file(model: nn.Module) -> str | None:
    """The file of the model's class, when it is not one of our families."""
    from .. import models

    try:
        path = Path(inspect.getfile(type(model))).resolve()
    except (TypeError, OSError):
        return None
    ours = Path(models.__file__).resolve().parent
    return None if path.parent == ours else str(path)


def _save_weights(folder: Path, model: nn.Module, step: int) -> str:
    from ..io.checkpoints.save import save_nanochat_checkpoint, save_nanogpt_checkpoint
    from ..models.nanochat import GPT as NanochatGPT
    from ..models.nanogpt import GPT as NanoGPT

    if isinstance(model, NanochatGPT):
        save_nanochat_checkpoint(folder, model, step=step, keep_old=False)
        return str(folder)
    if isinstance(model, NanoGPT):
        return str(save_nanogpt_checkpoint(folder, model, iter_num=step, best_val_loss=math.nan))
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    config = getattr(model, "config", None)
    ckpt = {
        "model": state,
        "model_args": _model_args(config) if config is not None else {},
        "iter_num": step,
        "best_val_loss": float("nan"),
        "config": {},
    }
    atomic_torch_save(ckpt, folder / "ckpt.pt")
    return str(folder / "ckpt.pt")


def reopen_command(case: dict[str, Any]) -> str:
    """The gpt-tui command that opens the saved case on its finding."""
    words = ["gpt-tui", "train-step", "--case", case["folder"]]
    return " ".join(shlex.quote(w) for w in words)


def save_case(
    folder: str | Path,
    model: nn.Module,
    finding: Finding,
    batch: tuple[Any, ...],
    optimizer: torch.optim.Optimizer | None = None,
) -> Path:
    """Write the case into `folder` (created); returns the folder."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    model = unwrap_model(model)
    tensors = [t.detach().cpu() for t in batch if isinstance(t, torch.Tensor)]
    atomic_torch_save({"inputs": tensors}, out / "batch.pt")
    if optimizer is not None:
        atomic_torch_save(optimizer.state_dict(), out / "optimizer.pt")
    checkpoint = _save_weights(out, model, finding.step)
    case = {
        "folder": str(out),
        "finding": dataclasses.asdict(dataclasses.replace(finding, report=str(out))),
        "summary": finding.summary,
        "checkpoint": Path(checkpoint).name if checkpoint != str(out) else ".",
        "model_file": _user_file(model),
        "model_class": type(model).__name__,
        "batch": "batch.pt",
        "optimizer": "optimizer.pt" if optimizer is not None else None,
    }
    command = reopen_command(case)
    case["command"] = command
    atomic_write_text(out / CASE_FILE, json.dumps(case, indent=2) + "\n")
    when = (
        "the weights just after the update that made them non-finite"
        if finding.phase == "optimizer"
        else "the weights as they were when the step began"
    )
    readme = f"""# gpt-tui report: a non-finite value at step {finding.step}

{finding.summary.split("; case saved")[0]}.

Open this case on the same finding:

    {command}

The folder holds {when} (`{Path(checkpoint).name}`), the step's batch
(`batch.pt`), {"the optimizer's state (`optimizer.pt`), " if optimizer else ""}and
`{CASE_FILE}`. Every file loads with `torch.load(..., weights_only=True)`.
"""
    atomic_write_text(out / "README.md", readme)
    return out


class CaseError(GptTuiError, ValueError):
    """A report folder that cannot be reopened; the message says why."""


def read_case(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / CASE_FILE
    try:
        case = json.loads(path.read_text())
    except FileNotFoundError:
        raise CaseError(
            f"{path} not found: give the folder a gpt_tui.watch report wrote "
            "(it holds case.json, batch.pt and the weights)"
        ) from None
    except (OSError, ValueError) as err:
        raise CaseError(f"{path} cannot be read: {err}") from None
    case["folder"] = str(Path(folder))
    return case


def case_checkpoint(case: dict[str, Any]) -> str:
    """The case's weights, found in its folder wherever the folder has moved since."""
    return str(Path(case["folder"]) / case["checkpoint"])


def case_batch(case: dict[str, Any]) -> list[torch.Tensor]:
    """The saved step's inputs (token ids, then targets), plain tensors on the CPU."""
    try:
        inputs = torch.load(Path(case["folder"]) / case["batch"], weights_only=True)["inputs"]
    except (OSError, KeyError, RuntimeError) as err:
        raise CaseError(f"{case['folder']}: the saved batch cannot be read: {err}") from None
    if not inputs:
        raise CaseError(f"{case['folder']}: the saved batch holds no tensor")
    return inputs


def replay_case(folder: str | Path, device: str = "cpu") -> tuple[Finding | None, Session]:
    """Open the case's model and run its step again under a watch: the finding it gets
    (the saved one, when the case reproduces) and the session, for the caller to close."""
    from .session import ModelSpec, Session

    case = read_case(folder)
    out = Path(case["folder"])
    spec = ModelSpec(
        checkpoint=case_checkpoint(case), model_file=case.get("model_file"), device=device
    )
    session = Session.open(spec)
    inputs = [t.to(session.device) for t in case_batch(case)]
    model = session.model
    optimizer = None
    if case.get("optimizer"):
        optimizer = torch.optim.AdamW(model.parameters())
        optimizer.load_state_dict(torch.load(out / case["optimizer"], weights_only=True))
    found: list[Finding] = []
    watch = Watch(model, lambda f, _: found.append(f), optimizer=optimizer)
    training = model.training
    try:
        model.train()
        with torch.enable_grad():
            output = model(*inputs)
            items = output if isinstance(output, tuple) else (output,)
            loss = next((t for t in items if isinstance(t, torch.Tensor) and t.dim() == 0), None)
            if loss is None:
                raise CaseError("the model returned no loss for the saved batch")
            loss.backward()
    finally:
        watch.close()
        model.train(training)
        model.zero_grad(set_to_none=True)
    return (found[0] if found else None), session
