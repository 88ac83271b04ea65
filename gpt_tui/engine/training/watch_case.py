"""Reading a watch case back (see watch_report.py for what it holds) as untrusted input.

A case folder may come from someone else: every file case.json names must be inside the
folder, each field must have its type, torch files are read as tensors and plain values
only, and the user's model file it names is imported only when trusted and unchanged
(its sha256). Each mistake is one `CaseError` line.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ...errors import GptTuiError
from .watch import Finding, Watch
from .watch_finding import FROM_OUTSIDE

if TYPE_CHECKING:
    from ..core.session import Session

CASE_FILE = "case.json"
LATEST = "latest"  # a text file in the report folder: the newest case's folder name
TOKENIZER_FILE = "tokenizer.json"
GRADS_FILE = "grads.pt"  # an optimizer finding's gradients, when its weights are the step's
# Which weights a case holds (case.json's "weights"): a finding in forward, loss, backward or
# the gradients is made before the optimizer's step; an optimizer one after the update.
STEP_START, AFTER_UPDATE = "step_start", "after_update"
NO_COPY = (
    "the watch copies the weights before an update only when a setting that is not finite "
    "(an lr of inf) shows it will break them, and the optimizer is one of torch.optim's; "
    "not on every step"
)


class CaseError(GptTuiError, ValueError):
    """A report folder that cannot be reopened; the message says why."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def case_folder(folder: str | Path) -> Path:
    """The case a path names: a case folder itself, or a report folder's `latest` one."""
    path = Path(folder)
    if (path / CASE_FILE).exists() or not (path / LATEST).is_file():
        return path
    try:
        name = (path / LATEST).read_text().strip()
    except OSError as err:
        raise CaseError(f"{path / LATEST} cannot be read: {err.strerror or err}") from None
    if not name or Path(name).name != name or name in (".", ".."):
        raise CaseError(f"{path / LATEST} names {name!r}, not a case folder inside {path}")
    return path / name


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string"}.get(type(value), repr(value))


def _inside(path: Path, case: dict[str, Any], key: str, required: bool = True) -> None:
    """`case[key]` must name a file in the case's own folder."""
    value = case.get(key)
    if value is None and not required:
        return
    if value is None:
        raise CaseError(
            f"{path} has no {key!r}: not a case gpt_tui.watch wrote (one names its "
            "checkpoint, batch and finding)"
        )
    if not isinstance(value, str) or not value:
        raise CaseError(
            f"{path}: {key!r} is {_kind(value)}; it must name a file in the case folder"
        )
    folder = path.parent.resolve()
    if not (folder / value).resolve().is_relative_to(folder):
        raise CaseError(
            f"{path}: {key!r} names {value!r}, outside the case folder; a case reads only "
            "its own files"
        )


def read_case(folder: str | Path) -> dict[str, Any]:
    """case.json, checked: every file it names is inside its folder, each field its type."""
    out = case_folder(folder)
    if out.exists() and not out.is_dir():
        raise CaseError(
            f"{out} is not a case folder (a folder holding case.json, or a report folder "
            "with latest)"
        )
    path = out / CASE_FILE
    try:
        case = json.loads(path.read_text())
    except FileNotFoundError:
        raise CaseError(
            f"{path} not found: give the folder a gpt_tui.watch report wrote "
            "(it holds case.json, batch.pt and the weights)"
        ) from None
    except (OSError, ValueError) as err:
        raise CaseError(f"{path} cannot be read: {err}") from None
    if not isinstance(case, dict):
        raise CaseError(
            f"{path} holds {_kind(case)}, not a case: give a folder gpt_tui.watch wrote"
        )
    for key, required in (("checkpoint", True), ("batch", True), ("optimizer", False)):
        _inside(path, case, key, required)
    for key in ("model_file", "model_file_sha256", "summary"):
        if not isinstance(case.get(key), str | None):
            raise CaseError(f"{path}: {key!r} is {_kind(case[key])}; it must be a string")
    if not isinstance(case.get("finding", {}), dict):
        raise CaseError(f"{path}: 'finding' is {_kind(case['finding'])}; it must be an object")
    if case.get("weights") not in (None, STEP_START, AFTER_UPDATE):
        raise CaseError(
            f"{path}: 'weights' is {case['weights']!r}; it must be {STEP_START!r} or "
            f"{AFTER_UPDATE!r}"
        )
    tokenizer = case.get("tokenizer")
    if tokenizer is not None:
        if not isinstance(tokenizer, dict):
            raise CaseError(f"{path}: 'tokenizer' is {_kind(tokenizer)}; it must be an object")
        _inside(path, tokenizer, "file", required=False)
    case["folder"] = str(out)
    return case


def case_model_file(case: dict[str, Any], trust: bool) -> str | None:
    """The user's model file the case imports: only when trusted, and only if unchanged."""
    name = case.get("model_file")
    if name is None:
        return None
    if not trust:
        raise CaseError(
            f"{case['folder']}: this case imports and runs {name}; give --trust-case-code "
            "only if you trust that file"
        )
    if not Path(name).is_file():
        raise CaseError(f"{case['folder']}: its model file {name} is not there")
    want, got = case.get("model_file_sha256"), sha256_file(name)
    if want is not None and want != got:
        raise CaseError(
            f"{name} has changed since the case was written (sha256 {got[:12]}, the case "
            f"recorded {want[:12]}): refused, it would run other code than the finding's"
        )
    return name


def case_vocabulary(case: dict[str, Any]) -> str | None:
    """The case's tokenizer file (for --meta), when it recorded one."""
    tokenizer = case.get("tokenizer") or {}
    name = tokenizer.get("file")
    path = Path(case["folder"]) / name if name else None
    return str(path) if path is not None and path.is_file() else None


def case_weights(case: dict[str, Any]) -> str:
    """Which weights the case holds, in words (older cases: told by the finding's phase)."""
    finding = case.get("finding") or {}
    step = finding.get("step", "?")
    when = case.get("weights")
    if when is None:
        when = AFTER_UPDATE if finding.get("phase") == "optimizer" else STEP_START
    if finding.get("phase") == "optimizer" and when == STEP_START:
        return (
            f"the case holds the weights as they were when step {step} began, with the "
            "gradients and optimizer state the update took: the update is applied again"
        )
    if when == AFTER_UPDATE:
        return (
            f"the case holds the weights after step {step}'s update made them non-finite, "
            f"not as the step began ({NO_COPY})"
        )
    return f"the case holds the weights as they were when step {step} began"


def _same_place(saved_phase: str, saved_where: str, phase: str, where: str) -> bool:
    """Whether the step run again found what the watch found (the training step names a
    parameter's gradient or update in words, the watch names the parameter)."""
    if saved_phase == "loss":
        return phase == "loss"
    if saved_phase in ("forward", "backward"):
        return (phase, where) == (saved_phase, saved_where)
    wanted = {"gradients": "backward", "optimizer": "optimizer"}.get(saved_phase)
    return phase == wanted and (where == saved_where or where.endswith(f" {saved_where}"))


def case_mismatch(case: dict[str, Any], phase: str | None, where: str | None) -> str | None:
    """One line when the reopened step's first non-finite value (`phase` at `where`, None for
    none) is not the saved finding: both, and why they may differ; None when they agree."""
    finding = case.get("finding") or {}
    saved_phase, saved_where = finding.get("phase"), finding.get("where")
    if not isinstance(saved_phase, str) or not isinstance(saved_where, str):
        return None  # a case that names no finding: nothing to compare with
    if (
        phase is not None
        and where is not None
        and _same_place(saved_phase, saved_where, phase, where)
    ):
        return None
    found = "no non-finite value" if phase is None else f"{phase} at {where}"
    saved = f"{saved_phase} at {saved_where}"
    if isinstance(finding.get("unreplayable"), str):
        why = finding["unreplayable"]
    elif case.get("weights", AFTER_UPDATE if saved_phase == "optimizer" else None) == AFTER_UPDATE:
        why = (
            "the case holds the weights after the update that broke them, so the step run "
            "again meets them at their first use (the update itself is not replayed)"
        )
    else:
        why = "the step runs again with train-step's own optimizer (--lr, --clip) and dropout off"
        micro, steps = finding.get("micro_step"), finding.get("micro_steps")
        if isinstance(steps, int) and steps > 1:
            why += f", on micro-step {micro}'s batch alone (your loop accumulated {steps})"
        why += ", not inside your loop"
        if str(finding.get("detail", "")).startswith(FROM_OUTSIDE):
            why += ": a loss your loop took on an activation is not part of it"
    return f"the reopened step found {found}, not the saved finding ({saved}): {why}"


def case_checkpoint(case: dict[str, Any]) -> str:
    """The case's weights, found in its folder wherever the folder has moved since."""
    return str(Path(case["folder"]) / case["checkpoint"])


def _case_file(path: Path, what: str) -> Any:
    """One of the case's torch files, read as tensors and plain values only."""
    from ...io.checkpoints.reading import CheckpointError, torch_load

    if not path.is_file():
        raise CaseError(f"{path} not found: the case's {what} is missing")
    try:
        return torch_load(path)
    except CheckpointError as err:
        raise CaseError(f"the case's {what}: {err}") from None


def case_batch(case: dict[str, Any], context: int | None = None) -> list[torch.Tensor]:
    """The saved step's inputs (token ids, then targets), plain tensors on the CPU, checked
    to be two (B, T) integer tensors of T <= `context`."""
    path = Path(case["folder"]) / case["batch"]
    data = _case_file(path, "batch")
    inputs = data.get("inputs") if isinstance(data, dict) else None
    if not isinstance(inputs, list) or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise CaseError(
            f"{path} holds {_kind(data)}, not a case's batch ({{'inputs': [ids, targets]}})"
        )
    if len(inputs) < 2:
        raise CaseError(
            f"{path}: the saved batch has no targets: your loop called the model on its inputs "
            "alone (its loss computed outside the model), and a step run again needs "
            "model(x, y)"
        )
    x, y = inputs[:2]
    if x.dim() != 2 or x.shape != y.shape or x.is_floating_point() or y.is_floating_point():
        raise CaseError(
            f"{path}: inputs {tuple(x.shape)} {x.dtype} and targets {tuple(y.shape)} "
            f"{y.dtype} must both be (B, T) token ids"
        )
    if context is not None and x.shape[1] > context:
        raise CaseError(
            f"{path}: the saved rows have {x.shape[1]} tokens, more than the model's context "
            f"of {context}: not this model's batch"
        )
    return inputs


def _update_inputs(case: dict[str, Any]) -> tuple[type, list[list[str]], dict, dict]:
    """The case's optimizer class (one of torch.optim's: no other code runs), its groups by
    parameter name, its state and the gradients, checked."""
    update = case.get("update")
    out = Path(case["folder"])
    name = update.get("optimizer_class") if isinstance(update, dict) else None
    cls = getattr(torch.optim, name, None) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise CaseError(
            f"{out}: its optimizer {name!r} is not one of torch.optim's, so its update "
            "cannot be applied again here"
        )
    groups = update.get("groups")
    if not (isinstance(groups, list) and all(isinstance(g, list) for g in groups)):
        raise CaseError(f"{out}: 'update' names no parameter groups: not a case watch wrote")
    _inside(out / CASE_FILE, update, "grads")
    grads = _case_file(out / update["grads"], "gradients")
    grads = grads.get("grads") if isinstance(grads, dict) else None
    if not isinstance(grads, dict) or not all(isinstance(g, torch.Tensor) for g in grads.values()):
        raise CaseError(f"{out / update['grads']} holds no gradients by parameter name")
    state = (
        _case_file(out / case["optimizer"], "optimizer state") if case.get("optimizer") else None
    )
    if not isinstance(state, dict):
        raise CaseError(f"{out}: the case has no optimizer state to apply the update with")
    return cls, groups, state, grads


def replay_update(case: dict[str, Any], model: torch.nn.Module) -> Finding | None:
    """An optimizer case holding the weights from before the update: the update applied
    again, with the case's optimizer (class, settings and state) and gradients, under a
    watch; the finding it gets. The model's weights are put back after."""
    from .snapshot import restored

    cls, groups, state, grads = _update_inputs(case)
    params = dict(model.named_parameters())
    missing = sorted({n for g in groups for n in g} - set(params))
    if missing:
        raise CaseError(f"{case['folder']}: the case's optimizer steps {missing[0]}, which "
                        "this model does not have")  # fmt: skip
    found: list[Finding] = []
    with torch.inference_mode(False), restored(model, False, None):
        optimizer = cls([{"params": [params[n] for n in g]} for g in groups])
        try:
            optimizer.load_state_dict(state)
        except (ValueError, KeyError, RuntimeError) as err:
            raise CaseError(f"{case['folder']}: its optimizer state does not load: {err}") from None
        for n, p in params.items():
            p.grad = grads[n].to(p.device, p.dtype) if n in grads else None
        watch = Watch(model, lambda f, _: found.append(f), optimizer=optimizer, distributed=False)
        try:
            optimizer.step()
        finally:
            watch.close()
    return found[0] if found else None


def _counting_optimizer(
    case: dict[str, Any], model: torch.nn.Module
) -> torch.optim.Optimizer | None:
    """An optimizer for the replay's watch, which numbers the step from its state; it never
    steps. AdamW over the case's groups of parameters by name (a case written before the
    names were kept: the model's parameters in order, cut to the state's group sizes), so
    a state of several groups (nanoGPT's decay and no-decay) loads."""
    if not case.get("optimizer"):
        return None
    out = Path(case["folder"])
    state = _case_file(out / case["optimizer"], "optimizer state")
    saved = state.get("param_groups") if isinstance(state, dict) else None
    if not isinstance(saved, list) or not all(isinstance(g, dict) for g in saved):
        raise CaseError(f"{out / case['optimizer']} holds no optimizer state")
    params = dict(model.named_parameters())
    names = case.get("optimizer_groups")
    if isinstance(names, list) and all(isinstance(g, list) for g in names):
        missing = sorted({n for g in names for n in g} - set(params))
        if missing:
            raise CaseError(f"{out}: the case's optimizer holds {missing[0] or 'a parameter'}"
                            ", which this model does not have")  # fmt: skip
        groups = [[params[n] for n in g] for g in names]
    else:
        order, groups = list(params.values()), []
        for g in saved:
            size = len(g.get("params", []))
            groups, order = groups + [order[:size]], order[size:]
    try:
        optimizer = torch.optim.AdamW([{"params": g} for g in groups])
        optimizer.load_state_dict(state)
    except (ValueError, KeyError, RuntimeError) as err:
        raise CaseError(f"{out}: its optimizer state does not load: {err}") from None
    return optimizer


def replay_case(
    folder: str | Path, device: str = "cpu", *, trust_code: bool = False
) -> tuple[Finding | None, Session]:
    """Open the case's model and run its step again under a watch (and the update, for an
    optimizer case that holds the weights from before it): the finding it gets (the saved
    one, when the case reproduces) and the session, for the caller to close.
    A case that names a model file runs it only with `trust_code`."""
    from ..core.session import ModelSpec, Session

    case = read_case(folder)
    spec = ModelSpec(
        checkpoint=case_checkpoint(case),
        model_file=case_model_file(case, trust_code),
        meta=case_vocabulary(case),
        device=device,
    )
    session = Session.open(spec)
    try:
        inputs = [t.to(session.device) for t in case_batch(case, session.context_len)]
    except BaseException:
        session.close()
        raise
    model = session.model
    try:
        optimizer = _counting_optimizer(case, model)
    except BaseException:
        session.close()
        raise
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
    if not found and case.get("update") and case.get("weights") == STEP_START:
        try:  # an optimizer case holding the weights from before its update: apply it again
            found = [f for f in [replay_update(case, model)] if f is not None]
        except BaseException:
            session.close()
            raise
    return (found[0] if found else None), session
