"""Commands that run the model forward: trace, step, generate."""

from __future__ import annotations

import argparse
import fnmatch

from . import render
from .common import UserError, open_session, require_weights


def cmd_trace(args: argparse.Namespace) -> int:
    session = open_session(args)
    layers = [] if args.attention is None else [args.attention]
    n_layer = getattr(session.config, "n_layer", None)
    if args.attention is not None and n_layer is not None and not 0 <= args.attention < n_layer:
        raise UserError(f"--attention {args.attention}: layers are 0..{n_layer - 1}")
    trace = session.trace(args.prompt, attention_layers=layers, leaves=args.leaves)
    if args.json:
        render.print_json(
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
    console = render.console()
    title = f"Forward pass of {session.name} on {render.plural(len(trace.tokens), 'token')}"
    console.print(render.stats_table(title, trace.records))
    for pattern in trace.patterns.values():
        console.print(render.pattern_table(pattern, trace.tokens))
    top = "  ".join(f"'{c.label}' {c.prob:.3f}" for c in trace.next_tokens[:8])
    console.print(f"[bold]next token[/]: {top}")
    if trace.note:
        console.print(f"[yellow]note:[/] {trace.note}")
    return 0


def cmd_step(args: argparse.Namespace) -> int:
    from ..engine.interventions import InterventionError, inject_nonfinite
    from ..engine.stepping import StepperError

    session = open_session(args)
    require_weights(session, "step")
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
            render.print_json(dict(stopped=False, events=len(stepper.events)))
        else:
            print(f"the forward pass finished without stopping ({len(stepper.events)} events)")
        return 0
    if args.json:
        render.print_json(dict(stopped=True, reason=reason, event=event, residual=residual))
        return 0
    console = render.console()
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
        console.print(render.stats_table("Residual stream so far", residual))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from ..engine.sampling import GenerationError, generate_steps

    session = open_session(args)
    require_weights(session, "generate")
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
        render.print_json(dict(model=session.name, prompt=args.prompt, steps=steps, text=text))
        return 0
    console = render.console()
    table = render.table(f"Generation from {session.name} (seed {args.seed})")
    for col, just in [("step", "right"), ("token", "left"), ("prob", "right")]:
        table.add_column(col, justify=just, no_wrap=True)
    # Only the candidates wrap on a narrow terminal; the other cells stay whole.
    table.add_column("top candidates")
    table.add_column("kv cache", justify="right", no_wrap=True)
    shown = args.candidates
    if render.narrow():  # as many candidates as fit beside the other columns, one line each
        token_width = max((len(s.token_label) for s in steps), default=1)
        label_width = max((len(c.label) for s in steps for c in s.candidates), default=1)
        room = console.width - 34 - max(0, token_width - 5)  # 4 columns and 4 rules
        shown = max(1, min(shown, (room + 2) // (label_width + 9)))
    for s in steps:
        cands = "  ".join(f"'{c.label}' {c.prob:.2f}" for c in s.candidates[:shown])
        fill = f"{s.cache_fill[0]}/{s.cache_fill[1]}" if s.cache_fill else "-"
        table.add_row(str(s.index), s.token_label, f"{s.token_prob:.3f}", cands, fill)
    console.print(table)
    for note in _crop_notes([s.note for s in steps]):
        console.print(f"[yellow]note:[/] {note}")
    console.rule("text")
    console.print(text, markup=False)
    return 0


def _crop_notes(notes: list[str | None]) -> list[str]:
    """Each kind of note once: a sequence longer than the context is cropped again at every
    later step, which is said once with the number of steps it happened at."""
    first: dict[str, str] = {}
    times: dict[str, int] = {}
    for note in notes:
        parts: list[str] = []
        for part in (note or "").split("; "):
            if part == "KV cache refilled" and parts:  # belongs to the crop before it
                parts[-1] += "; " + part
            elif part:
                parts.append(part)
        for part in parts:
            kind = part.split(" of ", 1)[0]  # "prompt", "sequence", or the note itself
            first.setdefault(kind, part)
            times[kind] = times.get(kind, 0) + 1
    return [
        note + (f" (at {times[kind]} steps)" if times[kind] > 1 else "")
        for kind, note in first.items()
    ]
