"""`gpt-tui diff`: two runs side by side, probe by probe, and where they part ways; and the
arguments of the comparison commands (patch and attribute live in patch_cmds)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from . import render
from .common import json_notes, model_spec, open_session, require_weights
from .patch_cmds import add_attribute_args, add_patch_args

if TYPE_CHECKING:
    from ..engine.analysis.compare import Comparison
    from ..engine.analysis.compare_intents import BSpec
    from ..engine.core.session import ModelSpec


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


def run_b(args: argparse.Namespace) -> BSpec:
    """The --b-* flags as the Debugger's run B (the app's Compare tab builds the same)."""
    from ..engine.analysis.compare_intents import BSpec

    return BSpec(
        prompt=args.b_prompt,
        dtype=args.b_dtype,
        checkpoint=args.b_checkpoint,
        model_file=args.b_model_file,
        kv_cache=args.b_kv_cache,
        device=args.b_device,
        overrides=tuple(args.b_overrides),
    )


def cmd_diff(args: argparse.Namespace) -> int:
    from ..engine.debugger import Debugger

    a = open_session(args)
    debugger = Debugger(a)  # the app's own intent: one path, one answer
    try:
        require_weights(a, "diff")
        debugger.set_prompt(args.prompt)
        state = debugger.compare_runs(run_b(args), leaves=args.leaves)
        assert state.compare is not None and state.compare.comparison is not None
        result = state.compare.comparison
    finally:
        debugger.close(wait=True)
    if args.json:
        render.print_json({**diff_json(result), "notes": json_notes(a, result.notes)})
        return 0
    from ..engine.analysis.compare_intents import b_model_spec

    b = b_model_spec(a, run_b(args))  # the engine's own: what B opened
    b_name = Path(b.checkpoint).parent.name if args.b_checkpoint and b.checkpoint else a.name
    _print_diff(result, _label(model_spec(args), a.name), _label(b, b_name))
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
            token_position=first.token_position,
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


ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "diff": add_diff_args,
    "patch": add_patch_args,
    "attribute": add_attribute_args,
}
