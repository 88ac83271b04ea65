"""The reproducible case a watched run saves at its first non-finite value.

Each finding gets its own folder inside the report folder, `REPORT/step3-forward-h.1.mlp`
(numbered `.2`, `.3` when the name is taken), and `REPORT/latest` names the newest. A case
is written whole into a fresh `.writing-*` folder beside it and renamed into place, so a
reader (or a kill at any moment) sees one finding's set or none. The folder holds:
- the weights as they were when the step began: `ckpt.pt` in nanoGPT's format (our
  nanoGPT family and models from the user's own file) or nanochat's `model_<step>.pt` +
  `meta_<step>.json` (our nanochat family);
- `batch.pt`: the step's inputs (token ids, targets), as plain tensors;
- `optimizer.pt`: the optimizer's state, when the watch was given one;
- `tokenizer.json`: the char vocabulary, when the run's meta.pkl (or tokenizer) was given
  or found;
- `case.json`: the finding, how to open the case, and the sha256 of the user's model file
  (a case runs that file only with `--trust-case-code`, and only if it is unchanged);
- `README.md`: the same for a person, with the exact command.
Nothing in it needs a pickle of a class to load: `torch.load(weights_only=True)` reads all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import math
import os
import re
import shlex
import shutil
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from ..errors import GptTuiError
from ..io.checkpoints.save import atomic_torch_save, atomic_write_text, fsync_dir
from .probes import unwrap_model
from .watch import Finding, Watch

if TYPE_CHECKING:
    from typing import TypeAlias

    from ..io.tokenizers import CharTokenizer
    from .session import Session

    Vocabulary: TypeAlias = str | Path | CharTokenizer | None  # a meta.pkl, or the tokenizer

CASE_FILE = "case.json"
LATEST = "latest"  # a text file in the report folder: the newest case's folder name
TOKENIZER_FILE = "tokenizer.json"
_WRITING = ".writing-"


class CaseError(GptTuiError, ValueError):
    """A report folder that cannot be reopened; the message says why."""


@dataclasses.dataclass(frozen=True)
class CaseWritten:
    """What `write_case` did: the case's folder, or why it could not be written."""

    path: Path | None
    error: str | None


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def _vocab_size(model: nn.Module) -> int | None:
    size = getattr(getattr(model, "config", None), "vocab_size", None)
    return size if isinstance(size, int) else None


def _find_meta(model: nn.Module) -> Path | None:
    """nanoGPT's train.py reads `data/<dataset>/meta.pkl` from its working folder: the one
    there whose vocabulary has the model's size, when exactly one has."""
    from ..io.batches import read_meta

    size = _vocab_size(model)
    fits = []
    for path in sorted(Path("data").glob("*/meta.pkl")):
        with contextlib.suppress(GptTuiError, OSError):
            if read_meta(path).vocab_size == size:
                fits.append(path)
    return fits[0].resolve() if len(fits) == 1 else None


def _vocabulary(model: nn.Module, meta: Vocabulary) -> tuple[CharTokenizer | None, dict]:
    """The run's char vocabulary and where it came from, for case.json."""
    from ..io.batches import read_meta
    from ..io.tokenizers import CharTokenizer

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


def _fill(
    out: Path,
    model: nn.Module,
    finding: Finding,
    batch: tuple[Any, ...],
    optimizer: torch.optim.Optimizer | None,
    meta: Vocabulary,
) -> dict[str, Any]:
    """Write the case's files, case.json aside, into `out`; returns case.json's fields."""
    model = unwrap_model(model)
    tensors = [t.detach().cpu() for t in batch if isinstance(t, torch.Tensor)]
    atomic_torch_save({"inputs": tensors}, out / "batch.pt")
    if optimizer is not None:
        atomic_torch_save(optimizer.state_dict(), out / "optimizer.pt")
    tokenizer, vocabulary = _vocabulary(model, meta)
    if tokenizer is not None:
        atomic_write_text(out / TOKENIZER_FILE, json.dumps(tokenizer.to_json()) + "\n")
    checkpoint = _save_weights(out, model, finding.step)
    user_file = _user_file(model)
    return {
        "finding": dataclasses.asdict(finding),
        "summary": finding.summary,
        "checkpoint": Path(checkpoint).name if checkpoint != str(out) else ".",
        "model_file": user_file,
        "model_file_sha256": sha256_file(user_file) if user_file else None,
        "model_class": type(model).__name__,
        "batch": "batch.pt",
        "optimizer": "optimizer.pt" if optimizer is not None else None,
        "tokenizer": vocabulary or None,
    }


def _describe(out: Path, final: Path, case: dict[str, Any], finding: Finding) -> None:
    """case.json and README.md, naming the folder the case is about to be renamed to."""
    case = {**case, "folder": str(final)}
    case["finding"] = {**case["finding"], "report": str(final)}
    command = "gpt-tui train-step --case " + shlex.quote(str(final))
    if case["model_file"]:
        command += " --trust-case-code"
    case["command"] = command
    atomic_write_text(out / CASE_FILE, json.dumps(case, indent=2) + "\n")
    when = (
        "the weights just after the update that made them non-finite"
        if finding.phase == "optimizer"
        else "the weights as they were when the step began"
    )
    trust = (
        f"\n`--trust-case-code` imports your model file, `{case['model_file']}`: give it only "
        "for a case whose file you trust (the case refuses a file changed since).\n"
        if case["model_file"]
        else ""
    )
    optim = "the optimizer's state (`optimizer.pt`), " if case["optimizer"] else ""
    if (case["tokenizer"] or {}).get("file"):
        optim += f"the vocabulary (`{TOKENIZER_FILE}`), "
    readme = f"""# gpt-tui report: a non-finite value at step {finding.step}

{finding.summary.split("; case saved")[0]}.

Open this case on the same finding:

    {command}
{trust}
The folder holds {when} (`{case["checkpoint"]}`), the step's batch
(`batch.pt`), {optim}and `{CASE_FILE}`. Every file loads with
`torch.load(..., weights_only=True)`.
"""
    atomic_write_text(out / "README.md", readme)


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
        case = _fill(tmp, model, finding, batch, optimizer, meta)
        base = _folder_name(finding)
        for n in range(1, 10_000):
            final = root / (base if n == 1 else f"{base}.{n}")
            if final.exists():
                continue
            _describe(tmp, final, case, finding)
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
            return CaseWritten(final, None)
        raise OSError(f"no free case name {base}.N left")
    except (OSError, RuntimeError) as err:  # torch.save reports a failed write as RuntimeError
        reason = getattr(err, "strerror", None) or str(err).splitlines()[0]
        where = getattr(err, "filename", None) or root
        return CaseWritten(None, f"the case could not be written to {where}: {reason}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


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


def case_checkpoint(case: dict[str, Any]) -> str:
    """The case's weights, found in its folder wherever the folder has moved since."""
    return str(Path(case["folder"]) / case["checkpoint"])


def _case_file(path: Path, what: str) -> Any:
    """One of the case's torch files, read as tensors and plain values only."""
    from ..io.checkpoints.reading import CheckpointError, torch_load

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
        raise CaseError(f"{path}: the saved batch has no targets (model(x, y) takes two)")
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


def replay_case(
    folder: str | Path, device: str = "cpu", *, trust_code: bool = False
) -> tuple[Finding | None, Session]:
    """Open the case's model and run its step again under a watch: the finding it gets
    (the saved one, when the case reproduces) and the session, for the caller to close.
    A case that names a model file runs it only with `trust_code`."""
    from .session import ModelSpec, Session

    case = read_case(folder)
    out = Path(case["folder"])
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
    optimizer = None
    if case.get("optimizer"):
        optimizer = torch.optim.AdamW(model.parameters())
        optimizer.load_state_dict(_case_file(out / case["optimizer"], "optimizer state"))
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
