"""Writing checkpoints in the upstream formats, atomically.

Every file goes to a temporary file in the same folder, is flushed and fsynced, then
renamed over the target (`os.replace`, atomic on POSIX), and the folder is fsynced so the
rename itself survives a crash. A reader (or a kill at any moment) sees the old file or
the new one, never a half-written one. A nanochat save writes the new step's files before
it removes the old step's, so a complete checkpoint exists at every moment.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

from ...models.config import config_to_dict
from ..nanochat_eras import EXTRAS_KEY, split_model_config
from ..tokenizers import CharTokenizer
from .nanochat import NANOCHAT_MODEL


def _file_mode() -> int:
    """What open() would give a new file under the current umask (mkstemp gives 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temps(path: Path) -> None:
    """Temp files a killed save of `path` left behind (one writer per folder assumed)."""
    for stale in path.parent.glob(f"{_temp_prefix(path)}*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[IO[bytes]]:
    """Open a temp file beside `path` for binary writing; on a clean exit it replaces `path`.

    On an exception the temp file is removed and `path` is untouched.
    """
    path = Path(path)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_write(path) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _write_if_changed(path: Path, data: bytes) -> None:
    """The vocabulary is the same at every save of a run: rewrite it only when it differs."""
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    atomic_write_bytes(path, data)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    with atomic_write(path) as f:
        torch.save(obj, f)


def save_nanogpt_checkpoint(
    out_dir: str | Path,
    model: torch.nn.Module,
    *,
    iter_num: int,
    best_val_loss: float,
    train_config: dict[str, Any] | None = None,
    tokenizer: CharTokenizer | None = None,
    compiled_prefix: bool = False,
) -> Path:
    """Write `ckpt.pt` as nanoGPT's train.py does (and `meta.pkl` for a char vocabulary).

    `compiled_prefix` writes keys as a torch.compile'd model would (`_orig_mod.` prefix).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = "_orig_mod." if compiled_prefix else ""
    state = {prefix + k: v.detach().cpu() for k, v in model.state_dict().items()}
    ckpt = {
        "model": state,
        "model_args": config_to_dict(model.config),
        "iter_num": iter_num,
        "best_val_loss": float(best_val_loss),
        "config": dict(train_config or {}),
    }
    if tokenizer is not None:  # before the weights: a ckpt.pt never lacks its vocabulary
        _write_if_changed(out / "meta.pkl", pickle.dumps(tokenizer.to_meta()))
    path = out / "ckpt.pt"
    atomic_torch_save(ckpt, path)
    return path


def save_nanochat_checkpoint(
    out_dir: str | Path,
    model: torch.nn.Module,
    *,
    step: int,
    extra_meta: dict[str, Any] | None = None,
    tokenizer: CharTokenizer | None = None,
    keep_old: bool = True,
) -> Path:
    """Write `model_<step>.pt` and `meta_<step>.json` as nanochat's checkpoint manager does.

    The meta file goes first and the weights last, so the newest `model_<step>.pt` always
    has its meta. With `keep_old=False` other steps' model/meta files are removed, but
    only once the new ones are complete. A char vocabulary is stored as `tokenizer.json`
    (plain JSON, nothing to unpickle).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None:
        _write_if_changed(out / "tokenizer.json", json.dumps(tokenizer.to_json()).encode())
    meta: dict[str, Any] = {"step": step}
    if model.config.family == "nanochat":  # nanochat's GPTConfig(**model_config) builds it
        meta["model_config"], meta[EXTRAS_KEY] = split_model_config(model.config)
    else:
        meta["model_config"] = config_to_dict(model.config)
    meta.update(extra_meta or {})
    atomic_write_text(out / f"meta_{step:06d}.json", json.dumps(meta, indent=2))
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    path = out / f"model_{step:06d}.pt"
    atomic_torch_save(state, path)
    if not keep_old:
        remove_other_steps(out, step)
    return path


def remove_other_steps(out: Path, step: int) -> None:
    """Remove the model/meta files of steps other than `step`; weights first, so no
    model file is ever left without its meta."""
    for old in out.glob("model_*.pt"):
        m = NANOCHAT_MODEL.fullmatch(old.name)
        if m and int(m.group(1)) != step:
            old.unlink(missing_ok=True)
    for old in out.glob("meta_*.json"):
        if old.name != f"meta_{step:06d}.json":
            old.unlink(missing_ok=True)
    fsync_dir(out)
