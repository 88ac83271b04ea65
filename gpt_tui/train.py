"""A tiny char-level trainer that makes the sample models from a text file.

AdamW with linear warmup and cosine decay, gradient clipping, periodic validation loss,
deterministic for a seed and resumable: batches are drawn from a generator seeded by
(seed, step), so a resumed run sees the same batches as an uninterrupted one.
Output is in the upstream formats (nanoGPT ckpt.pt + meta.pkl, nanochat model/meta files),
so the samples go through the same loaders as users' checkpoints. The optimizer state is
kept in a separate `optim_<step>.pt`, which the shipped samples leave out to stay small.
Saves are atomic (see io/checkpoints/save.py): a kill never loses the last checkpoint.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import GptTuiError
from .io.checkpoints import save_nanochat_checkpoint, save_nanogpt_checkpoint
from .io.checkpoints.nanochat import latest_model_file
from .io.checkpoints.save import atomic_torch_save
from .io.paths import check_file, check_out_folder
from .io.tokenizers import CharTokenizer
from .models import build_model, make_config
from .models.config import config_to_dict


class TrainResumeError(GptTuiError):
    """--out holds a checkpoint of another model, which this run cannot resume."""


class TrainDataError(GptTuiError):
    """The text cannot train a model of this context; the message says how much is needed."""


@dataclass
class TrainSettings:
    data: str
    arch: str = "nanogpt"
    preset: str | None = "mini"  # None: the family's bare defaults (GPT-2 sized for nanogpt)
    overrides: dict[str, Any] | None = None
    steps: int = 2000
    out: str = "out"
    seed: int = 1337
    device: str = "cpu"
    batch_size: int = 32
    learning_rate: float = 2e-3
    min_lr: float = 2e-4
    warmup_steps: int = 200
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_iters: int = 20


def split_data(text: str, tokenizer: CharTokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Train on the first 90%, validate on the last 10%, as nanoGPT's prepare.py does."""
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    n = int(0.9 * len(ids))
    return ids[:n], ids[n:]


def get_batch(
    data: torch.Tensor, batch_size: int, block: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    starts = torch.randint(len(data) - block - 1, (batch_size,), generator=generator)
    x = torch.stack([data[i : i + block] for i in starts.tolist()])  # (B, T)
    y = torch.stack([data[i + 1 : i + 1 + block] for i in starts.tolist()])  # (B, T)
    return x, y


def learning_rate(step: int, s: TrainSettings) -> float:
    """Linear warmup (at most a tenth of the run), then cosine decay to `min_lr`."""
    warmup = min(s.warmup_steps, max(1, s.steps // 10))
    if step < warmup:
        return s.learning_rate * (step + 1) / warmup
    progress = (step - warmup) / max(1, s.steps - warmup)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return s.min_lr + cosine * (s.learning_rate - s.min_lr)


@torch.no_grad()
def estimate_loss(model, data: torch.Tensor, s: TrainSettings, block: int) -> float:
    model.eval()
    gen = torch.Generator().manual_seed(s.seed + 10**6)  # the same val batches every time
    losses = []
    for _ in range(s.eval_iters):
        x, y = get_batch(data, s.batch_size, block, gen)
        _, loss = model(x.to(s.device), y.to(s.device))
        losses.append(loss.item())
    model.train()
    return sum(losses) / len(losses)


def _optim_file(out: Path, step: int) -> Path:
    return out / f"optim_{step:06d}.pt"


def _save(model, s: TrainSettings, tokenizer, step: int, best_val: float, optimizer) -> None:
    """Save atomically, newest first: the optimizer state for `step`, then the model, and
    only then remove the older step's files. A kill at any moment leaves a loadable
    checkpoint, and the optimizer state of its step beside it."""
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    state = {"optimizer": optimizer.state_dict(), "step": step, "best_val_loss": best_val}
    atomic_torch_save(state, _optim_file(out, step))
    if model.config.family == "nanogpt":
        save_nanogpt_checkpoint(
            out,
            model,
            iter_num=step,
            best_val_loss=best_val,
            train_config=asdict(s),
            tokenizer=tokenizer,
        )
    else:
        save_nanochat_checkpoint(
            out,
            model,
            step=step,
            tokenizer=tokenizer,
            extra_meta={"val_loss": best_val, "train_config": asdict(s)},
            keep_old=False,
        )
    for old in out.glob("optim_*.pt"):
        if old != _optim_file(out, step):
            old.unlink(missing_ok=True)


@dataclass
class _Saved:
    """What a previous run left in --out: the weights, the optimizer state of their step,
    and the model config and settings that run recorded."""

    state: dict
    optim: dict
    step: int
    model_config: dict
    settings: dict


def _resume_state(s: TrainSettings) -> _Saved | None:
    """The saved model state dict and the optimizer state of the same step, if a previous
    run left them; a checkpoint without its optimizer state is not resumed (None)."""
    out = Path(s.out)
    if (out / "ckpt.pt").exists():
        ckpt = torch.load(out / "ckpt.pt", map_location="cpu", weights_only=True)
        state, step = ckpt["model"], ckpt["iter_num"]
        model_config, settings = ckpt.get("model_args", {}), ckpt.get("config", {})
    else:
        latest = latest_model_file(out) if out.is_dir() else None
        if latest is None:
            return None
        state = torch.load(latest, map_location="cpu", weights_only=True)
        step = int(latest.stem.removeprefix("model_"))
        meta_path = out / f"meta_{step:06d}.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        model_config, settings = meta.get("model_config", {}), meta.get("train_config", {})
    for optim_path in (_optim_file(out, step), out / "optim.pt"):  # optim.pt: older versions
        if optim_path.exists():
            optim = torch.load(optim_path, map_location="cpu", weights_only=True)
            if optim["step"] == step:
                return _Saved(state, optim, step, dict(model_config), dict(settings or {}))
    return None


def _check_fits(model: torch.nn.Module, saved: _Saved, s: TrainSettings) -> None:
    """A checkpoint of another model in --out is one line naming it and the way out,
    not a state-dict error."""
    mine = model.state_dict()
    if set(mine) == set(saved.state) and all(mine[k].shape == saved.state[k].shape for k in mine):
        return
    then = saved.settings
    now = config_to_dict(model.config)
    changed = [
        f"{k}={saved.model_config[k]} (not {now[k]})"
        for k in now
        if k in saved.model_config and saved.model_config[k] != now[k]
    ]
    kind = " ".join(filter(None, [then.get("preset"), then.get("arch")])) or "another model's"
    at = f"step {saved.step}" + (f": {', '.join(changed)}" if changed else "")
    if changed and all(c.startswith("vocab_size=") for c in changed):  # another text
        fix = f"use the same --data ({then.get('data', 'the text it was trained on')})"
    else:
        flags = [f"--config {then['preset']}"] if then.get("preset") else []
        flags += [f"--arch {then['arch']}"] if then.get("arch", s.arch) != s.arch else []
        flags += [f"--set {k}={v}" for k, v in (then.get("overrides") or {}).items()]
        fix = "use " + (" ".join(flags) or "the --config and --set it was trained with")
    raise TrainResumeError(
        f"{s.out} holds a {kind} checkpoint ({at}); {fix} to resume it, or another --out"
    )


def train(
    s: TrainSettings,
    progress: bool = True,
    stop_at: int | None = None,
    on_save: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Train (or resume) and return the final train/val losses (each estimated over
    `eval_iters` batches), the wall time, the last step and the step resumed from.

    `stop_at` ends the run early after that step, saved, as an interruption would: running
    again with the same settings resumes it. Ctrl-C saves the last finished step too.
    `on_save(step)` is called after each save is complete on disk.
    """
    check_out_folder(s.out)  # before any work: a file there would fail at the first save
    try:
        text = check_file(s.data, "--data", "a text file").read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TrainDataError(f"--data {s.data} is not UTF-8 text: give a text file") from None
    except OSError as err:  # unreadable (permissions, a device): what the system says
        raise TrainDataError(f"--data {s.data}: {err.strerror or err}") from None
    if not text:
        raise TrainDataError(f"--data {s.data} is empty: give a text file to train on")
    tokenizer = CharTokenizer.from_text(text)
    overrides = {**(s.overrides or {}), "vocab_size": tokenizer.vocab_size}
    config = make_config(s.preset, s.arch, overrides)
    model = build_model(config, s.device, seed=s.seed)
    model.train()
    train_data, val_data = split_data(text, tokenizer)
    block = config.context_len
    short = min(len(train_data), len(val_data))
    if short < block + 2:
        field = "sequence_len" if hasattr(config, "sequence_len") else "block_size"
        raise TrainDataError(
            f"--data {s.data} is too short to train a context of {block}: its validation "
            f"split (the last 10%) has {len(val_data)} characters and each split needs "
            f"{block + 2}; give at least {(block + 2) * 10:,} characters of text (or --set "
            f"{field}=N smaller)"
        )
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": s.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=s.learning_rate,
        betas=(0.9, 0.99),
    )
    start_step, best_val, planned = 0, float("inf"), 0
    saved = _resume_state(s)
    if saved is not None:
        _check_fits(model, saved, s)
        model.load_state_dict(saved.state)
        optimizer.load_state_dict(saved.optim["optimizer"])
        start_step, best_val = saved.optim["step"], saved.optim["best_val_loss"]
        planned = int(saved.settings.get("steps") or 0)  # the --steps it was started with

    def save(step: int) -> None:
        _save(model, s, tokenizer, step, best_val, optimizer)
        if on_save is not None:
            on_save(step)

    t0 = time.time()
    tokens_per_step = s.batch_size * block
    train_loss = float("nan")
    bar = _progress(progress)
    done = start_step
    with bar:
        if start_step < s.steps:  # before the first step, which can take long: never looks hung
            line = _describe(s, config, model, start_step)
            bar.console.print(line, markup=False, highlight=False, soft_wrap=True)
        task = bar.add_task(
            "training", total=s.steps, completed=start_step, loss=float("nan"), tps=0.0
        )
        try:
            for step in range(start_step, s.steps):
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(step, s)
                gen = torch.Generator().manual_seed(s.seed * 1_000_003 + step)
                x, y = get_batch(train_data, s.batch_size, block, gen)
                _, loss = model(x.to(s.device), y.to(s.device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
                optimizer.step()
                train_loss = loss.item()
                done = step + 1
                if done % s.eval_interval == 0 or done == s.steps:
                    val = estimate_loss(model, val_data, s, block)
                    best_val = min(best_val, val)
                    bar.console.print(
                        f"step {done}: batch loss {train_loss:.4f}, val loss {val:.4f} "
                        f"(estimated over {s.eval_iters} batches)"
                    )
                    save(done)
                elapsed = max(time.time() - t0, 1e-9)
                tps = (done - start_step) * tokens_per_step / elapsed
                bar.update(task, completed=done, loss=train_loss, tps=tps)
                if stop_at is not None and done >= stop_at:
                    break
        except KeyboardInterrupt:
            bar.console.print(f"interrupted: saved step {done}; run again to resume")
            save(done)
            raise
    if done % s.eval_interval and done != s.steps:
        save(done)
    final_train = estimate_loss(model, train_data, s, block)
    final_val = estimate_loss(model, val_data, s, block)
    return {
        "train_loss": final_train,
        "val_loss": final_val,
        "seconds": time.time() - t0,
        "steps": s.steps,
        "start_step": start_step,  # where this run resumed (0: from scratch)
        "planned_steps": planned,  # the resumed run's own --steps (0: from scratch, unknown)
        "eval_batches": s.eval_iters,  # the final losses' estimate: the mean of so many
    }


def _describe(s: TrainSettings, config, model: torch.nn.Module, start_step: int) -> str:
    """One line: the preset, family, size, context, batch and device, and the steps."""
    what = " ".join(filter(None, [s.preset, config.family]))
    if s.overrides:
        what += " with " + ", ".join(f"{k}={v}" for k, v in s.overrides.items())
    n_params = sum(p.numel() for p in model.parameters())
    many = f"{s.steps:,} step" + ("s" if s.steps != 1 else "")
    steps = f"steps {start_step} → {s.steps}" if start_step else many
    return (
        f"training {what}: {n_params:,} parameters, context {config.context_len}, "
        f"batch {s.batch_size}, on {s.device}; {steps} -> {s.out}"
    )


def _progress(enabled: bool):
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("batch loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[tps]:,.0f} tok/s"),
        TimeRemainingColumn(),
        disable=not enabled,
    )
