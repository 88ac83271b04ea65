"""How the cost of a forward, with probes and attention, grows with context and model size.

A table over T x size. Each cell runs in its own subprocess (so its peak RSS is its own)
and measures, interleaved as `probes.py` does: the bare forward's median time, the
probes / one-layer-attention / all-layers-available ratios (medians), the time to view
one more layer after the all-layers pass, and the process's peak RSS.

The last line fits log(time) = a·log(T) + b·log(params) + c to the bare and all-layer
times by least squares: the exponents say how cost grows with T and with size.

    python benchmarks/scale.py [--quick] [--sizes small,gpt2,gpt2-medium]
                               [--lengths 64,256,1024] [--reps 3] [--clock wall|cpu]
                               [--threads N]

`--quick` is `--sizes small,gpt2 --lengths 64,256 --reps 2`.
Last line: `exponent_T=<a> exponent_size=<b> (bare) all_layers_exponent_T=<a'> ...`
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch


def cell(preset: str, T: int, reps: int, clock: str, threads: int | None) -> dict[str, float]:
    """One cell, measured in this process (the parent runs it as a subprocess)."""
    import probes  # benchmarks/probes.py, beside this file
    from probes import measure, model_for

    probes.clock = probes.CLOCKS[clock]
    if threads:
        torch.set_num_threads(threads)

    model = model_for(preset, T)
    params = sum(p.numel() for p in model.parameters())
    bares, ratios = measure(model, T, reps)
    bare = statistics.median(bares)
    out = {"params": params, "bare_s": bare}
    for name, values in ratios.items():
        out[name] = statistics.median(values)
    out["attnall_s"] = bare * out["attnall"]
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_cell(preset: str, T: int, args: argparse.Namespace) -> dict[str, float]:
    argv = ["--cell", preset, str(T), "--reps", str(args.reps), "--clock", args.clock]
    argv += ["--threads", str(args.threads)] if args.threads else []
    result = subprocess.run(
        [sys.executable, __file__, *argv],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def exponents(rows: list[tuple[int, dict[str, float]]], key: str) -> tuple[float, float]:
    """Least-squares exponents of T and of the parameter count for `key`'s time."""
    X = np.array([[np.log(T), np.log(r["params"]), 1.0] for T, r in rows])
    y = np.log([r[key] for _, r in rows])
    (a, b, _), *_ = np.linalg.lstsq(X, y, rcond=None)
    return float(a), float(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default="small,gpt2,gpt2-medium")
    parser.add_argument("--lengths", default="64,256,1024")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--cell", nargs=2, metavar=("PRESET", "T"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        preset, T = args.cell[0], int(args.cell[1])
        print(json.dumps(cell(preset, T, args.reps, args.clock, args.threads)))
        return
    if args.quick:
        args.sizes, args.lengths, args.reps = "small,gpt2", "64,256", 2
    sizes = args.sizes.split(",")
    lengths = [int(t) for t in args.lengths.split(",")]
    print(
        f"CPU, {args.threads or torch.get_num_threads()} threads, {args.reps} interleaved "
        f"rounds per cell (medians, {args.clock} clock); ratios against bare"
    )
    print(
        f"{'size':<12}{'T':>6}{'bare ms':>10}{'probes':>8}{'attn1':>8}{'attnall':>9}"
        f"{'switch ms':>11}{'peak RSS MiB':>14}"
    )
    rows: list[tuple[int, dict[str, float]]] = []
    for preset in sizes:
        for T in lengths:
            r = run_cell(preset, T, args)
            rows.append((T, r))
            print(
                f"{preset:<12}{T:>6}{r['bare_s'] * 1e3:>10.1f}{r['probes']:>8.2f}"
                f"{r['attn1']:>8.2f}{r['attnall']:>9.2f}{r['switch'] * 1e3:>11.1f}"
                f"{r['peak_rss_mib']:>14.0f}",
                flush=True,
            )
    if len(set(lengths)) < 2 or len(set(sizes)) < 2:
        print("exponents need at least two lengths and two sizes")
        return
    a, b = exponents(rows, "bare_s")
    a2, b2 = exponents(rows, "attnall_s")
    print(
        f"exponent_T={a:.2f} exponent_size={b:.2f} (bare forward) "
        f"all_layers_exponent_T={a2:.2f} all_layers_exponent_size={b2:.2f}"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
