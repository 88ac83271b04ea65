"""Cost of pausing the stepped forward pass, beyond the computation itself.

Runs of the same forward (same hooks, same thread, same stats), interleaved so that drift
hits every kind alike; each run is a fresh stepper (a stepper runs one pass):

- module pauses: pausing at every probe event (step into) against no pause at all
  (continue to the end); the difference per pause is `pause_overhead_ms`;
- line tracing armed: a line breakpoint that is never hit (on `GPT.generate`, which a
  forward never calls) against the plain run; the ratio is `line_armed_ratio` (target
  <= 1.05), with its spread over the repetitions;
- line pauses: pausing at every line of the model's code against the armed run that
  never pauses; the difference per pause is `line_pause_ms` (target <= 5).

Usage: python benchmarks/stepping.py [repetitions] [preset]   (default 7, small)
Last lines: pause_overhead_ms=<x>, line_armed_ratio=<x>, line_pause_ms=<x>
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import torch

from gpt_tui.engine.stepping import ForwardStepper
from gpt_tui.models import build_model, make_config


def main() -> None:
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
    print(f"pause_overhead_ms={per_pause:.3f}")
    print(f"line_armed_ratio={statistics.median(ratios):.3f}")
    print(f"line_pause_ms={per_line:.3f}")


if __name__ == "__main__":
    main()
