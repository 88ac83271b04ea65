"""Commands over a text file: eval and train."""

from __future__ import annotations

import argparse
import sys

from ..io.paths import check_file
from ..io.tokenizers import TokenizerError
from . import render
from .common import UserError, open_session, require_weights

SPLIT_WORDS = {"val": "the last 10%", "train": "the first 90%", "all": "all"}


def read_text(path: str) -> str:
    try:
        return check_file(path, "--data", "a text file").read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"--data {path} is not UTF-8 text") from None
    except OSError as err:
        raise UserError(f"--data {path}: {err.strerror or err}") from None


def cmd_eval(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from ..engine.analysis.evaluate import evaluate, split_text

    text = read_text(args.data)
    session = open_session(args)
    require_weights(session, "eval")
    part = split_text(text, args.split)
    try:
        ids = session.encode(part)
    except TokenizerError as err:  # the tokenizer knows the text, not the file it came from
        raise UserError(f"--data {args.data}: {err}") from None
    if len(ids) < 2:
        fix = "use --split all or a longer file" if args.split != "all" else "use a longer file"
        raise UserError(
            f"--data {args.data}: {SPLIT_WORDS[args.split]} of its "
            f"{render.plural(len(text), 'character')} is {render.plural(len(ids), 'token')}; "
            f"eval needs at least 2 ({fix})"
        )
    context = session.context_len or 256
    # Every token but the first is scored, so that is the share of characters scored.
    characters = round(len(part) * (len(ids) - 1) / max(1, len(ids)))
    with Progress(disable=args.json or not sys.stderr.isatty(), transient=True) as bar:
        task = bar.add_task(f"eval {args.split}", total=None)
        result = evaluate(
            session.model,
            ids,
            context,
            session.device,
            split=args.split,
            characters=characters,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if args.json:
        render.print_json(
            dict(
                model=session.name,
                source=session.source,
                data=args.data,
                **result.__dict__,
                tokenizer_note=session.tokenizer_note or None,  # also said on stderr
            )
        )
    else:
        # A terminal wraps a long path at its width; piped, each line stays whole.
        render.console().print(
            f"{session.name} on {args.data} ({args.split}, "
            f"{render.plural(result.tokens, 'token')}, "
            f"{render.plural(result.windows, 'window')} of {context}):\n"
            f"  loss {result.loss:.4f} nats/token, {result.bits_per_char:.4f} bits/char",
            markup=False,
            soft_wrap=not render.is_terminal(),
        )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from ..models.config import parse_overrides
    from ..train import TrainSettings, train

    settings = TrainSettings(
        data=args.data,
        arch=args.arch or "nanogpt",
        preset=args.config,
        overrides=parse_overrides(args.overrides),
        steps=args.steps,
        out=args.out,
        seed=args.seed,
        device=args.device,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        eval_interval=args.eval_interval,
    )
    result = train(settings, progress=sys.stderr.isatty())
    start, end = int(result["start_step"]), int(result["steps"])
    if start >= end:
        done = f"trained no steps: {args.out} is at step {start} already (--steps {end})"
    else:
        done = f"trained {render.plural(end - start, 'step')}"
        done += f" ({start} → {end})" if start else ""
        done += f" in {result['seconds']:.0f} s"
        planned = int(result.get("planned_steps", 0))
        if start and planned and planned != end:  # learning_rate() spans --steps
            print(
                f"note: the learning rate now warms up and decays over {end} steps; the run "
                f"began with --steps {planned}"
            )
    print(
        f"{done}: train loss {result['train_loss']:.4f}, val loss {result['val_loss']:.4f} "
        f"(each estimated over {int(result['eval_batches'])} batches) -> {args.out}"
    )
    return 0
