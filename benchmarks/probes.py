"""Cost of probes and attention patterns relative to a bare forward pass (CPU), with noise.

Four ways to run the same forward, interleaved in one process (bare, probes, attn1,
attnall, bare, probes, ...) so a busy machine slows them alike; each round's ratios are
taken against that round's bare time and summarised by their median and spread:

- bare: the model alone, no hooks;
- probes: hooks on every probe point (embeddings, blocks, attention, MLP, residual
  points, final norm, head) with on-device stats and the logits' stats, one transfer;
- attn1: probes + one layer's attention inputs kept and its pattern recomputed;
- attnall: probes + every layer's attention inputs kept, so any layer's pattern is
  available (computed lazily, when a layer is viewed).

`switch` is what viewing another layer costs once attnall ran: one layer's pattern, all
heads, recomputed in fp32 and checked, plus its per-head summaries (seconds, not a ratio).

`--clock cpu` times with the process's CPU time instead of the wall clock: steadier when
other processes share the cores (it still counts the thread pool's spinning, which
`--threads 1` avoids).

Usage: python benchmarks/probes.py [repetitions] [--preset gpt2] [--lengths 64,256]
                                   [--clock wall|cpu] [--threads N]
Last line: probes_ratio_T256=<median> (<min>..<max>) attn1_ratio_T256=... attnall_ratio_T256=...
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from gpt_tui.engine.analysis.attention import head_summaries
from gpt_tui.engine.analysis.probes import Probes
from gpt_tui.models import build_model, make_config

WAYS = ("probes", "attn1", "attnall")
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def timed(fn: Callable[[], object]) -> float:
    start = clock()
    fn()
    return clock() - start


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}..{max(values):.3f})"


def measure(model: torch.nn.Module, T: int, reps: int) -> tuple[list[float], dict[str, list]]:
    """Bare times (s) per round, and per round each way's ratio to that round's bare time;
    also "switch": seconds to view one more layer after an attnall pass."""
    idx = torch.randint(0, model.config.vocab_size, (1, T))
    middle = model.config.n_layer // 2

    def bare() -> float:
        with torch.inference_mode():
            return timed(lambda: model(idx))

    def probed(layers: object, view: bool) -> float:
        with Probes(model, attention_layers=layers) as probes:
            elapsed = timed(lambda: (probes.run(idx), probes.records))
            if view:
                elapsed += timed(lambda: probes.pattern(middle))
            return elapsed

    switch: list[float] = []

    def attnall() -> float:
        with Probes(model, attention_layers="all") as probes:
            elapsed = timed(lambda: (probes.run(idx), probes.records))
            switch.append(timed(lambda: head_summaries(probes.pattern(middle))))
            return elapsed

    runs: dict[str, Callable[[], float]] = {
        "bare": bare,
        "probes": lambda: probed((), False),
        "attn1": lambda: probed([middle], True),
        "attnall": attnall,
    }
    for _ in range(2):  # warm up allocator, kernels and the thread pool
        for run in runs.values():
            run()
    switch.clear()
    bares: list[float] = []
    ratios: dict[str, list] = {name: [] for name in WAYS}
    for _ in range(reps):
        times = {name: run() for name, run in runs.items()}
        bares.append(times["bare"])
        for name in WAYS:
            ratios[name].append(times[name] / times["bare"])
    ratios["switch"] = switch
    return bares, ratios


def model_for(preset: str, T: int) -> torch.nn.Module:
    """The preset, its context stretched to T when shorter (random weights, seed 0)."""
    config = make_config(preset)
    if config.context_len < T:
        key = "block_size" if config.family == "nanogpt" else "sequence_len"
        config = make_config(preset, overrides={key: T})
    return build_model(config, "cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reps", nargs="?", type=int, default=7)
    parser.add_argument("--preset", default="gpt2")
    parser.add_argument("--lengths", default="64,256", help="comma-separated T values")
    parser.add_argument("--clock", choices=CLOCKS, default="wall")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    global clock
    clock = CLOCKS[args.clock]
    lengths = [int(t) for t in args.lengths.split(",")]
    print(
        f"{args.preset}, CPU, {torch.get_num_threads()} threads, {args.reps} rounds, "
        f"{args.clock} clock"
    )
    last = ""
    for T in lengths:
        model = model_for(args.preset, T)
        bares, ratios = measure(model, T, args.reps)
        print(
            f"T={T} bare={statistics.median(bares) * 1e3:.1f}ms "
            + " ".join(f"{n}={spread(ratios[n])}x" for n in WAYS)
            + f" switch={spread(ratios['switch'])}s"
        )
        last = " ".join(f"{n}_ratio_T{T}={spread(ratios[n])}" for n in WAYS)
        last += f" switch_s_T{T}={spread(ratios['switch'])}"
    print(last)


if __name__ == "__main__":
    main()
