"""Cost of one pause of the stepped forward pass, beyond the computation itself.

Two runs of the same stepped forward (same hooks, same thread, same stats), interleaved:
one pauses at every event (step into), one pauses nowhere (continue to the end). The
difference divided by the number of pauses is what a pause costs: the thread hand-off,
reading the stats back and building the events.

Then the cost of the `Debugger` layer the app and the CLI drive: `Debugger.step("continue")`
on a fresh pass (it makes the stepper, runs it to the end, keeps the records, releases it
and returns a snapshot) against a bare `ForwardStepper` made, run to the end and closed on
the same prompt, each on its own session of the same model, interleaved; the ratio of
each pair is summarised by its median and spread.

Usage: python benchmarks/stepping.py [repetitions] [preset]   (default 7, small)
Last lines: debugger_continue_ratio=<x> then pause_overhead_ms=<y>
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from gpt_tui.engine.debugger import Debugger
from gpt_tui.engine.session import ModelSpec, Session
from gpt_tui.engine.stepping import ForwardStepper
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
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    preset = sys.argv[2] if len(sys.argv) > 2 else "small"
    model = build_model(make_config(preset), "cpu")
    idx = torch.randint(0, model.config.vocab_size, (1, 64))

    # A stepper runs one pass; each run gets a fresh one, made and closed outside the timer.
    def stepped() -> tuple[float, int]:
        with ForwardStepper(model, idx) as stepper:
            start = time.perf_counter()
            pauses = 0
            while stepper.step_into() is not None:
                pauses += 1
            return time.perf_counter() - start, pauses

    def straight() -> float:
        with ForwardStepper(model, idx) as stepper:
            start = time.perf_counter()
            stepper.continue_()
            return time.perf_counter() - start

    stepped(), straight()  # warm up
    paused_times, plain_times, pair_overheads = [], [], []
    pauses = 0
    for _ in range(reps):
        elapsed, pauses = stepped()
        paused_times.append(elapsed)
        plain_times.append(straight())
        pair_overheads.append((paused_times[-1] - plain_times[-1]) / pauses * 1e3)
    paused, plain = statistics.median(paused_times), statistics.median(plain_times)
    per_pause = max(paused - plain, 0.0) / pauses * 1e3

    ratios, debugger_s, bare_s, tokens = debugger_ratios(reps, preset)
    print(
        f"{preset} T=64: {pauses} pauses, stepped={paused * 1e3:.1f}ms straight={plain * 1e3:.1f}ms"
        f"; per pause, pair by pair (ms): {spread(pair_overheads)}"
    )
    print(
        f"{preset} T={tokens}: Debugger.step('continue')={debugger_s * 1e3:.1f}ms, bare "
        f"ForwardStepper continue={bare_s * 1e3:.1f}ms; ratio, pair by pair: {spread(ratios)}"
    )
    print(f"debugger_continue_ratio={statistics.median(ratios):.3f}")
    print(f"pause_overhead_ms={per_pause:.3f}")


if __name__ == "__main__":
    main()
