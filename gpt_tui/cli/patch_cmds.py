"""Commands that read which parts of one model carry an answer: patch (activations from
a clean run put back into a corrupted one) and attribute (each part's share of a logit)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from . import render
from .common import UserError, json_notes, open_session, require_weights

if TYPE_CHECKING:
    from ..engine.core.session import Session


def prompt_ids(session: Session, prompt: str) -> list[int]:
    """The ids the engine runs: cropped to the context as trace does (the engine's result
    notes the crop)."""
    return session.prompt_ids(prompt)[0]


def single_token(session: Session, text: str, flag: str) -> int:
    from ..engine.analysis.patching import one_token

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
    from ..engine.debugger import Debugger
    from ..engine.generation.sampling import token_label

    session = open_session(args)
    debugger = Debugger(session)  # the app's own intent: one path, one answer
    try:
        require_weights(session, "patch")
        clean = prompt_ids(session, args.prompt)
        prompt_ids(session, args.b_prompt)  # an empty or unencodable prompt is one line
        single_token(session, args.answer, "--answer")
        single_token(session, args.wrong, "--wrong")
        debugger.set_prompt(args.prompt)
        state = debugger.patch_runs(args.b_prompt, args.answer, args.wrong, args.what)
        assert state.compare is not None and state.compare.sweep is not None
        sweep, notes = state.compare.sweep, state.compare.notes
    finally:
        debugger.close(wait=True)
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
                notes=json_notes(session, notes),
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
        cells = [_heat(v) if color else _fixed(v) for v in values]
        out.add_row(f"L{name.split()[-1]}" if color else name, *cells)
    console.print(out)
    console.print(
        f"logit({args.answer!r}) - logit({args.wrong!r}): clean {sweep.clean_diff:.4g}, "
        f"corrupted {sweep.corrupted_diff:.4g}",
        markup=False,
    )
    console.print("100 = clean, 0 = corrupted" if color else "1 = clean, 0 = corrupted")
    for note in notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    return 0


def _fixed(v: float) -> str:
    """Three decimals, never `-0.000` (a tiny negative effect rounds to no effect)."""
    text = f"{v:.3f}"
    return "0.000" if text == "-0.000" else text


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
    from ..engine.debugger import Debugger
    from ..engine.generation.sampling import token_label

    session = open_session(args)
    debugger = Debugger(session)  # the app's own intent: one path, one answer
    try:
        require_weights(session, "attribute")
        ids = prompt_ids(session, args.prompt)
        answer = single_token(session, args.answer, "--answer")
        wrong = None if args.wrong is None else single_token(session, args.wrong, "--wrong")
        if wrong == answer:
            raise UserError("--answer and --wrong are the same token: give two different ones")
        debugger.set_prompt(args.prompt)
        state = debugger.attribute_logit(answer, wrong, args.position)
        assert state.compare is not None and state.compare.attribution is not None
        result = state.compare.attribution
    finally:
        debugger.close(wait=True)
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
                notes=json_notes(session, result.notes),
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
