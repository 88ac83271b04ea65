"""The `gpt-tui` command: the inspector app, and non-interactive commands for scripts.

    gpt-tui [model args]                 open the inspector
    gpt-tui configs                      list the presets
    gpt-tui summary [model args]         module tree and parameter table
    gpt-tui samples                      list the shipped sample models
    gpt-tui train --data FILE ...        train a small char-level model

Model args (shared by every command that opens a model): --config, --arch, --set,
--checkpoint, --meta, --sample, --model-file, --model-class, --config-class, --device,
--dtype, --seed. Every user error prints one line on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

EXIT_USAGE = 2


class UserError(Exception):
    """A problem with what the user asked for; printed as one line, exit status 2."""


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model")
    g.add_argument("--config", metavar="PRESET", help="build a random-init model from a preset")
    g.add_argument(
        "--arch", choices=["nanogpt", "nanochat"], help="family, where a preset fits both"
    )
    g.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (repeatable)",
    )
    g.add_argument("--checkpoint", metavar="PATH", help="a nanoGPT / nanochat / GPT-2 checkpoint")
    g.add_argument("--meta", metavar="PATH", help="nanoGPT meta.pkl with the char vocabulary")
    g.add_argument("--sample", metavar="NAME", help="a shipped sample model (gpt-tui samples)")
    g.add_argument("--model-file", metavar="PATH.py", help="your own model.py / gpt.py")
    g.add_argument("--model-class", metavar="NAME", help="model class in --model-file")
    g.add_argument("--config-class", metavar="NAME", help="config class in --model-file")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps | meta")
    g.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    g.add_argument("--seed", type=int, default=0, help="seed for random init and sampling")


def _spec(args: argparse.Namespace):
    from .engine.session import ModelSpec

    return ModelSpec(
        config=args.config,
        arch=args.arch,
        overrides=list(args.overrides),
        checkpoint=args.checkpoint,
        meta=args.meta,
        sample=args.sample,
        model_file=args.model_file,
        model_class=args.model_class,
        config_class=args.config_class,
        device=args.device,
        dtype=args.dtype,
        seed=args.seed,
    )


def _open_session(args: argparse.Namespace):
    from .engine.session import Session

    return Session.open(_spec(args))


def _console():
    from rich.console import Console

    return Console(highlight=False)


def _print_json(data: Any) -> None:
    from .engine.trace import to_jsonable

    json.dump(to_jsonable(data), sys.stdout, indent=2)
    sys.stdout.write("\n")


def _fmt_count(n: int) -> str:
    return f"{n:,}"


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


# -- commands -----------------------------------------------------------------------------


def cmd_configs(args: argparse.Namespace) -> int:
    from rich.table import Table

    from .models import PRESETS, build_model, make_config

    rows = []
    for preset in PRESETS.values():
        for family in preset.families:
            config = make_config(preset.name, family)
            model = build_model(config, "meta", seed=None)
            rows.append(
                dict(
                    preset=preset.name,
                    family=family,
                    n_layer=config.n_layer,
                    n_head=config.n_head,
                    n_kv_head=config.n_kv_head,
                    n_embd=config.n_embd,
                    context=config.context_len,
                    vocab=config.vocab_size,
                    params=sum(p.numel() for p in model.parameters()),
                    description=preset.description,
                )
            )
    if args.json:
        _print_json(rows)
        return 0
    table = Table(title="Presets (--config NAME, --arch FAMILY where a preset fits both)")
    for col in ("preset", "family", "n_layer", "n_head", "n_kv_head", "n_embd", "context", "vocab"):
        table.add_column(col, justify="left" if col in ("preset", "family") else "right")
    table.add_column("params", justify="right")
    table.add_column("description")
    for r in rows:
        table.add_row(
            *(str(r[c]) for c in ("preset", "family", "n_layer", "n_head", "n_kv_head")),
            str(r["n_embd"]),
            str(r["context"]),
            str(r["vocab"]),
            _fmt_count(r["params"]),
            r["description"],
        )
    _console().print(table)
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from rich.table import Table
    from rich.tree import Tree

    session = _open_session(args)
    summary = session.summary()
    if args.json:
        _print_json(
            dict(
                name=session.name,
                source=session.source,
                family=summary.family,
                class_name=summary.class_name,
                device=str(session.device),
                dtype=str(session.dtype).removeprefix("torch."),
                config=summary.config,
                total_params=summary.total_params,
                non_embedding_params=summary.non_embedding_params,
                total_bytes=summary.total_bytes,
                block_params=summary.block_params,
                parameters=summary.parameters,
                modules=[n for n in summary.modules.values() if n.depth <= args.depth],
            )
        )
        return 0
    console = _console()
    root_node = summary.modules[""]
    tree = Tree(f"[bold]{root_node.name}[/]  {_fmt_count(root_node.params)} params")

    def add(branch, path: str) -> None:
        for child in summary.modules[path].children:
            node = summary.modules[child]
            if node.depth > args.depth:
                continue
            label = f"{node.name} [dim]{node.class_name}[/]"
            if node.params:
                label += f"  {_fmt_count(node.params)}"
            add(branch.add(label), child)

    add(tree, "")
    console.print(tree)
    table = Table(title="Parameters")
    for col, just in [
        ("name", "left"),
        ("shape", "left"),
        ("numel", "right"),
        ("dtype", "left"),
        ("device", "left"),
        ("grad", "left"),
        ("tied with", "left"),
    ]:
        table.add_column(col, justify=just)
    current_block: int | None = None
    for row in summary.parameters:
        if row.block != current_block and current_block is not None:
            table.add_row(
                f"[dim]block {current_block} subtotal[/]",
                "",
                f"[dim]{_fmt_count(summary.block_params[current_block])}[/]",
                end_section=True,
            )
        current_block = row.block
        table.add_row(
            row.name,
            "×".join(map(str, row.shape)),
            _fmt_count(row.numel),
            row.dtype,
            row.device,
            "yes" if row.requires_grad else "no",
            row.tied_with or "",
        )
    console.print(table)
    console.print(
        f"[bold]{session.name}[/] ({summary.family}, {session.source}) on {session.device}: "
        f"{_fmt_count(summary.total_params)} parameters (tied weights once), "
        f"{_fmt_count(summary.non_embedding_params)} without position embeddings, "
        f"{_fmt_bytes(summary.total_bytes)}"
    )
    return 0


def cmd_samples(args: argparse.Namespace) -> int:
    from .engine.session import DEFAULT_SAMPLE, list_samples

    samples = list_samples()
    if args.json:
        _print_json([dict(name=p.name, path=str(p)) for p in samples])
        return 0
    if not samples:
        print("no sample models are installed")
        return 0
    for p in samples:
        readme = p / "README.md"
        first = readme.read_text().splitlines()[0].lstrip("# ") if readme.exists() else ""
        mark = " (default)" if p.name == DEFAULT_SAMPLE else ""
        print(f"{p.name}{mark}: {first}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .models.config import parse_overrides
    from .train import TrainSettings, train

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
    print(
        f"trained {result['steps']} steps in {result['seconds']:.0f} s: "
        f"train loss {result['train_loss']:.4f}, val loss {result['val_loss']:.4f} -> {args.out}"
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.progress import Progress

    from .engine.evaluate import evaluate, split_text

    session = _open_session(args)
    if session.device.type == "meta":
        raise UserError("eval needs real weights; --device meta has none (use cpu or cuda)")
    try:
        text = Path(args.data).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{args.data} is not UTF-8 text") from None
    part = split_text(text, args.split)
    ids = session.encode(part)
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
        _print_json(
            dict(model=session.name, source=session.source, data=args.data, **result.__dict__)
        )
    else:
        print(
            f"{session.name} on {args.data} ({args.split}, {result.tokens:,} tokens, "
            f"{result.windows} windows of {context}): loss {result.loss:.4f} nats/token, "
            f"{result.bits_per_char:.4f} bits/char"
        )
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    from .ui.app import GptTuiApp

    app = GptTuiApp(_spec(args))
    app.run()
    return app.return_code or 0


# -- parser -------------------------------------------------------------------------------


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    main = argparse.ArgumentParser(
        prog="gpt-tui",
        description="A terminal inspector and debugger for nanoGPT and nanochat GPT models. "
        "With no command, opens the inspector.",
        epilog="commands: configs, summary, samples, eval, train (gpt-tui COMMAND --help)",
    )
    _add_model_args(main)
    main.set_defaults(func=cmd_app)
    subs: dict[str, argparse.ArgumentParser] = {}

    def sub(name: str, func: Callable, help_text: str, model: bool = True):
        p = argparse.ArgumentParser(prog=f"gpt-tui {name}", description=help_text)
        if model:
            _add_model_args(p)
        p.set_defaults(func=func)
        subs[name] = p
        return p

    p = sub("configs", cmd_configs, "List the presets with their sizes.", model=False)
    p.add_argument("--json", action="store_true")
    p = sub("summary", cmd_summary, "Module tree and parameter table of a model.")
    p.add_argument("--depth", type=int, default=3, help="module tree depth (default 3)")
    p.add_argument("--json", action="store_true")
    p = sub("samples", cmd_samples, "List the shipped sample models.", model=False)
    p.add_argument("--json", action="store_true")
    p = sub("eval", cmd_eval, "Mean loss of a model over a text file, in context windows.")
    p.add_argument("--data", required=True, help="a UTF-8 text file")
    p.add_argument(
        "--split",
        choices=["val", "train", "all"],
        default="val",
        help="last 10%% (val), first 90%% (train) or all of the text",
    )
    p.add_argument("--json", action="store_true")
    p = sub("train", cmd_train, "Train a small char-level model on a text file.", model=False)
    p.add_argument("--data", required=True, help="a UTF-8 text file")
    p.add_argument("--arch", choices=["nanogpt", "nanochat"])
    p.add_argument("--config", metavar="PRESET")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--eval-interval", type=int, default=250)
    return main, subs


def run(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    main_parser, subs = build_parser()
    if argv and argv[0] in subs:
        args = subs[argv[0]].parse_args(argv[1:])
    else:
        args = main_parser.parse_args(argv)
    from .engine.session import SessionError
    from .io.checkpoints import CheckpointError
    from .io.tokenizers import TokenizerError
    from .models.config import ConfigError

    try:
        return args.func(args)
    except (ConfigError, SessionError, CheckpointError, TokenizerError, UserError) as err:
        print(f"gpt-tui: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as err:
        print(f"gpt-tui: error: {err.strerror}: {err.filename}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def main() -> None:
    sys.exit(run())
