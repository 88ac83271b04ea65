"""`gpt-tui train-step`: one training step laid open, then the health of N steps."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import render
from .common import open_session, require_weights

if TYPE_CHECKING:
    from ..engine.core.trace import TensorStats
    from ..engine.training.health import Health, HealthStep
    from ..engine.training.intents import TrainingView
    from ..io.batches import BatchView

TOP_PARAMS = 12  # rows of the gradient table in text output
TEXT_WIDTH = 56  # characters of a decoded row shown in text output


def add_train_step_args(p: argparse.ArgumentParser, whole: Callable, real: Callable) -> None:
    """The command's arguments; `whole` and `real` are the parser's checked number types.
    The model arguments' --seed seeds the batches too; --dtype is the autocast dtype."""
    p.add_argument("--data", metavar="FILE", help="a text file or a nanoGPT train.bin / val.bin")
    p.add_argument("--split", choices=["all", "val"], default="all", help="of a text file")
    p.add_argument("--prompt", help="the batch when there is no --data (default: the model's)")
    p.add_argument("--batch", type=whole(1), default=4, help="rows (default 4)")
    p.add_argument("--block", type=whole(1), default=64, help="tokens per row (default 64)")
    p.add_argument("--lr", type=real(0, above=True), default=1e-3, help="default 1e-3")
    p.add_argument("--weight-decay", type=real(0), default=0.1)
    p.add_argument("--beta1", type=real(0, high=1), default=0.9)
    p.add_argument("--beta2", type=real(0, high=1), default=0.95)
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    p.add_argument("--clip", type=real(0), default=1.0, help="max grad norm, 0 = off")
    p.add_argument("--watch-nan", action="store_true", help="stop at the first NaN/Inf")
    p.add_argument("--inject-nan", metavar="MODULE", help="NaN into MODULE's forward output")
    p.add_argument(
        "--inject-grad-nan", metavar="MODULE", help="NaN into MODULE's grad_input in backward"
    )
    p.add_argument("--steps", type=whole(1), default=1, help="health over N steps (default 1)")
    p.add_argument("--keep", action="store_true", help="keep the updated weights (in memory)")
    p.add_argument(
        "--case",
        metavar="DIR",
        help="a report gpt_tui.watch saved: its weights, model file and batch, watched",
    )
    p.add_argument(
        "--trust-case-code",
        action="store_true",
        help="let --case import the model file it names (it runs that file's code)",
    )
    p.add_argument("--json", action="store_true")


def _open_case(args: argparse.Namespace) -> dict[str, Any]:
    """Point the model arguments at the case's model; its batch comes after opening."""
    from ..engine.training.watch_case import (
        case_checkpoint,
        case_model_file,
        case_vocabulary,
        read_case,
    )
    from ..engine.training.watch_ranks import resolve_case_dir
    from .common import UserError

    if args.checkpoint or args.config or args.sample or args.model_file or args.data:
        raise UserError(
            "--case opens the model and the batch it saved: drop --checkpoint, --config, "
            "--sample, --model-file and --data"
        )
    folder, note = resolve_case_dir(args.case)  # a multi-rank report: the first rank's case
    if note:
        print(f"gpt-tui: {note}", file=sys.stderr)
    case = read_case(folder)
    args.checkpoint = case_checkpoint(case)
    args.model_file = case_model_file(case, args.trust_case_code)
    args.meta = args.meta or case_vocabulary(case)
    args.watch_nan = True
    return case


def _vocabulary_note(case: dict[str, Any], args: argparse.Namespace) -> str | None:
    """Why the case's batch may read as garbage: no vocabulary recorded and none given."""
    if args.meta:
        return None
    return (
        "the case records no vocabulary: its batch is decoded with the model's default "
        "tokenizer; give --meta data/<dataset>/meta.pkl to read a char-level batch"
    )


def cmd_train_step(args: argparse.Namespace) -> int:
    from ..engine.debugger import Debugger
    from ..engine.training.step import StepOptions, autocast_dtype

    autocast = None if args.dtype == "float32" else args.dtype
    autocast_dtype(autocast)
    case = _open_case(args) if args.case else None
    # --dtype is the autocast dtype here: the weights stay float32, as in mixed precision.
    session = open_session(argparse.Namespace(**{**vars(args), "dtype": "float32"}))
    debugger = Debugger(session, seed=args.seed)
    try:
        require_weights(session, "train-step")
        if args.prompt is not None:
            debugger.set_prompt(args.prompt)
        opts = StepOptions(
            lr=args.lr,
            betas=(args.beta1, args.beta2),
            weight_decay=args.weight_decay,
            optimizer=args.optimizer,
            clip=args.clip or None,
            dtype=autocast,
            watch_nan=args.watch_nan,
            inject_nan=args.inject_nan,
            inject_grad_nan=args.inject_grad_nan,
        )
        data = args.data if case is None else _case_batch(case, session)
        debugger.set_batch(
            data, batch=args.batch, block=args.block, seed=args.seed, split=args.split,
            options=opts,
        )  # fmt: skip
        context = session.context_len
        notes: list[str | None] = []
        if case is None and context is not None and args.block > context:
            notes.append(f"--block {args.block} cropped to the model's context of {context}")
        if case is not None:
            notes.append(_vocabulary_note(case, args))
        view = debugger.train_step("continue").training
        assert view is not None and view.report is not None
        done: list[HealthStep] = []
        interrupted = False
        try:  # the step's report streams out first; Ctrl-C keeps the steps taken so far
            if not args.json:
                if case is not None:
                    print(f"the saved case: {case.get('summary', case['folder'])}")
                for note in filter(None, notes):
                    render.console().print(f"[yellow]note:[/] {note}", highlight=False)
                print_report(view)
                sys.stdout.flush()
            if args.keep:
                from dataclasses import replace

                debugger.set_training_options(replace(opts, keep=True))
            progress = _Progress(args.steps, done)
            health = debugger.train_health(args.steps, progress=progress).training
            progress.end()
            assert health is not None and health.health is not None
            result = health.health
        except KeyboardInterrupt:
            from ..engine.training.health import Health

            result, interrupted = Health(tuple(done), (), None), True
    finally:
        debugger.close()
    if args.json:
        data = step_json(view, result)
        if case is not None:
            data["case"] = case.get("finding")
        render.print_json({**data, "notes": list(filter(None, notes)), "interrupted": interrupted})
    else:
        print_health(result)
    if interrupted:
        print(f"gpt-tui: interrupted after {render.plural(len(done), 'step')}", file=sys.stderr)
        return 130
    return 0


class _Progress:
    """Collects the health steps as they come; on a terminal, says how far it is."""

    def __init__(self, total: int, done: list[HealthStep]) -> None:
        self.total, self.done = total, done
        self.tty = total > 1 and sys.stderr.isatty()

    def __call__(self, step: HealthStep) -> None:
        self.done.append(step)
        if self.tty:
            print(f"\rhealth: step {len(self.done)} of {self.total}", end="", file=sys.stderr)

    def end(self) -> None:
        if self.tty:
            print("\r\033[K", end="", file=sys.stderr)


def _case_batch(case: dict[str, Any], session: Any) -> Any:
    from ..engine.training.watch_case import case_batch
    from ..io.batches import FixedBatch

    inputs = case_batch(case, session.context_len)
    return FixedBatch(inputs[0], inputs[1], session.decode_token, f"the case in {case['folder']}")


def _stats(s: TensorStats | None) -> dict[str, Any] | None:
    if s is None:
        return None
    finite = s.numel - s.nan_count - s.inf_count
    return dict(norm=s.rms * math.sqrt(finite) if finite else math.nan, nan=s.nan_count,
                inf=s.inf_count)  # fmt: skip


def step_json(view: TrainingView, health: Health) -> dict[str, Any]:
    report, batch = view.report, view.batch
    assert report is not None and batch is not None
    hit = report.first_nonfinite
    return dict(
        batch=dict(
            rows=len(batch.rows),
            block=batch.block,
            source=batch.source,
            seed=batch.seed,
            ignored_targets=batch.ignored_targets,
            decoded=[
                dict(
                    offset=r.offset,
                    input="".join(r.input_text),
                    target="".join(r.target_text),
                    input_ids=r.input_ids,
                    target_ids=r.target_ids,
                    ignored=r.ignored,
                )
                for r in batch.rows
            ],
        ),  # fmt: skip
        loss=report.loss,
        row_losses=report.row_losses,
        loss_note=report.loss_note,
        first_nonfinite=None if hit is None else dict(phase=hit.phase, where=hit.where),
        phases=report.phases_run,
        backward=[
            dict(name=e.name, grad_output=_stats(e.grad_output), grad_input=_stats(e.grad_input))
            for e in report.backward
        ],
        grads=[dict(name=p.name, norm=p.grad_norm) for p in report.params],
        grad_norm=report.grad_norm,
        grad_norm_clipped=report.grad_norm_clipped,
        updates=[dict(name=p.name, ratio=p.update_ratio) for p in report.params],
        steps=[
            dict(
                step=s.step,
                loss=s.loss,
                grad_norm=s.grad_norm,
                max_update_ratio=s.max_update_ratio,
                nonfinite=s.nonfinite,
                tokens_per_s=s.tokens_per_s,
                layer_ratios=dict(s.layer_ratios),
                memory=dict(s.memory),
            )
            for s in health.steps
        ],  # fmt: skip
        flags=health.flags,
        stopped=None
        if health.stopped is None
        else dict(
            step=health.stopped_step, phase=health.stopped.phase, where=health.stopped.where
        ),  # fmt: skip
    )


def _clip(text: str, width: int = TEXT_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def batch_lines(batch: BatchView, rows: int = 4) -> list[str]:
    """Each row's input over its target, one character per token when they fit."""
    lines = [
        f"batch: {len(batch.rows)} × {batch.block} tokens from {batch.source} "
        f"(seed {batch.seed}) · {render.plural(batch.ignored_targets, 'ignored target')}"
    ]
    for i, r in enumerate(batch.rows[:rows]):
        at = f"@{r.offset}" if r.offset is not None else ""
        pieces = list(zip(r.input_text, r.target_text, strict=True))
        width = [max(len(a), len(b)) for a, b in pieces]
        top = "".join(a.ljust(w) for (a, _), w in zip(pieces, width, strict=True))
        bottom = "".join(b.ljust(w) for (_, b), w in zip(pieces, width, strict=True))
        lines.append(f"  row {i} {at:<8} in  {_clip(top)}")
        lines.append(f"  {'':14} out {_clip(bottom)}")
        if r.ignored:
            lines.append(f"  {'':14} {r.ignored} ignored")
    if len(batch.rows) > rows:
        lines.append(f"  ... {len(batch.rows) - rows} more rows (--json has them all)")
    return lines


def print_report(view: TrainingView) -> None:
    """The step laid open: its batch, loss, backward, gradients and updates."""
    report, batch = view.report, view.batch
    assert report is not None and batch is not None
    console = render.console()
    for line in batch_lines(batch):
        console.print(line, markup=False, highlight=False)
    rows = " ".join(f"{x:.3f}" for x in report.row_losses[:6])
    more = " …" if len(report.row_losses) > 6 else ""
    console.print(f"loss {report.loss:.4f}  (per row {rows}{more})", markup=False)
    if report.loss_note:
        console.print(f"  {report.loss_note}", markup=False, style="yellow")
    hit = report.first_nonfinite
    console.print(
        "first non-finite: " + ("none" if hit is None else f"{hit.phase} at {hit.where}"),
        markup=False, style="bold red" if hit else None,
    )  # fmt: skip
    console.print(f"phases run: {' → '.join(report.phases_run)}", markup=False)
    back = render.table("backward, in the order autograd ran it")
    for col in ("module", "‖grad out‖", "‖grad in‖", "NaN/Inf in"):
        back.add_column(col, justify="left" if col == "module" else "right")
    for e in report.backward:
        go, gi = _stats(e.grad_output), _stats(e.grad_input)
        back.add_row(
            e.name,
            render.fmt_stat(go["norm"]) if go else "—",
            render.fmt_stat(gi["norm"]) if gi else "— (ids)",
            str(gi["nan"] + gi["inf"]) if gi else "",
        )
    if report.backward:
        console.print(back)
    if report.params:
        grads = render.table(f"gradients, largest {min(TOP_PARAMS, len(report.params))}")
        for col in ("parameter", "‖grad‖", "‖param‖", "‖Δw‖/‖w‖"):
            grads.add_column(col, justify="left" if col == "parameter" else "right")
        top = sorted(report.params, key=lambda p: -p.grad_norm if math.isfinite(p.grad_norm)
                     else -math.inf)[:TOP_PARAMS]  # fmt: skip
        for p in top:
            ratio = "—" if p.update_ratio is None else f"{p.update_ratio:.1e}"
            grads.add_row(p.name, render.fmt_stat(p.grad_norm), render.fmt_stat(p.param_norm),
                          ratio)  # fmt: skip
        console.print(grads)
        console.print(
            f"global grad norm {report.grad_norm:.4g} → {report.grad_norm_clipped:.4g} after "
            f"clipping · weights {'kept' if report.kept else 'put back'}",
            markup=False,
        )
    if report.scaler:
        console.print(report.scaler, markup=False)


def print_health(health: Health) -> None:
    console = render.console()
    steps = render.table(f"health over {render.plural(len(health.steps), 'step')}")
    for col in ("step", "loss", "grad norm", "max Δw/w", "NaN/Inf", "tok/s", "memory"):
        steps.add_column(col, justify="right")
    for s in health.steps:
        memory = " ".join(render.fmt_count(v // 2**20) + "M" for _, v in s.memory)
        steps.add_row(str(s.step), f"{s.loss:.4f}", render.fmt_stat(s.grad_norm),
                      f"{s.max_update_ratio:.1e}", str(s.nonfinite), f"{s.tokens_per_s:,.0f}",
                      memory)  # fmt: skip
    console.print(steps)
    for flag in health.flags:
        console.print(f"flag: {flag}", markup=False, style="yellow")
    if health.stopped is not None:
        console.print(
            f"stopped at step {health.stopped_step}: non-finite in {health.stopped.phase} "
            f"at {health.stopped.where}",
            markup=False,
        )
