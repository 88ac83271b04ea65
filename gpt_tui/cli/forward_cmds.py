"""Commands that run the model forward: trace, step, generate."""

from __future__ import annotations

import argparse
import fnmatch
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..io.tokenizers import visible_controls
from . import render, step_lines
from .common import UserError, json_notes, open_debugger, require_weights

if TYPE_CHECKING:
    from ..engine.core.debug_state import DebugState

MAX_TOKEN = 10_000  # --token N generates N-1 tokens first


def cmd_trace(args: argparse.Namespace) -> int:
    debugger = open_debugger(args, args.prompt)
    try:
        session = debugger.session
        layers = [] if args.attention is None else [args.attention]
        n_layer = getattr(session.config, "n_layer", None)
        if args.attention is not None and n_layer is not None and not 0 <= args.attention < n_layer:
            raise UserError(f"--attention {args.attention}: layers are 0..{n_layer - 1}")
        debugger.set_leaves(args.leaves)
        run = debugger.run(attention_layers=layers).run
    finally:
        debugger.close()
    assert run is not None
    if args.json:
        render.print_json(
            dict(
                model=session.name,
                prompt=run.prompt,
                tokens=run.tokens,
                token_ids=run.token_ids,
                records=run.records,
                attention={str(k): v for k, v in run.patterns.items()},
                next_tokens=run.next_tokens,
                note=run.note,
                tokenizer_note=session.tokenizer_note or None,  # also said on stderr
            )
        )
        return 0
    console = render.console()
    title = f"Forward pass of {session.name} on {render.plural(len(run.tokens), 'token')}"
    console.print(render.stats_table(title, run.records))
    for pattern in run.patterns.values():
        console.print(render.pattern_table(pattern, run.tokens))
    top = "  ".join(f"'{c.label}' {c.prob:.3f}" for c in run.next_tokens[:8])
    if top:  # none on the meta device, or from logits that are not finite (the note says)
        console.print(f"[bold]next token[/]: {top}")
    if run.note:
        console.print(f"[yellow]note:[/] {run.note}")
    return 0


def cmd_step(args: argparse.Namespace) -> int:
    from ..engine.analysis.interventions import inject_nonfinite
    from ..engine.core.debug_state import GenerationSettings

    if (args.evals or args.show or args.displays) and not (args.line_breakpoints or args.token):
        raise UserError(
            "--eval, --show and --display need --break-at, --tbreak or --token: expressions "
            "run at a paused line"
        )
    if not (args.breakpoints or args.watch_nan or args.line_breakpoints or args.token):
        raise UserError(
            "give --break GLOB (e.g. 'transformer.h.1.*'), --break-at FILE:LINE|FUNCTION, "
            "--token N and/or --watch-nan"
        )
    if args.token and args.token > MAX_TOKEN:
        raise UserError(
            f"--token {args.token}: at most {MAX_TOKEN:,} (every token before it is generated "
            "first); step into an earlier one"
        )
    debugger = open_debugger(args, args.prompt)
    try:
        session = debugger.session
        require_weights(session, "step")
        names = session.probe_names(leaves=args.leaves)
        for glob in args.breakpoints:
            if not any(fnmatch.fnmatchcase(n, glob) for n in names):
                leaf_hint = "" if args.leaves else "; add --leaves to stop at Linear/norm layers"
                raise UserError(
                    f"--break {glob!r} matches no module; names look like {names[2]!r}, "
                    f"'*.mlp', 'transformer.h.1.*' (gpt-tui summary lists them){leaf_hint}"
                )
        if args.inject_nan:
            debugger.add_intervention(inject_nonfinite(args.inject_nan))
        debugger.set_breakpoints(args.breakpoints)
        step_lines.set_up(debugger, args)  # --break-at, --tbreak, --ignore, --disable, ...
        debugger.set_watch(args.watch_nan)
        debugger.set_leaves(args.leaves)
        if args.token:  # the app's `g` N-1 times, then `t`
            settings = GenerationSettings(args.temperature, args.top_k, args.top_p, args.seed)
            debugger.reset_generation(settings)
            if args.token > 1:
                debugger.generate(args.token - 1, progress=_token_progress(args.token))
                if sys.stderr.isatty():
                    print("\r\033[K", end="", file=sys.stderr)
            state = debugger.step_token()
        else:
            state = debugger.step("continue")  # the app's `c`
        stops = step_lines.stops(debugger, state, args)
        if args.json and stops:  # the tokenizer's note once, with the first stop's
            stops[0] = (stops[0][0], json_notes(session, stops[0][1]))
    finally:
        debugger.close()
    if args.json and args.stops > 1:
        data = [_stop_data(s, args, notes, i) for i, (s, notes) in enumerate(stops)]
        render.print_json(dict(stops=data))
        return 0
    for i, (state, notes) in enumerate(stops):
        if args.json:
            render.print_json(_stop_data(state, args, notes, i))
        else:
            _print_stop(state, args, notes, i)
    return 0


def _stop_data(state: DebugState, args: argparse.Namespace, notes: list[str], i: int) -> dict:
    """One stop for --json: a line pause, a module pause, or the pass's end."""
    events = [dict(index=e.index, name=e.name, phase=e.phase) for e in state.events]
    if state.frame is not None:
        return step_lines.pause_json(state, args.show, notes, events)
    if state.event is None:
        return dict(stopped=False, events=events)
    assert state.stepping is not None
    residual = [r for r in state.stepping.records if r.kind == "resid"]
    return dict(
        stopped=True, reason=state.reason, event=state.event, residual=residual, events=events
    )


def _print_stop(state: DebugState, args: argparse.Namespace, notes: list[str], i: int) -> None:
    """The `i`-th stop (from 0), as text."""
    event, reason = state.event, state.reason
    if state.frame is not None:
        step_lines.print_pause(state, args.show)
        for note in notes:
            render.console().print(f"[yellow]note:[/] {note}", highlight=False)
        return
    if event is None and i > 0:  # --stops: the pass ran on to its end (a token: sampled)
        print(f"no more stops: {state.message}")
        return
    if event is None:
        print(f"the forward pass finished without stopping ({len(state.events)} events)")
        return
    assert state.stepping is not None
    residual = [r for r in state.stepping.records if r.kind == "resid"]
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
    if args.evals or args.show:
        console.print("[yellow]note:[/] --eval and --show run only at a pause at a line")


def _token_progress(token: int) -> Callable[[DebugState], None] | None:
    """On a terminal, how far the generation before --token N has come."""
    if not sys.stderr.isatty():
        return None

    def show(state: DebugState) -> None:
        done = len(state.generation.steps) if state.generation is not None else 0
        print(f"\rgenerating token {done} of {token - 1}", end="", file=sys.stderr)

    return show


def cmd_generate(args: argparse.Namespace) -> int:
    """Tokens stream out as they are sampled (text output); the table of steps follows.
    Ctrl-C keeps what was generated, prints it and ends with one line saying so."""
    from ..engine.core.debug_state import GenerationSettings, GenerationView

    debugger = open_debugger(args, args.prompt)
    latest: list[GenerationView] = []
    streamed: list[int] = []  # pieces written so far; empty before the prompt is

    def stream(view: GenerationView) -> None:
        if args.json:
            return
        if not streamed:
            render.console().rule("text")
            sys.stdout.write(_terminal_safe(view.prompt))
            streamed.append(0)
        sys.stdout.write(_terminal_safe("".join(view.pieces[streamed[0] :])))
        sys.stdout.flush()
        streamed[0] = len(view.pieces)

    def progress(state: DebugState) -> None:
        if state.generation is not None:
            latest[:] = [state.generation]
            stream(state.generation)

    interrupted = False
    try:
        session = debugger.session
        require_weights(session, "generate")
        settings = GenerationSettings(args.temperature, args.top_k, args.top_p, args.seed)
        debugger.reset_generation(settings)
        try:
            view = debugger.generate(args.steps, progress=progress).generation  # the app's `G`
        except KeyboardInterrupt:
            view, interrupted = (latest[0] if latest else None), True
    finally:
        debugger.close()
    if view is not None:
        stream(view)  # the last token (progress reports all but the last)
    steps = view.steps if view is not None else ()
    if args.json:
        text = view.text if view is not None else args.prompt
        data = dict(model=session.name, prompt=args.prompt, steps=steps, text=text)
        data["tokenizer_note"] = session.tokenizer_note or None  # also said on stderr
        render.print_json({**data, "interrupted": interrupted})
    elif steps:
        print()
        _print_generation(session.name, args, steps)
    if interrupted:
        print(f"gpt-tui: interrupted after {render.plural(len(steps), 'token')}", file=sys.stderr)
        return 130
    return 0


def _terminal_safe(text: str) -> str:
    """Generated text as lines, every other control byte drawn (a model can emit ESC)."""
    return "\n".join(visible_controls(line) for line in text.split("\n"))


def _print_generation(name: str, args: argparse.Namespace, steps: Sequence[Any]) -> None:
    console = render.console()
    table = render.table(f"Generation from {name} (seed {args.seed})")
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
