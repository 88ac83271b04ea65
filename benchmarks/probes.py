"""Cost of probes and attention patterns relative to a bare forward pass (GPT-2 small, CPU).

Four ways to run the same forward, measured interleaved in one process (so a busy
machine slows them alike) and summarised by medians:

- bare: the model alone, no hooks;
- probes: hooks on every probe point (embeddings, blocks, attention, MLP, residual
  points, final norm, head) with on-device stats and the logits' stats, one transfer;
- attn1: probes + one layer's attention inputs kept and its pattern recomputed;
- attnall: probes + every layer's pattern recomputed.

Usage: python benchmarks/probes.py [repetitions]   (default 7)
Last line: probes_ratio_T256=<x> attn1_ratio_T256=<y> attnall_ratio_T256=<z>
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from gpt_tui.engine.probes import Probes
from gpt_tui.models import build_model, make_config


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(model: torch.nn.Module, T: int, reps: int) -> tuple[float, dict[str, float]]:
    """Median bare time and the median ratio of each probed way to it, at length T."""
    idx = torch.randint(0, model.config.vocab_size, (1, T))

    def bare() -> float:
        with torch.inference_mode():
            return timed(lambda: model(idx))

    def probed(layers) -> float:
        with Probes(model, attention_layers=layers) as probes:
            return timed(lambda: probes.run(idx)) + timed(probes.patterns)

    runs = {
        "bare": bare,
        "probes": lambda: probed(()),
        "attn1": lambda: probed([model.config.n_layer // 2]),
        "attnall": lambda: probed("all"),
    }
    for run in runs.values():  # warm up allocator and kernels
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(reps):
        for name, run in runs.items():
            times[name].append(run())
    med = {name: statistics.median(ts) for name, ts in times.items()}
    return med["bare"], {name: med[name] / med["bare"] for name in runs}


def main() -> None:
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    model = build_model(make_config("gpt2"), "cpu")
    ratios: dict[int, dict[str, float]] = {}
    for T in (64, 256):
        bare, ratios[T] = measure(model, T, reps)
        print(
            f"T={T} bare={bare * 1e3:.1f}ms "
            + " ".join(f"{n}={ratios[T][n]:.3f}x" for n in ("probes", "attn1", "attnall"))
        )
    r = ratios[256]
    print(
        f"probes_ratio_T256={r['probes']:.3f} attn1_ratio_T256={r['attn1']:.3f} "
        f"attnall_ratio_T256={r['attnall']:.3f}"
    )


if __name__ == "__main__":
    main()
