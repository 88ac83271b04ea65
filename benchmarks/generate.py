"""Generation speed: KV-cached steps vs full recomputation, side by side in one run.

The `small` preset (nanoGPT shakespeare-char shape, context 256) on CPU generates the same
tokens through `GenerationSession` — the laid-open path the app uses, one `SamplingStep`
per token — once with the KV cache and once recomputing the whole context every step, with
probes on. Decode speed is timed after the first step (the prompt's prefill, the same full
forward in both modes). The two modes are measured interleaved (full, cached, cached, full,
...: each round alternates which goes first) so a change in load hits both alike; each
round gives one speedup and the last lines print their median and spread. Two regimes:

- short prompt: 200 tokens from a 17-token prompt (contexts 17..217);
- full context: 32 tokens after a 224-token prompt (contexts 224..256), "context 256".

A cached step reads every weight once for one token (memory-bound, ~5 ms here), a full
recomputation does the whole context's compute, so the ratio grows with the context.

    python benchmarks/generate.py [--rounds N] [--threads N] [--no-probes] [--clock wall|cpu]

`--clock cpu` times with the process's CPU time: with one thread, steadier than the wall
clock when neighbours are busy (a loaded machine stretches both modes' wall time unevenly).

Last lines: `kv_speedup_short=<median> (<min>..<max>)` then `kv_speedup=<median> (<min>..<max>)`
(full context; target >= 10 in the median).
"""

from __future__ import annotations

import argparse
import statistics
import string
import time
from typing import Any

import torch

from gpt_tui.engine.generation.sampling import GenerationSession
from gpt_tui.io.tokenizers import CharTokenizer
from gpt_tui.models import build_model, make_config

PROMPT = "ROMEO:\nWhat light"
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def attach_probes(model: torch.nn.Module) -> tuple[Any, str]:
    """Probes on every Block/attention/MLP if the probes module imports, else None and why."""
    try:
        from gpt_tui.engine.analysis.probes import Probes
    except Exception as exc:  # noqa: BLE001 - another engineer's module, possibly mid-edit
        return None, f"probes: off (gpt_tui.engine.analysis.probes is not importable yet: {exc!r})"
    return Probes(model), "probes: on (every Block/attention/MLP, stats read once per token)"


def tokens_per_second(session: GenerationSession, n: int, probes: Any) -> float:
    """Time n decode steps as the app takes them (a step, then the probes' one host
    transfer), after an untimed first step that prefills the prompt."""

    def one_step() -> None:
        session.step()
        if probes is not None:
            probes.flush()

    session.reset()
    for _ in range(4):  # warm up the kernels and the cache path
        one_step()
    session.reset()
    one_step()  # the prefill: the same full forward with or without the cache
    start = clock()
    for _ in range(n):
        one_step()
    return n / (clock() - start)


def measure(model, tokenizer, prompt: list[int], n: int, probes: Any, rounds: int) -> list[float]:
    """Per round, the cached / full tokens-per-second ratio (the order alternates)."""
    cached = GenerationSession(model, tokenizer, prompt, seed=0, use_kv_cache=True)
    full = GenerationSession(model, tokenizer, prompt, seed=0, use_kv_cache=False)
    ratios, full_tps, cached_tps = [], [], []
    for i in range(rounds):
        order = (full, cached) if i % 2 == 0 else (cached, full)
        tps = {id(s): tokens_per_second(s, n, probes) for s in order}
        full_tps.append(tps[id(full)])
        cached_tps.append(tps[id(cached)])
        ratios.append(tps[id(cached)] / tps[id(full)])
    print(
        f"  {n} tokens after a {len(prompt)}-token prompt, {rounds} rounds: full recomputation "
        f"{statistics.median(full_tps):7.1f} tokens/s, KV cache "
        f"{statistics.median(cached_tps):7.1f} tokens/s (medians), "
        f"same tokens: {'yes' if cached.ids == full.ids else 'no'}"
    )
    return ratios


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}..{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-probes", action="store_true", help="measure the bare model")
    parser.add_argument("--clock", choices=CLOCKS, default="wall", help="wall or CPU time")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)

    config = make_config("small")
    model = build_model(config, "cpu")
    tokenizer = CharTokenizer(sorted(set("\n !$&',-.3:;?" + string.ascii_letters)))
    short = tokenizer.encode(PROMPT)
    long = (short * (config.context_len // len(short) + 1))[: config.context_len - 32]
    probes, probes_note = (
        (None, "probes: off (--no-probes)") if args.no_probes else (attach_probes(model))
    )
    print(
        f"small nanoGPT, {config.n_layer} layers, {config.n_embd} wide, context "
        f"{config.context_len}; CPU, {torch.get_num_threads()} threads, {args.clock} clock; "
        f"{probes_note}"
    )
    try:
        short_ratios = measure(model, tokenizer, short, 200, probes, args.rounds)
        full_ratios = measure(model, tokenizer, long, 31, probes, args.rounds)
    finally:
        if probes is not None:
            probes.close()
    print(f"kv_speedup_short={spread(short_ratios)}")
    print(f"kv_speedup={spread(full_ratios)}")


if __name__ == "__main__":
    main()
