"""Cost of pausing the stepped forward pass, beyond the computation itself.

Runs of the same forward (same hooks, same thread, same stats), interleaved so that drift
hits every kind alike; each run is a fresh stepper (a stepper runs one pass):

- module pauses: pausing at every probe event (step into) against no pause at all
  (continue to the end); the difference per pause is `pause_overhead_ms`;
- line tracing armed: a line breakpoint that is never hit (on `GPT.generate`, which a
  forward never calls) against the plain run; the ratio is `line_armed_ratio` (target
  <= 1.05), with its spread over the repetitions. Most of it is CPython 3.11's tracing
  mode itself, which slows every Python frame of the forward thread (the probes' hooks,
  `Module.__call__`): a trace function that does nothing costs the same;
- line pauses: pausing at every line of the model's code against the armed run that
  never pauses; the difference per pause is `line_pause_ms` (target <= 5).

Then the cost of the `Debugger` layer the app and the CLI drive: `Debugger.step("continue")`
on a fresh pass (it makes the stepper, runs it to the end, keeps the records, releases it
and returns a snapshot) against a bare `ForwardStepper` made, run to the end and closed on
the same prompt, each on its own session of the same model, interleaved; the ratio of
each pair is summarised by its median and spread.

Usage: python benchmarks/stepping.py [repetitions] [preset]   (default 7, small)
Last lines: debugger_continue_ratio=<x>, pause_overhead_ms=<x>, line_armed_ratio=<x>,
line_pause_ms=<x>
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import torch

from gpt_tui.engine.core.session import ModelSpec, Session
from gpt_tui.engine.core.stepping import ForwardStepper
from gpt_tui.engine.debugger import Debugger
from gpt_tui.models import build_model, make_config

PROMPT = "ROMEO:\nBut soft, what light through yonder window breaks? It is the east"[:64]


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f}, min {min(values):.3f}, max {max(values):.3f}"


def debugger_ratios(reps: int, preset: str) -> tuple[list[float], float, float, int]:
    """Per pair, Debugger continue time / bare stepper time; also both medians (s) and T."""
    debugger = Debugger(Session.open(ModelSpec(config=preset, device="cpu")))
    bare = Session.open(ModelSpec(config=preset, device="cpu"))  # same seed, same weights
    try:
        debugger.set_prompt(PROMPT)
        ids, _ = bare.prompt_ids(PROMPT)
        idx = torch.tensor([ids], dtype=torch.long)

        def via_debugger() -> float:
            start = time.perf_counter()
            state = debugger.step("continue")
            elapsed = time.perf_counter() - start
            if state.status != "finished":
                raise RuntimeError(f"the Debugger's pass did not finish: {state.message}")
            return elapsed

        def via_stepper() -> float:
            start = time.perf_counter()
            with ForwardStepper(bare.model, idx) as stepper:
                if stepper.continue_() is not None:
                    raise RuntimeError("the bare stepper stopped before the end")
            return time.perf_counter() - start

        via_debugger(), via_stepper()  # warm up
        ratios, debugger_times, bare_times = [], [], []
        for i in range(reps):
            pair = (via_debugger, via_stepper) if i % 2 == 0 else (via_stepper, via_debugger)
            times = {fn: fn() for fn in pair}  # alternate which runs first
            debugger_times.append(times[via_debugger])
            bare_times.append(times[via_stepper])
            ratios.append(times[via_debugger] / times[via_stepper])
    finally:
        debugger.close()
        bare.close()
    return ratios, statistics.median(debugger_times), statistics.median(bare_times), len(ids)


def main() -> None:
    torch.set_num_threads(1)  # on a shared box, more threads time the neighbours, not this
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    preset = sys.argv[2] if len(sys.argv) > 2 else "small"
    model = build_model(make_config(preset), "cpu")
    idx = torch.randint(0, model.config.vocab_size, (1, 64))

    Move = Callable[[ForwardStepper], object]

    def timed(arm: Callable[[ForwardStepper], None], move: Move) -> tuple[float, int]:
        with ForwardStepper(model, idx) as stepper:
            arm(stepper)
            start = time.perf_counter()
            pauses = -1
            while not stepper.finished:
                move(stepper)
                pauses += 1
            return time.perf_counter() - start, pauses

    def plain(_: ForwardStepper) -> None:
        pass

    def never_hit(stepper: ForwardStepper) -> None:
        stepper.set_line_breakpoints(["GPT.generate"])

    kinds = {
        "module_steps": (plain, ForwardStepper.step_into),
        "straight": (plain, ForwardStepper.continue_),
        "armed": (never_hit, ForwardStepper.continue_),
        "line_steps": (plain, lambda stepper: stepper.step_line("into")),
    }
    times: dict[str, list[float]] = {k: [] for k in kinds}
    pauses: dict[str, int] = {}
    for arm, move in kinds.values():  # warm up
        timed(arm, move)
    for _ in range(reps):
        for kind, (arm, move) in kinds.items():
            elapsed, pauses[kind] = timed(arm, move)
            times[kind].append(elapsed)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = [a / s for a, s in zip(times["armed"], times["straight"], strict=True)]
    per_pause = max(med["module_steps"] - med["straight"], 0.0) / pauses["module_steps"] * 1e3
    per_line = max(med["line_steps"] - med["armed"], 0.0) / pauses["line_steps"] * 1e3
    print(
        f"{preset} T=64: straight={med['straight'] * 1e3:.1f}ms "
        f"armed={med['armed'] * 1e3:.1f}ms; {pauses['module_steps']} module pauses "
        f"{med['module_steps'] * 1e3:.1f}ms; {pauses['line_steps']} line pauses "
        f"{med['line_steps'] * 1e3:.1f}ms"
    )
    print(f"line_armed_ratio spread: {min(ratios):.3f}..{max(ratios):.3f} over {reps} runs")
    dbg_ratios, debugger_s, bare_s, tokens = debugger_ratios(reps, preset)
    print(
        f"{preset} T={tokens}: Debugger.step('continue')={debugger_s * 1e3:.1f}ms, bare "
        f"ForwardStepper continue={bare_s * 1e3:.1f}ms; ratio, pair by pair: {spread(dbg_ratios)}"
    )
    print(f"debugger_continue_ratio={statistics.median(dbg_ratios):.3f}")
    print(f"pause_overhead_ms={per_pause:.3f}")
    print(f"line_armed_ratio={statistics.median(ratios):.3f}")
    print(f"line_pause_ms={per_line:.3f}")


if __name__ == "__main__":
    main()
