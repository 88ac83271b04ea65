"""`gpt-tui numerics`: what a dtype (bf16, fp16, fp8) would do to each module of a pass."""

from __future__ import annotations

import argparse

from . import render
from .common import open_session
from .cost_args import HEADS_SHOWN


def cmd_numerics(args: argparse.Namespace) -> int:
    from ..engine.analysis.numerics import check_format, numerics, short_name

    target = args.dtype
    check_format(target)  # an unknown format is one line before the model opens
    args.dtype = "float32"  # the values are fp32; the format is what they are asked about
    from ..engine.core.runner import model_raised

    session = open_session(args)
    try:
        report = numerics(session, args.prompt, target, fp32_check=not args.no_fp32_check)
        growth = None
        if args.steps:
            from ..engine.analysis.logit_growth import head_logit_growth

            growth = head_logit_growth(session, args.prompt, args.steps, args.lr)
    except Exception as err:  # the user's model code failing is theirs to fix, not our bug
        raised = model_raised(err, session.model)
        if raised is None:
            raise
        raise raised from err
    finally:
        session.close()
    if args.json:
        render.print_json(dict(report=report, growth=growth))
        return 0
    console = render.console()
    facts = next(f for f in report.facts if f.name == target)
    short = short_name(target)
    console.print(
        f"[bold]{short}[/]: max {facts.max:.4g}, smallest normal {facts.smallest_normal:.3g}, "
        f"smallest subnormal {facts.smallest_subnormal:.3g}, eps {facts.eps:.3g}"
    )
    table = render.table(f"What {short} would do to {session.name} on {report.tokens} tokens")
    for col in ("module", "absmax", "overflow", "underflow", "subnormal"):
        table.add_column(col, justify="left" if col == "module" else "right", no_wrap=True)
    for m in report.modules:
        f = m.formats[target]
        table.add_row(
            m.name, render.fmt_stat(m.absmax), _pct(f.overflow), _pct(f.underflow),
            _pct(f.subnormal),
        )  # fmt: skip
    console.print(table)
    shown = len(report.heads) if args.all_heads else min(len(report.heads), HEADS_SHOWN)
    heads = render.table("Heads by largest pre-softmax logit")
    for col in ("layer", "head", "max logit", "entropy (nats)"):
        heads.add_column(col, justify="right", no_wrap=True)
    for h in sorted(report.heads, key=lambda h: -(h.max_logit or 0))[:shown]:
        logit = "-" if h.max_logit is None else f"{h.max_logit:.3g}"
        heads.add_row(str(h.layer), str(h.head), logit, f"{h.entropy:.3f}")
    console.print(heads)
    if shown < len(report.heads):
        console.print(f"{shown} of {len(report.heads)} heads shown (--all-heads for all)")
    if report.softcap is not None:
        s = report.softcap
        console.print(
            f"softcap {s.cap:g}: raw logits absmax {s.raw_absmax:.4g} -> capped "
            f"{s.capped_absmax:.4g}; {s.beyond:.2%} of raw logits beyond ±{s.cap:g}"
        )
    if report.what_if is not None:
        w = report.what_if
        console.print(f"[bold]fp32 vs {short}[/]: {w.message}")
    if report.note:
        console.print(f"[yellow]note:[/] {report.note}")
    if growth is not None:
        losses = " ".join(f"{x:.3g}" for x in growth.losses)
        console.print(f"{growth.steps} steps at lr {growth.lr:g} on the prompt, losses {losses}")
        for h in growth.flagged:
            path = " -> ".join(f"{v:.3g}" for v in h.max_logits)
            console.print(
                f"[bold red]layer {h.layer} head {h.head}[/]: max logit grew every step: {path}"
            )
        if not growth.flagged:
            console.print("no head's largest logit grew at every step")
    return 0


def _pct(x: float) -> str:
    return "0" if x == 0 else f"{x:.2%}" if x >= 1e-4 else f"{x:.1e}"
