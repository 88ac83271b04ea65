"""Cost of comparing and patching, relative to what they are made of (CPU).

- diff: `compare()` of two runs (the same model on two prompts of one length: both runs
  probed with every input and output kept, then every matched probe's distances) against
  one probed run (`Probes.run`, stats on every probe). Target: diff_ratio <= 2.3.
- patch sweep: `Patcher(...).sweep("resid_pre")` (the clean run recorded, the corrupted
  run, then n_layer * T patched runs as batched rows) against n_layer * T + 2 bare forwards
  of one prompt, the work it replaces. Target: patch_sweep_ratio <= 1.2.

Each pair is measured interleaved (A, B, A, B, ..., which runs first alternating) so that a
busy machine slows both alike; each ratio is summarised by its median and spread.

Usage: python benchmarks/compare.py [repetitions] [preset ...]   (default 5, small gpt2)
Last lines, per preset: diff_ratio[<preset>]=<x>, patch_sweep_ratio[<preset>]=<x>; then
diff_ratio=<x> patch_sweep_ratio=<x> for the first preset.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import torch

from gpt_tui.engine.analysis.compare import Run, compare
from gpt_tui.engine.analysis.patching import Patcher
from gpt_tui.engine.analysis.probes import Probes
from gpt_tui.models import build_model, make_config

T = 16


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f}, min {min(values):.3f}, max {max(values):.3f}"


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(a: Callable[[], object], b: Callable[[], object], reps: int) -> list[float]:
    """Per pair, time(a) / time(b), which runs first alternating."""
    a(), b()  # warm up
    ratios = []
    for i in range(reps):
        if i % 2 == 0:
            ta, tb = timed(a), timed(b)
        else:
            tb, ta = timed(b), timed(a)
        ratios.append(ta / tb)
    return ratios


def measure(preset: str, reps: int) -> tuple[list[float], list[float]]:
    model = build_model(make_config(preset), "cpu")
    gen = torch.Generator().manual_seed(0)
    clean = torch.randint(0, model.config.vocab_size, (T,), generator=gen).tolist()
    corrupt = list(clean)
    corrupt[T // 2] = (corrupt[T // 2] + 1) % model.config.vocab_size
    idx = torch.tensor([clean])

    def diff() -> None:
        compare(Run(model, clean), Run(model, corrupt, label="B"))

    def probed() -> None:
        with Probes(model) as probes:
            probes.run(idx)
            probes.records  # noqa: B018 - the stats are read back when the records are

    with torch.inference_mode():
        last = model(idx)[0][0, -1]
    answer, wrong = int(last.argmax()), int(last.argmin())
    n_forwards = model.config.n_layer * T + 2

    def sweep() -> None:
        Patcher(model, clean, corrupt, answer, wrong, whats=["resid_pre"]).sweep("resid_pre")

    def bare() -> None:
        with torch.inference_mode():
            for _ in range(n_forwards):
                model(idx)

    return interleaved(diff, probed, reps), interleaved(sweep, bare, max(3, reps // 2))


def main() -> None:
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    presets = sys.argv[2:] or ["small", "gpt2"]
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = {}
    for preset in presets:
        diff, sweep = measure(preset, reps)
        results[preset] = (statistics.median(diff), statistics.median(sweep))
        print(f"{preset} T={T}: diff / one probed run: {spread(diff)}")
        print(f"{preset} T={T}: resid_pre sweep / (n_layer*T+2) bare forwards: {spread(sweep)}")
    for preset, (diff, sweep) in results.items():
        print(f"diff_ratio[{preset}]={diff:.3f} patch_sweep_ratio[{preset}]={sweep:.3f}")
    first = results[presets[0]]
    print(f"diff_ratio={first[0]:.3f} patch_sweep_ratio={first[1]:.3f}")


if __name__ == "__main__":
    main()
