"""Cost of one pause of the stepped forward pass, beyond the computation itself.

Two runs of the same stepped forward (same hooks, same thread, same stats), interleaved:
one pauses at every event (step into), one pauses nowhere (continue to the end). The
difference divided by the number of pauses is what a pause costs: the thread hand-off,
reading the stats back and building the events.

Usage: python benchmarks/stepping.py [repetitions] [preset]   (default 7, small)
Last line: pause_overhead_ms=<x>
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from gpt_tui.engine.stepping import ForwardStepper
from gpt_tui.models import build_model, make_config


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
    paused_times, plain_times = [], []
    pauses = 0
    for _ in range(reps):
        elapsed, pauses = stepped()
        paused_times.append(elapsed)
        plain_times.append(straight())
    paused, plain = statistics.median(paused_times), statistics.median(plain_times)
    per_pause = max(paused - plain, 0.0) / pauses * 1e3
    print(
        f"{preset} T=64: {pauses} pauses, stepped={paused * 1e3:.1f}ms straight={plain * 1e3:.1f}ms"
    )
    print(f"pause_overhead_ms={per_pause:.3f}")


if __name__ == "__main__":
    main()
