"""Commands that put two runs side by side: diff (where they part ways), patch (which
activations carry the answer from a clean run into a corrupted one), attribute (which
components write the answer's logit)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import GptTuiError, describe_error
from . import render
from .common import UserError, model_spec, open_session, require_weights

if TYPE_CHECKING:
    from ..engine.compare import Comparison
    from ..engine.session import ModelSpec, Session


def _b_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run B (A with these changes)")
    g.add_argument("--b-prompt", metavar="TEXT", help="B's prompt (default: A's)")
    g.add_argument("--b-checkpoint", metavar="PATH", help="B's checkpoint")
    g.add_argument("--b-model-file", metavar="PATH.py", help="B's model file (the same weights)")
    g.add_argument("--b-dtype", metavar="DTYPE", help="B's dtype: float32 | bfloat16 | float16")
    g.add_argument("--b-device", metavar="DEVICE", help="B's device")
    g.add_argument(
        "--b-set",
        dest="b_overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field of B (repeatable)",
    )


def add_diff_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt", required=True, help="A's prompt")
    _b_args(p)
    p.add_argument(
        "--b-kv-cache",
        action="store_true",
        help="B decodes the last token through the KV cache (compared at the last position)",
    )
    p.add_argument("--leaves", action="store_true", help="also compare every Linear and activation")


def b_spec(args: argparse.Namespace) -> tuple[ModelSpec, bool]:
    """B's model: A's, changed by the --b-* arguments; and whether anything changed."""
    spec = model_spec(args)
    changes: dict[str, object] = {}
    if args.b_checkpoint:
        changes.update(checkpoint=args.b_checkpoint, config=None, sample=None)
    if args.b_model_file:
        changes.update(model_file=args.b_model_file, model_class=None, config_class=None)
    if args.b_dtype:
        changes.update(dtype=args.b_dtype)
    if args.b_device:
        changes.update(device=args.b_device)
    if args.b_overrides:
        changes.update(overrides=[*spec.overrides, *args.b_overrides])
    return dataclasses.replace(spec, **changes), bool(changes)


def open_b(args: argparse.Namespace) -> Session:
    from ..engine.session import Session

    spec, _ = b_spec(args)
    try:
        return Session.open(spec)
    except (GptTuiError, FileNotFoundError) as err:
        raise UserError(f"run B cannot be opened: {describe_error(err)}") from None


def prompt_ids(session: Session, prompt: str, which: str) -> list[int]:
    ids, note = session.prompt_ids(prompt)
    if note:
        raise UserError(f"{which}: {note}; give a shorter prompt")
    return ids


def cmd_diff(args: argparse.Namespace) -> int:
    from ..engine.compare import Run, compare

    a = open_session(args)
    b: Session | None = None
    try:
        require_weights(a, "diff")
        _, changed = b_spec(args)
        b = open_b(args) if changed else a
        require_weights(b, "diff")
        ids_a = prompt_ids(a, args.prompt, "A's prompt")
        ids_b = prompt_ids(b, args.b_prompt if args.b_prompt is not None else args.prompt, "B")
        result = compare(
            Run(a.model, ids_a, label="A"),
            Run(b.model, ids_b, kv_cache=args.b_kv_cache, label="B"),
            leaves=args.leaves,
        )
    finally:
        if b is not None and b is not a:
            b.close()
        a.close()
    if args.json:
        render.print_json(diff_json(result))
        return 0
    b_label = _label(b_spec(args)[0], b.name if b is not None else a.name)
    _print_diff(result, _label(model_spec(args), a.name), b_label)
    return 0


def _label(spec: ModelSpec, name: str) -> str:
    """A run's model as the table names it: the checkpoint, and the model file it runs in."""
    if spec.model_file:
        return f"{Path(spec.model_file).name} on {name}"
    return f"{name} {spec.dtype}" if spec.dtype not in ("float32", "fp32") else name


def diff_json(result: Comparison) -> dict:
    first = result.first_divergence
    return dict(
        first_divergence=None
        if first is None
        else dict(
            name=first.name,
            max_abs_diff=first.max_abs_diff,
            input_max_abs_diff=first.input_max_abs_diff,
            first_probe=first.first_probe,
            message=first.message,
        ),
        records=[
            dict(
                name=r.name,
                b_name=r.b_name,
                max_abs_diff=r.max_abs_diff,
                rel_diff=r.rel_diff,
                cosine=r.cosine,
                diverged=r.diverged,
            )
            for r in result.records
        ],
        tolerance=result.tolerance,
        positions=list(result.positions),
        unmatched=list(result.unmatched),
        notes=list(result.notes),
    )


def _print_diff(result: Comparison, a_name: str, b_name: str) -> None:
    console = render.console()
    is_narrow = render.narrow()
    renamed = any(r.name != r.b_name for r in result.records) and not is_narrow
    first = result.first_divergence
    where = f"{render.plural(len(result.positions), 'position')}"
    out = render.table(f"A ({a_name}) against B ({b_name}), {where}")
    cols = ["probe", *(["B probe"] if renamed else []), "max |Δ|", "‖Δ‖/‖a‖", "cos", ""]
    for col in cols:
        left = col in ("probe", "B probe")
        out.add_column(col, justify="left" if left else "right", no_wrap=not left)
    for r in result.records:
        short = r.name.removeprefix("transformer.") if is_narrow else r.name
        mark = "◀ first" if first is not None and r.name == first.name else ""
        mark = mark or ("≠" if r.diverged else "")
        style = "[bold red]" if mark.startswith("◀") else ""
        row = [
            f"{style}{short}",
            *([r.b_name] if renamed else []),
            render.fmt_stat(r.max_abs_diff),
            render.fmt_stat(r.rel_diff),
            f"{r.cosine:.6f}",
            mark,
        ]
        out.add_row(*row)
    console.print(out)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    if result.unmatched:
        console.print(f"[yellow]not compared:[/] {', '.join(result.unmatched)}")
    if first is None:
        console.print(
            f"no divergence: every probe agrees within {result.tolerance:g} relative", markup=False
        )
    else:
        console.print(f"first divergence: {first.message}", markup=False)


def single_token(session: Session, text: str, flag: str) -> int:
    from ..engine.patching import one_token

    return one_token(session.tokenizer, session.vocab_size, text, flag)


def add_patch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt", required=True, help="the clean prompt (run A)")
    p.add_argument(
        "--b-prompt", required=True, metavar="TEXT", help="the corrupted prompt, same length"
    )
    p.add_argument("--answer", required=True, metavar="TOKEN", help="the clean run's answer")
    p.add_argument("--wrong", required=True, metavar="TOKEN", help="the corrupted run's answer")
    p.add_argument(
        "--what",
        choices=["resid_pre", "attn", "mlp", "heads"],
        default="resid_pre",
        help="what to patch: layer x position (resid_pre, attn, mlp) or layer x head (heads)",
    )


def cmd_patch(args: argparse.Namespace) -> int:
    from ..engine.patching import Patcher
    from ..engine.sampling import token_label

    session = open_session(args)
    try:
        require_weights(session, "patch")
        clean = prompt_ids(session, args.prompt, "the clean prompt")
        corrupted = prompt_ids(session, args.b_prompt, "the corrupted prompt")
        answer = single_token(session, args.answer, "--answer")
        wrong = single_token(session, args.wrong, "--wrong")
        patcher = Patcher(session.model, clean, corrupted, answer, wrong, whats=[args.what])
        sweep = patcher.sweep(args.what)
    finally:
        session.close()
    rows = [f"layer {i}" for i in sweep.layers]
    if args.what == "heads":
        cols = [f"head {h}" for h in sweep.columns]
    else:
        cols = [f"{t} {token_label(session.tokenizer, clean[t])}" for t in sweep.columns]
    if args.json:
        render.print_json(
            dict(
                what=args.what,
                rows=rows,
                cols=cols,
                values=[list(r) for r in sweep.values],
                clean_logit_diff=sweep.clean_diff,
                corrupted_logit_diff=sweep.corrupted_diff,
            )
        )
        return 0
    console = render.console()
    color = render.is_terminal()
    title = f"{args.what} patched from clean into corrupted ({session.name})"
    out = render.table(title)
    out.add_column("", no_wrap=True)
    heads = [c.split(" ", 1)[-1] if args.what != "heads" else c.split()[-1] for c in cols]
    for label in heads:
        out.add_column(label[:5], justify="right", no_wrap=True)
    for name, values in zip(rows, sweep.values, strict=True):
        cells = [_heat(v) if color else f"{v:.3f}" for v in values]
        out.add_row(f"L{name.split()[-1]}" if color else name, *cells)
    console.print(out)
    console.print(
        f"logit({args.answer!r}) - logit({args.wrong!r}): clean {sweep.clean_diff:.4g}, "
        f"corrupted {sweep.corrupted_diff:.4g}",
        markup=False,
    )
    console.print("100 = clean, 0 = corrupted" if color else "1 = clean, 0 = corrupted")
    return 0


def _heat(v: float) -> str:
    """A percentage on a background as strong as the effect: green recovers, red opposes."""
    level = max(0.0, min(1.0, abs(v)))
    shade = int(40 + 160 * level)
    bg = f"rgb(0,{shade},0)" if v >= 0 else f"rgb({shade},0,0)"
    fg = "black" if level > 0.6 else "white"
    return f"[{fg} on {bg}]{round(v * 100):4d}[/]"


def _count(text: str) -> int:
    """An argparse type: a whole number of 1 or more."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of 1 or more, not {text!r}")
    return int(text)


def add_attribute_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt", required=True)
    p.add_argument("--answer", required=True, metavar="TOKEN", help="the token to explain")
    p.add_argument("--wrong", metavar="TOKEN", help="explain logit(answer) - logit(wrong)")
    p.add_argument("--position", type=int, default=-1, help="token position (default -1: the last)")
    p.add_argument("--top", type=_count, default=20, help="components listed (default 20)")


def cmd_attribute(args: argparse.Namespace) -> int:
    from ..engine.attribution import attribute
    from ..engine.sampling import token_label

    session = open_session(args)
    try:
        require_weights(session, "attribute")
        ids = prompt_ids(session, args.prompt, "the prompt")
        answer = single_token(session, args.answer, "--answer")
        wrong = None if args.wrong is None else single_token(session, args.wrong, "--wrong")
        if wrong == answer:
            raise UserError("--answer and --wrong are the same token: give two different ones")
        result = attribute(session.model, ids, answer, wrong, args.position)
    finally:
        session.close()
    if args.json:
        render.print_json(
            dict(
                logit_diff=result.logit_diff,
                sum=result.total,
                model_logit_diff=result.model_logit_diff,
                position=result.position,
                components=[
                    dict(name=c.name, kind=c.kind, value=c.value) for c in result.components
                ],
                notes=list(result.notes),
            )
        )
        return 0
    console = render.console()
    what = f"logit({args.answer!r})" + (f" - logit({args.wrong!r})" if args.wrong else "")
    at = token_label(session.tokenizer, ids[result.position])
    out = render.table(f"{what} at position {result.position} ({at})")
    for col, just in (("component", "left"), ("share", "right"), ("", "left")):
        out.add_column(col, justify=just, no_wrap=True)
    ranked = result.ranked()
    biggest = max((abs(c.value) for c in ranked), default=0.0) or 1.0
    for c in ranked[: args.top]:
        bar = "█" * max(1, round(20 * abs(c.value) / biggest)) if c.value else ""
        colour = "green" if c.value > 0 else "red"
        out.add_row(c.name, f"{c.value:+.4f}", f"[{colour}]{bar}[/]")
    console.print(out)
    rest = ranked[args.top :]
    if rest:
        together = sum(c.value for c in rest)
        console.print(f"{render.plural(len(rest), 'more component')}, together {together:+.4f}")
    console.print(
        f"sum {result.total:.6g}, pre-softcap logit difference {result.logit_diff:.6g} "
        f"(model output {result.model_logit_diff:.4g})",
        markup=False,
    )
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    return 0


ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "diff": add_diff_args,
    "patch": add_patch_args,
    "attribute": add_attribute_args,
}
