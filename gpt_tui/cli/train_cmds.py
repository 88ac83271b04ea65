"""`gpt-tui train-step`: one training step laid open, then the health of N steps."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import render
from .common import json_notes, open_session, require_weights
from .train_render import print_health, print_report, step_json

if TYPE_CHECKING:
    from ..engine.training.health import HealthStep


def add_train_step_args(p: argparse.ArgumentParser, whole: Callable, real: Callable) -> None:
    """The command's arguments; `whole` and `real` are the parser's checked number types.
    The model arguments' --seed seeds the batches too; --dtype is the autocast dtype."""
    for action in p._actions:
        if "--dtype" in action.option_strings:
            action.help = (
                "autocast dtype of the step: float32 | bfloat16 | float16 (weights stay float32)"
            )
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


def _case_notes(case: dict[str, Any], hit: Any) -> str | None:
    """The line saying the reopened step (or update) found something else than the saved
    finding."""
    from ..engine.training.watch_case import case_mismatch

    return case_mismatch(case, *((None, None) if hit is None else (hit.phase, hit.where)))


def _replay_update(case: dict[str, Any] | None, session: Any) -> tuple[str, Any] | None:
    """An optimizer case that holds the weights from before its update: that update applied
    again, in words, and its finding."""
    from ..engine.training.watch_case import STEP_START, replay_update

    if case is None or not case.get("update") or case.get("weights") != STEP_START:
        return None
    found = replay_update(case, session.model)
    what = "no non-finite value" if found is None else f"{found.phase} at {found.where}"
    if found is not None:
        what += f" ({found.detail})"
    name = case["update"].get("optimizer_class")
    return f"the update applied again (the case's {name}, its state and gradients): {what}", found


def cmd_train_step(args: argparse.Namespace) -> int:
    from ..engine.debugger import Debugger
    from ..engine.training.step import StepOptions, autocast_dtype
    from ..engine.training.watch_case import case_weights

    autocast = None if args.dtype == "float32" else args.dtype
    autocast_dtype(autocast)
    case = _open_case(args) if args.case else None
    # --dtype is the autocast dtype here: the weights stay float32, as in mixed precision.
    # A case says itself how it reads its batch (its tokenizer, or why none).
    as_float32 = argparse.Namespace(**{**vars(args), "dtype": "float32"})
    session = open_session(as_float32, reads_text=case is None)
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
        update = _replay_update(case, session)
        view = debugger.train_step("continue").training
        assert view is not None and view.report is not None
        if case is not None:
            hit = update[1] if update is not None else view.report.first_nonfinite
            notes.append(_case_notes(case, hit))
        done: list[HealthStep] = []
        interrupted = False
        try:  # the step's report streams out first; Ctrl-C keeps the steps taken so far
            if not args.json:
                if case is not None:
                    print(f"the saved case: {case.get('summary', case['folder'])}")
                    print(case_weights(case))
                    if update is not None:
                        print(update[0])
                for note in filter(None, notes):
                    # one line each, as grep and tail see it: the terminal wraps it
                    render.console().print(
                        f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True
                    )
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
            data["case_weights"] = case_weights(case)
            found = update[1] if update is not None else None
            data["case_update"] = None if update is None else {
                "text": update[0],
                "finding": None if found is None else {"phase": found.phase, "where": found.where},
            }  # fmt: skip
        render.print_json({**data, "notes": json_notes(session, notes), "interrupted": interrupted})
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
