"""The reproducible case a watched run saves at its first non-finite value.

Each finding gets its own folder inside the report folder, `REPORT/step3-forward-h.1.mlp`
(numbered `.2`, `.3` when the name is taken), and `REPORT/latest` names the newest. A case
is written whole into a fresh `.writing-*` folder beside it and renamed into place, so a
reader (or a kill at any moment) sees one finding's set or none. The folder holds:
- the weights: `ckpt.pt` in nanoGPT's format (our nanoGPT family and models from the
  user's own file) or nanochat's `model_<step>.pt` + `meta_<step>.json` (our nanochat
  family), as they were when the step began; for an optimizer finding, as the update left
  them, unless the watch copied them before it (watch_update.py); case.json's "weights"
  says which;
- `batch.pt`: the step's inputs (token ids, targets), as plain tensors;
- `optimizer.pt`: the optimizer's state, when the watch was given one (from before the
  update when the weights are);
- `grads.pt`: the gradients the update took, when the weights are from before it;
- `tokenizer.json`: the char vocabulary, when the run's meta.pkl (or tokenizer) was given
  or found;
- `case.json`: the finding, how to open the case, and the sha256 of the user's model file
  (a case runs that file only with `--trust-case-code`, and only if it is unchanged);
- `README.md`: the same for a person, with the exact command.
Nothing in it needs a pickle of a class to load: `torch.load(weights_only=True)` reads all.
Reading a case back, as untrusted input, is watch_case.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import math
import os
import re
import shlex
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from ...errors import GptTuiError
from ...io.checkpoints.save import atomic_torch_save, atomic_write_text, fsync_dir
from ..core.model_access import unwrap_model
from .watch import Finding
from .watch_case import (
    AFTER_UPDATE,
    CASE_FILE,
    GRADS_FILE,
    LATEST,
    NO_COPY,
    STEP_START,
    TOKENIZER_FILE,
    sha256_file,
)
from .watch_update import BeforeUpdate, group_names

if TYPE_CHECKING:
    from typing import TypeAlias

    from ...io.tokenizers import CharTokenizer

    Vocabulary: TypeAlias = str | Path | CharTokenizer | None  # a meta.pkl, or the tokenizer

_WRITING = ".writing-"


@dataclasses.dataclass(frozen=True)
class CaseWritten:
    """What `write_case` did: the case's folder and the command that opens it, or why it
    could not be written."""

    path: Path | None
    error: str | None
    command: str | None = None


def _model_args(config: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    return {k: v for k, v in vars(config).items() if not k.startswith("_")}


def _user_file(model: nn.Module) -> str | None:
    """The file of the model's class, when it is not one of our families."""
    from ... import models

    try:
        path = Path(inspect.getfile(type(model))).resolve()
    except (TypeError, OSError):
        return None
    ours = Path(models.__file__).resolve().parent
    return None if path.parent == ours else str(path)


def _save_weights(folder: Path, model: nn.Module, step: int) -> str:
    from ...io.checkpoints.save import save_nanochat_checkpoint, save_nanogpt_checkpoint
    from ...models.nanochat import GPT as NanochatGPT
    from ...models.nanogpt import GPT as NanoGPT

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


def _vocab_size(model: nn.Module) -> int | None:
    size = getattr(getattr(model, "config", None), "vocab_size", None)
    return size if isinstance(size, int) else None


def _find_meta(model: nn.Module) -> Path | None:
    """nanoGPT's train.py reads `data/<dataset>/meta.pkl` from its working folder: the one
    there whose vocabulary has the model's size, when exactly one has."""
    from ...io.batches import read_meta

    size = _vocab_size(model)
    fits = []
    for path in sorted(Path("data").glob("*/meta.pkl")):
        with contextlib.suppress(GptTuiError, OSError):
            if read_meta(path).vocab_size == size:
                fits.append(path)
    return fits[0].resolve() if len(fits) == 1 else None


def run_tokenizer(model: nn.Module, meta: Vocabulary) -> CharTokenizer | None:
    """The run's char vocabulary: `meta` as given to watch, or the `data/*/meta.pkl` nanoGPT's
    train.py would read; None when there is none (or it cannot be read)."""
    return _vocabulary(model, meta)[0]


def _vocabulary(model: nn.Module, meta: Vocabulary) -> tuple[CharTokenizer | None, dict]:
    """The run's char vocabulary and where it came from, for case.json."""
    from ...io.batches import read_meta
    from ...io.tokenizers import CharTokenizer

    if isinstance(meta, CharTokenizer):
        return meta, {"file": TOKENIZER_FILE, "source": "given to gpt_tui.watch"}
    path = Path(meta).resolve() if meta is not None else _find_meta(model)
    if path is None:
        return None, {}
    try:
        tokenizer = read_meta(path)
    except (GptTuiError, OSError) as err:
        return None, {"source": str(path), "note": f"not recorded: {err}"}
    return tokenizer, {"file": TOKENIZER_FILE, "source": str(path), "sha256": sha256_file(path)}


def _folder_name(finding: Finding) -> str:
    where = re.sub(r"[^\w.-]+", "_", finding.where).strip("._")[:60] or "model"
    return f"step{finding.step}-{finding.phase}-{where.removeprefix('transformer.')}"


@contextlib.contextmanager
def _weights_before(model: nn.Module, before: BeforeUpdate | None) -> Iterator[None]:
    """The model holding the weights copied before the update, for as long as it is saved
    (the tensors are swapped, not copied), then its own again."""
    named = [(n, p) for n, p in model.named_parameters() if before and n in before.weights]
    own = [p.data for _, p in named]
    try:
        for n, p in named:
            p.data = before.weights[n]  # type: ignore[union-attr]
        yield
    finally:
        for (_, p), data in zip(named, own, strict=True):
            p.data = data


def _fill(
    out: Path,
    model: nn.Module,
    finding: Finding,
    batch: tuple[Any, ...],
    optimizer: torch.optim.Optimizer | None,
    meta: Vocabulary,
    before: BeforeUpdate | None,
) -> dict[str, Any]:
    """Write the case's files, case.json aside, into `out`; returns case.json's fields."""
    model = unwrap_model(model)
    tensors = [t.detach().cpu() for t in batch if isinstance(t, torch.Tensor)]
    atomic_torch_save({"inputs": tensors}, out / "batch.pt")
    if optimizer is not None:
        state = before.optimizer_state if before is not None else optimizer.state_dict()
        atomic_torch_save(state, out / "optimizer.pt")
    update = None
    if before is not None:
        grads = {n: g.cpu() for n, g in before.grads.items()}
        atomic_torch_save({"grads": grads}, out / GRADS_FILE)
        update = {
            "grads": GRADS_FILE,
            "optimizer_class": before.optimizer_class,
            "groups": before.groups,
        }
    tokenizer, vocabulary = _vocabulary(model, meta)
    if tokenizer is not None:
        atomic_write_text(out / TOKENIZER_FILE, json.dumps(tokenizer.to_json()) + "\n")
    with _weights_before(model, before):
        checkpoint = _save_weights(out, model, finding.step)
    user_file = _user_file(model)
    after = finding.phase == "optimizer" and before is None
    return {
        "finding": dataclasses.asdict(finding),
        "summary": finding.summary,
        "weights": AFTER_UPDATE if after else STEP_START,
        "update": update,
        "checkpoint": Path(checkpoint).name if checkpoint != str(out) else ".",
        "model_file": user_file,
        "model_file_sha256": sha256_file(user_file) if user_file else None,
        "model_class": type(model).__name__,
        "batch": "batch.pt",
        "optimizer": "optimizer.pt" if optimizer is not None else None,
        "optimizer_groups": group_names(model, optimizer) if optimizer is not None else None,
        "tokenizer": vocabulary or None,
        "note": finding.unreplayable,  # why the case cannot reproduce its finding
    }


def _describe(out: Path, final: Path, case: dict[str, Any], finding: Finding) -> str:
    """case.json and README.md, naming the folder the case is about to be renamed to;
    returns the command that opens it."""
    case = {**case, "folder": str(final)}
    case["finding"] = {**case["finding"], "report": str(final)}
    command = "gpt-tui train-step --case " + shlex.quote(str(final))
    if case["model_file"]:
        command += " --trust-case-code"
    case["command"] = command
    case["finding"]["command"] = command
    atomic_write_text(out / CASE_FILE, json.dumps(case, indent=2) + "\n")
    if case["weights"] == AFTER_UPDATE:
        when = f"the weights as the update left them (`{case['checkpoint']}`; not as the step "
        when += f"began: {NO_COPY})"
        opening = (
            "Open this case (it runs a step on the weights the update broke, so it finds "
            "where they are first used, not the update itself):"
        )
    else:
        when = f"the weights as they were when the step began (`{case['checkpoint']}`)"
        opening = "Open this case on the same finding:"
        if case["update"]:
            opening = "Open this case on the same finding (it applies the update again):"
    if finding.unreplayable:
        opening = (
            f"This case cannot reproduce its finding: {finding.unreplayable}. Open it on the "
            "step's weights and batch:"
        )
    trust = (
        f"\n`--trust-case-code` imports your model file, `{case['model_file']}`: give it only "
        "for a case whose file you trust (the case refuses a file changed since).\n"
        if case["model_file"]
        else ""
    )
    after = ", after the update" if case["weights"] == AFTER_UPDATE else ""
    optim = f"the optimizer's state (`optimizer.pt`{after}), " if case["optimizer"] else ""
    if case["update"]:
        optim += f"the gradients the update took (`{GRADS_FILE}`), "
    if (case["tokenizer"] or {}).get("file"):
        optim += f"the vocabulary (`{TOKENIZER_FILE}`), "
    readme = f"""# gpt-tui report: a non-finite value at step {finding.step}

{finding.summary.split("; case saved")[0]}.

{opening}

    {command}
{trust}
The folder holds {when}, the step's batch
(`batch.pt`), {optim}and `{CASE_FILE}`. Every file loads with
`torch.load(..., weights_only=True)`.
"""
    atomic_write_text(out / "README.md", readme)
    return command


def _remove_abandoned(root: Path) -> None:
    """Temp folders of writers on this host that were killed mid-write (their process is
    gone); another host's, or a live process's, are left alone."""
    host = socket.gethostname()
    for folder in root.glob(f"{_WRITING}{host}-*-*"):
        pid = folder.name.removeprefix(f"{_WRITING}{host}-").split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass  # alive under another user: not ours to judge


def write_case(
    folder: str | Path,
    model: nn.Module,
    finding: Finding,
    batch: tuple[Any, ...],
    optimizer: torch.optim.Optimizer | None = None,
    *,
    meta: Vocabulary = None,
    before: BeforeUpdate | None = None,
) -> CaseWritten:
    """Write the finding's case as a new folder inside the report folder `folder` and
    point `latest` at it. Never raises for a file-system failure: the result holds the
    case's folder, or the error as one line (the caller still reports the finding).
    `meta` is the char vocabulary (a meta.pkl's path, or a `CharTokenizer`); without it,
    the `data/*/meta.pkl` nanoGPT's train.py would read is used when one fits."""
    root = Path(folder)
    tmp: Path | None = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(root)
        prefix = f"{_WRITING}{socket.gethostname()}-{os.getpid()}-"
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
        case = _fill(tmp, model, finding, batch, optimizer, meta, before)
        base = _folder_name(finding)
        for n in range(1, 10_000):
            final = root / (base if n == 1 else f"{base}.{n}")
            if final.exists():
                continue
            command = _describe(tmp, final, case, finding)
            fsync_dir(tmp)
            try:
                tmp.rename(final)  # atomic; fails if another writer took the name
            except OSError:
                if not final.exists():
                    raise
                continue
            tmp = None
            fsync_dir(root)
            atomic_write_text(root / LATEST, final.name + "\n")
            return CaseWritten(final, None, command)
        raise OSError(f"no free case name {base}.N left")
    except (OSError, RuntimeError) as err:  # torch.save reports a failed write as RuntimeError
        reason = getattr(err, "strerror", None) or str(err).splitlines()[0]
        where = getattr(err, "filename", None) or root
        return CaseWritten(None, f"the case could not be written to {where}: {reason}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
