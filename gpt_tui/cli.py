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
import fnmatch
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .errors import GptTuiError
from .formatting import nbytes

EXIT_USAGE = 2


class UserError(GptTuiError):
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

    # Piped output is for reading in files and scripts: wide enough that names never wrap.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def _table(title: str | None = None) -> Any:
    """A rich table: light rules on a terminal, plain aligned columns when piped."""
    from rich import box
    from rich.table import Table

    style = box.SIMPLE_HEAD if sys.stdout.isatty() else None
    return Table(title=title, box=style, pad_edge=False, show_edge=False)


def _narrow() -> bool:
    """An 80-column terminal: tables drop the less used columns and the common prefix."""
    return sys.stdout.isatty() and _console().width < 120


def _print_json(data: Any) -> None:
    from .engine.trace import to_jsonable

    json.dump(to_jsonable(data), sys.stdout, indent=2)
    sys.stdout.write("\n")


def _fmt_count(n: int) -> str:
    return f"{n:,}"


# -- commands -----------------------------------------------------------------------------


def cmd_configs(args: argparse.Namespace) -> int:

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
    table = _table("Presets (--config NAME, --arch FAMILY where a preset fits both)")
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
    table = _table("Parameters")
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
    left_out = "wte" if summary.family == "nanochat" else "wpe; the tied wte is the head"
    console.print(
        f"[bold]{session.name}[/] ({summary.family}, {session.source}) on {session.device}: "
        f"{_fmt_count(summary.total_params)} parameters (tied weights once), "
        f"{_fmt_count(summary.non_embedding_params)} without embedding tables ({left_out}), "
        f"{nbytes(summary.total_bytes)}"
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
        first = first.removeprefix(f"{p.name}: ")  # the heading repeats the name
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
    _require_weights(session, "eval")
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


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt", required=True, help="text to start from")
    p.add_argument("--steps", type=int, default=50, help="tokens to generate (default 50)")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default 1.0)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--candidates", type=int, default=5, help="candidates shown per step")
    p.add_argument("--json", action="store_true")


def _require_weights(session, what: str) -> None:
    if session.device.type == "meta":
        raise UserError(f"{what} needs real weights; --device meta has none (use cpu or cuda)")


def cmd_generate(args: argparse.Namespace) -> int:

    from .engine.sampling import GenerationError, generate_steps

    session = _open_session(args)
    _require_weights(session, "generate")
    if args.steps < 0:
        raise UserError(f"--steps {args.steps}: must be 0 or more")
    try:
        steps = generate_steps(
            session.model,
            session.tokenizer,
            args.prompt,
            args.steps,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=args.seed,
        )
    except GenerationError as err:
        raise UserError(str(err)) from None
    text = args.prompt + session.decode([s.token_id for s in steps])
    if args.json:
        _print_json(dict(model=session.name, prompt=args.prompt, steps=steps, text=text))
        return 0
    console = _console()
    table = _table(f"Generation from {session.name} (seed {args.seed})")
    for col, just in [
        ("step", "right"),
        ("token", "left"),
        ("prob", "right"),
        ("top candidates", "left"),
        ("kv cache", "right"),
    ]:
        table.add_column(col, justify=just)
    for s in steps:
        cands = "  ".join(f"'{c.label}' {c.prob:.2f}" for c in s.candidates[: args.candidates])
        fill = f"{s.cache_fill[0]}/{s.cache_fill[1]}" if s.cache_fill else "-"
        table.add_row(str(s.index), s.token_label, f"{s.token_prob:.3f}", cands, fill)
    console.print(table)
    notes = {s.note for s in steps if s.note}
    for note in sorted(notes):
        console.print(f"[yellow]note:[/] {note}")
    console.rule("text")
    console.print(text, markup=False)
    return 0


def _fmt_stat(x: float) -> str:
    """At most 8 characters: 0.0481, -3.9e-04, 1.23e+05."""
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.1e}"
    return f"{x:.3g}"


def _stats_table(title: str, records) -> Any:
    """Probe records in execution order; on a narrow terminal the columns that answer
    "what shape?" and "where is the NaN?" come first and rarely used ones are left out."""
    narrow = _narrow()
    table = _table(title)
    cols = ["name", "shape", "NaN", "Inf", "mean", "std", "min", "max"]
    if not narrow:
        cols += ["abs-max", "rms", "zero"]
    for col in cols:
        table.add_column(
            col,
            justify="left" if col in ("name", "shape") else "right",
            no_wrap=col != "name",
            overflow="fold",
        )
    for r in records:
        st = r.stats
        bad = "[bold red]" if not st.finite else ""
        stat = (lambda _x: "-") if r.device == "meta" else _fmt_stat  # meta: shapes only
        name = r.name.removeprefix("transformer.") if narrow else r.name
        if r.phase == "in":
            name += " (in)"
        values = {
            "name": ("  " * max(0, r.depth - 2) if not narrow else "") + name,
            "shape": "×".join(map(str, r.shape)),
            "NaN": f"{bad}{st.nan_count}",
            "Inf": f"{bad}{st.inf_count}",
            "mean": stat(st.mean),
            "std": stat(st.std),
            "min": stat(st.min),
            "max": stat(st.max),
            "abs-max": stat(st.abs_max),
            "rms": stat(st.rms),
            "zero": "-" if r.device == "meta" else f"{st.zero_frac:.0%}",
        }
        table.add_row(*(values[c] for c in cols))
    return table


def _pattern_table(pattern, tokens: tuple[str, ...]) -> Any:
    """Per head: where the last query looks most, and how spread out its attention is."""
    import numpy as np

    w = pattern.weights  # (nh, Tq, Tk)
    table = _table(
        f"{pattern.name}: {w.shape[0]} heads, {w.shape[1]}×{w.shape[2]}, "
        f"max |W·V − y| = {pattern.max_abs_error:.2e}"
    )
    for col in ("head", "last query looks at", "weight", "mean entropy (nats)", "diag share"):
        table.add_column(col, justify="left" if col == "last query looks at" else "right")
    for h in range(w.shape[0]):
        last = w[h, -1]
        k = int(np.argmax(last))
        rows = w[h]
        entropy = float(-(rows * np.log(np.clip(rows, 1e-12, None))).sum(-1).mean())
        diag = float(
            np.mean([rows[i, i - rows.shape[0] + rows.shape[1]] for i in range(rows.shape[0])])
        )
        table.add_row(
            str(h),
            f"{k}: {tokens[k] if k < len(tokens) else k}",
            f"{last[k]:.3f}",
            f"{entropy:.3f}",
            f"{diag:.3f}",
        )
    return table


def cmd_trace(args: argparse.Namespace) -> int:
    session = _open_session(args)
    layers = [] if args.attention is None else [args.attention]
    n_layer = getattr(session.config, "n_layer", None)
    if args.attention is not None and n_layer is not None and not 0 <= args.attention < n_layer:
        raise UserError(f"--attention {args.attention}: layers are 0..{n_layer - 1}")
    trace = session.trace(args.prompt, attention_layers=layers, leaves=args.leaves)
    if args.json:
        _print_json(
            dict(
                model=session.name,
                prompt=trace.prompt,
                tokens=trace.tokens,
                token_ids=trace.token_ids,
                records=trace.records,
                attention={str(k): v for k, v in trace.patterns.items()},
                next_tokens=trace.next_tokens,
                note=trace.note,
            )
        )
        return 0
    console = _console()
    console.print(
        _stats_table(f"Forward pass of {session.name} on {len(trace.tokens)} tokens", trace.records)
    )
    for pattern in trace.patterns.values():
        console.print(_pattern_table(pattern, trace.tokens))
    top = "  ".join(f"'{c.label}' {c.prob:.3f}" for c in trace.next_tokens[:8])
    console.print(f"[bold]next token[/]: {top}")
    if trace.note:
        console.print(f"[yellow]note:[/] {trace.note}")
    return 0


def cmd_step(args: argparse.Namespace) -> int:
    from .engine.interventions import InterventionError, inject_nonfinite
    from .engine.stepping import StepperError

    session = _open_session(args)
    _require_weights(session, "step")
    if not args.breakpoints and not args.watch_nan:
        raise UserError("give --break GLOB (e.g. 'transformer.h.1.*') and/or --watch-nan")
    names = session.probe_names(leaves=args.leaves)
    for glob in args.breakpoints:
        if not any(fnmatch.fnmatchcase(n, glob) for n in names):
            leaf_hint = "" if args.leaves else "; add --leaves to stop at Linear/norm layers"
            raise UserError(
                f"--break {glob!r} matches no module; names look like {names[2]!r}, "
                f"'*.mlp', 'transformer.h.1.*' (gpt-tui summary lists them){leaf_hint}"
            )
    if args.inject_nan:
        try:
            session.interventions.add(inject_nonfinite(args.inject_nan))
        except InterventionError as err:
            raise UserError(str(err)) from None
    stepper = session.stepper(
        args.prompt,
        breakpoints=args.breakpoints,
        watch_nonfinite=args.watch_nan,
        leaves=args.leaves,
    )
    try:
        event = stepper.continue_()
        reason = stepper.reason
        residual = list(stepper.residual)
    except StepperError as err:
        raise UserError(str(err)) from None
    finally:
        session.close()
    if event is None:
        if args.json:
            _print_json(dict(stopped=False, events=len(stepper.events)))
        else:
            print(f"the forward pass finished without stopping ({len(stepper.events)} events)")
        return 0
    if args.json:
        _print_json(dict(stopped=True, reason=reason, event=event, residual=residual))
        return 0
    console = _console()
    why = {"breakpoint": "breakpoint", "watch": "NaN/Inf watchpoint"}.get(reason or "", reason)
    console.print(
        f"[bold]stopped[/] at [bold]{event.name}[/] ({event.kind}, {event.phase}) "
        f"by the {why}, event {event.index}"
    )
    st = event.stats
    console.print(
        f"  shape {'×'.join(map(str, event.shape))} {event.dtype}  mean {st.mean:.4g}  "
        f"std {st.std:.4g}  rms {st.rms:.4g}  min {st.min:.4g}  max {st.max:.4g}  "
        f"abs-max {st.abs_max:.4g}  zero {st.zero_frac:.1%}  NaN {st.nan_count}  "
        f"Inf {st.inf_count}"
    )
    if reason == "watch":
        console.print(
            f"  {event.name} is the first module whose output is not finite while its input was"
        )
    if residual:
        console.print(_stats_table("Residual stream so far", residual))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from .engine.doctor import diagnose

    session = _open_session(args)
    lines = diagnose(session)
    if args.json:
        _print_json(dict(lines))
    else:
        width = max(len(k) for k, _ in lines)
        for key, value in lines:
            print(f"{key:<{width}}  {value}")
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    from .engine.session import check_spec
    from .ui.app import GptTuiApp

    spec = _spec(args)
    check_spec(spec)  # quick mistakes go to stderr with status 2, before the screen opens
    app = GptTuiApp(spec)
    app.run()
    return app.return_code or 0


# -- parser -------------------------------------------------------------------------------


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    main = argparse.ArgumentParser(
        prog="gpt-tui",
        description="A terminal inspector and debugger for nanoGPT and nanochat GPT models. "
        "With no command, opens the inspector.",
        epilog="commands: configs, summary, samples, trace, step, generate, eval, train, "
        "doctor (gpt-tui COMMAND --help)",
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
    p = sub("trace", cmd_trace, "One forward pass: every probe's shape and statistics.")
    p.add_argument("--prompt", required=True)
    p.add_argument("--attention", type=int, metavar="LAYER", help="summarise this layer's heads")
    p.add_argument(
        "--leaves", action="store_true", help="also probe every Linear, norm, activation"
    )
    p.add_argument("--json", action="store_true")
    p = sub("step", cmd_step, "Run a forward pass to a breakpoint and print where it stopped.")
    p.add_argument("--prompt", required=True)
    p.add_argument(
        "--break",
        dest="breakpoints",
        action="append",
        default=[],
        metavar="GLOB",
        help="module-path glob to stop at, e.g. 'transformer.h.1.*' (repeatable)",
    )
    p.add_argument(
        "--watch-nan",
        action="store_true",
        help="stop at the first module whose output holds NaN/Inf",
    )
    p.add_argument(
        "--leaves", action="store_true", help="also stop at every Linear, norm and activation"
    )
    p.add_argument(
        "--inject-nan",
        metavar="MODULE",
        help="write a NaN into MODULE's output (to try the watchpoint)",
    )
    p.add_argument("--json", action="store_true")
    p = sub("doctor", cmd_doctor, "What gpt-tui detected about a model, one line each.")
    p.add_argument("--json", action="store_true")
    p = sub("generate", cmd_generate, "Generate tokens and print each step's candidates.")
    _add_sampling_args(p)
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
    try:
        return args.func(args)
    except BrokenPipeError:  # `gpt-tui summary | head`: the reader left, nothing to say
        sys.stderr.close()
        return 0
    except GptTuiError as err:
        print(f"gpt-tui: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as err:
        print(f"gpt-tui: error: {err.strerror}: {err.filename}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def main() -> None:
    sys.exit(run())
