"""Commands that say what a training step costs: memory and cost (numerics_cmd.py says
what a dtype does to a pass)."""

from __future__ import annotations

import argparse

from ..errors import GptTuiError
from ..formatting import nbytes
from . import render
from .common import open_session
from .cost_args import cost_work, memory_work
from .open_progress import working


class DtypeError(GptTuiError):
    """--dtype and --weights-dtype that no training step combines."""


def _autocast(args: argparse.Namespace) -> str | None:
    """--dtype is the autocast dtype: the model opens in --weights-dtype instead."""
    from ..engine.training.step import autocast_dtype

    autocast_dtype(args.dtype)  # an unknown dtype is one line before the model opens
    autocast, args.dtype = args.dtype, args.weights_dtype
    if autocast not in ("float32", args.weights_dtype) and args.weights_dtype != "float32":
        raise DtypeError(
            f"--dtype {autocast} with --weights-dtype {args.weights_dtype}: autocast runs "
            "from float32 weights (mixed precision) or in the weights' own dtype; give one of them"
        )
    return None if autocast == "float32" else autocast


def cmd_memory(args: argparse.Namespace) -> int:
    from ..engine.analysis.memory import memory_report

    autocast = _autocast(args)
    session = open_session(args, reads_text=False)
    try:
        with working(memory_work(session, args.batch, args.block)):
            report = memory_report(
                session, args.batch, args.block, optimizer=args.optimizer, budget_gib=args.fit,
                autocast=autocast,
            )  # fmt: skip
    finally:
        session.close()
    if args.json:
        render.print_json(dict(report=report, forecast_gib=report.forecast / 2**30))
        return 0
    console = render.console()
    table = render.table(
        f"Memory of a training step of {session.name}: batch {report.batch} x {report.block} "
        f"tokens, {report.optimizer}"
    )
    rows = sorted(report.modules, key=lambda m: -m.total)
    fields = ["params", "grads", "optimizer", "activations"]
    if any(m.weight_copies for m in rows):
        fields.append("weight_copies")
    is_narrow = render.narrow()  # 80 columns: short headers, names and units
    size = _short_b if is_narrow else _b
    heads = [_NARROW_HEADS[f] if is_narrow else f.replace("_", " ") for f in fields]
    for col in ("module", *heads, "total"):
        table.add_column(col, justify="left" if col == "module" else "right", no_wrap=True)
    for m in rows:
        name = m.name.removeprefix("transformer.") if is_narrow else m.name
        table.add_row(name or "(model)", *(size(getattr(m, f)) for f in fields), size(m.total))
    sums = [sum(getattr(m, f) for m in rows) for f in fields]
    table.add_row("total", *map(size, sums), size(sum(sums)), style="bold")
    console.print(table)
    if is_narrow:
        copies = "; w copies: autocast's weight copies" if "weight_copies" in fields else ""
        console.print(f"K/M/G: KiB/MiB/GiB; optim: optimizer state{copies}")
    console.print(f"precision: {report.precision}")
    fit = report.fit
    fixed = [f"{m.name or '(model)'} {nbytes(m.batch_free)}" for m in rows if m.batch_free]
    console.print(
        f"activations measured at batches 2 and 3 x {report.block}; what grows with the batch "
        "is scaled by it" + (f", not what does not ({', '.join(fixed)})" if fixed else "")
        + f"; peak from {report.step.peak_source}"
    )  # fmt: skip
    console.print(
        f"fit: peak = {nbytes(fit.fixed)} + {fit.shared_per_token:.4g}·T + "
        f"B·({fit.per_token:.4g}·T {fit.per_token_sq:+.3g}·T²) bytes, from "
        + ", ".join(f"{b}x{t} = {nbytes(m)}" for b, t, m in fit.measured)
        + (
            " (a 1-token context: one length, the T and T² terms are not told apart)"
            if fit.measured[0][1] == fit.measured[1][1]
            else ""
        )
        + f"; checked at {fit.check[0]}x{fit.check[1]} = {nbytes(fit.check[2])}: "
        f"off by {fit.check_error:.1%}"
    )
    console.print(
        f"[bold]forecast[/] peak at batch {report.batch} x {report.block}: "
        f"{nbytes(report.forecast)}"
    )
    if report.budget is not None and report.largest_batch is not None:
        console.print(
            f"the largest batch that fits in {nbytes(report.budget)} at {report.block} tokens: "
            f"{report.largest_batch}"
        )
    return 0


def _b(n: float) -> str:
    return "-" if n == 0 else nbytes(n)


_NARROW_HEADS = dict(params="params", grads="grads", optimizer="optim", activations="acts",
                     weight_copies="w copies")  # fmt: skip


def _short_b(n: float) -> str:
    """nbytes without the "iB" (the table's note says K is KiB), to fit 80 columns."""
    return "-" if n == 0 else nbytes(n).removesuffix("iB").replace(" ", "")


def cmd_cost(args: argparse.Namespace) -> int:
    from ..engine.analysis.flops import cost_report

    autocast = _autocast(args)
    session = open_session(args, reads_text=False)
    try:  # on meta: FLOPs, no times
        with working(cost_work(session, args.batch, args.block)):
            report = cost_report(session, args.batch, args.block, autocast=autocast)
    finally:
        session.close()
    if args.json:
        render.print_json(dict(report=report, achieved=report.achieved, mfu=report.mfu))
        return 0
    console = render.console()
    table = render.table(
        f"FLOPs of {session.name}: forward at batch {report.batch} x {report.block} tokens"
    )
    for col in ("module", "forward FLOPs", "share", "forward ms"):
        table.add_column(col, justify="left" if col == "module" else "right", no_wrap=True)
    total = max(report.forward_flops, 1)
    for m in sorted(report.modules, key=lambda m: -m.forward_flops):
        table.add_row(
            m.name or "(model)", _flops(m.forward_flops), f"{m.forward_flops / total:.1%}",
            "-" if m.forward_ms is None else f"{m.forward_ms:.3f}",
        )  # fmt: skip
    table.add_row("total", _flops(report.forward_flops), "100%", "", style="bold")
    console.print(table)
    tokens = report.batch * report.block
    timed = (
        f", {report.step_seconds * 1e3:.1f} ms, {_flops(report.achieved)}FLOP/s"
        if report.step_seconds
        else " (not timed on the meta device)"
    )
    console.print(
        f"training step: {_flops(report.train_flops)} FLOPs "
        f"({_flops(report.train_flops / tokens)} per token){timed}"
    )
    if report.formula is not None:
        _print_formula(console, report)
    else:
        _print_mfu(console, report)
    return 0


def _flops(n: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} "


def _print_mfu(console, report) -> None:  # noqa: ANN001 - a rich Console and a CostReport
    label = "MFU (measured FLOPs / step time / peak)"
    if not report.step_seconds:
        console.print(f"{label}: unknown (not timed on the {report.device} device)")
    elif report.mfu is None:
        console.print(
            f"{label}: unknown (no peak known for {report.device_name} in {report.dtype})"
        )
    else:
        console.print(
            f"{label}: {report.mfu:.1%} of {report.device_name}'s "
            f"{_flops(report.peak_flops or 0)}FLOP/s {report.dtype} peak"
        )


def _print_formula(console, report) -> None:  # noqa: ANN001 - a rich Console and a CostReport
    """The family's formula at its own T, at the step's T against the count, and its MFU."""
    f = report.formula
    chat = f.name.startswith("nanochat")
    t_name = "sequence_len" if chat else "block_size"
    own = (
        ""
        if f.model_says is None
        else f"; the model's own estimate_flops(): {_flops(f.model_says)}"
    )
    console.print(f"{f.name} (T = {t_name} {f.context}): {_flops(f.per_token)} per token{own}")
    if f.model_error:
        console.print(f"[yellow]note:[/] {f.model_error}")
    parts = ", ".join(f"{p.label} {p.per_token:+,.0f}" for p in f.parts) or "no gap"
    console.print(
        f"  the same formula at this step's T = {f.block}: {_flops(f.at_block)}; measured "
        f"{_flops(f.measured_per_token)} ({f.difference:+.2%}) per token: {parts}"
    )
    _print_mfu(console, report)
    label = "nanochat's bf16_mfu" if chat else f"nanoGPT's estimate_mfu({report.batch}, dt)"
    if f.mfu is None:
        why = f"no bf16 peak known for {report.device_name}"
        if not report.step_seconds:
            why = f"not timed on the {report.device} device"
        elif chat and report.device_name == "cpu":
            why = "nanochat's log prints 0.00 off a GPU, where it takes the peak as inf"
        console.print(f"{label}: unknown ({why}; {f.mfu_basis})")
        return
    note = ""
    if not chat and f.block != f.context:
        note = f"; it counts {f.context} tokens a row, this step ran {f.block}"
    console.print(f"{label}: {_log_pct(f.mfu)} ({f.mfu_basis}{note})")
    if f.model_mfu is not None:
        console.print(
            f"  the model's own estimate_mfu({report.batch}, dt): {_log_pct(f.model_mfu)}"
        )


def _log_pct(x: float) -> str:
    """A percentage to 2 decimals, as both families' logs print MFU, and below 1% the
    digits that hides (a CPU against a GPU's peak)."""
    shown = f"{100 * x:.2f}%"
    return shown if x >= 0.01 or x == 0 else f"{shown} ({100 * x:.3g}%)"
