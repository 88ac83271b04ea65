"""Generation speed: KV-cached steps vs full recomputation, side by side in one run.

The `small` preset (nanoGPT shakespeare-char shape, context 256) on CPU generates the same
number of tokens from a short prompt through `GenerationSession` — the laid-open path the
app uses, one `SamplingStep` per token — once with the KV cache and once recomputing the
whole context every step. Probes are attached when `gpt_tui.engine.probes` is available.

    python benchmarks/generate.py [--tokens 200] [--threads N] [--no-probes]

Last line: `kv_speedup=<x>` (target >= 10).
"""

from __future__ import annotations

import argparse
import string
import time
from typing import Any

import torch

from gpt_tui.engine.sampling import GenerationSession
from gpt_tui.io.tokenizers import CharTokenizer
from gpt_tui.models import build_model, make_config

PROMPT = "ROMEO:\nWhat light"


def attach_probes(model: torch.nn.Module) -> tuple[Any, str]:
    """Probes on every Block/attention/MLP if the probes module imports, else None and why."""
    try:
        from gpt_tui.engine.probes import Probes
    except Exception as exc:  # noqa: BLE001 - another engineer's module, possibly mid-edit
        return None, f"probes: off (gpt_tui.engine.probes is not importable yet: {exc!r})"
    return Probes(model), "probes: on (every Block/attention/MLP, stats read once per token)"


def tokens_per_second(session: GenerationSession, n: int, probes: Any) -> float:
    """Time n steps as the app takes them: a step, then the probes' one host transfer."""

    def one_step() -> None:
        session.step()
        if probes is not None:
            probes.flush()

    session.reset()
    for _ in range(4):  # warm up the kernels and the cache path
        one_step()
    session.reset()
    start = time.perf_counter()
    for _ in range(n):
        one_step()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=200, help="tokens generated per mode")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-probes", action="store_true", help="measure the bare model")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    config = make_config("small")
    model = build_model(config, "cpu")
    tokenizer = CharTokenizer(sorted(set("\n !$&',-.3:;?" + string.ascii_letters)))
    prompt = tokenizer.encode(PROMPT)
    n = min(args.tokens, config.context_len - len(prompt))
    probes, probes_note = (
        (None, "probes: off (--no-probes)") if args.no_probes else (attach_probes(model))
    )
    print(
        f"small nanoGPT, {config.n_layer} layers, {config.n_embd} wide, context "
        f"{config.context_len}; CPU, {torch.get_num_threads()} threads"
    )
    print(f"{n} tokens from a {len(prompt)}-token prompt, seed 0; {probes_note}")

    cached = GenerationSession(model, tokenizer, prompt, seed=0, use_kv_cache=True)
    full = GenerationSession(model, tokenizer, prompt, seed=0, use_kv_cache=False)
    try:
        full_tps = tokens_per_second(full, n, probes)
        cached_tps = tokens_per_second(cached, n, probes)
    finally:
        if probes is not None:
            probes.close()
    same = cached.ids == full.ids
    print(f"full recomputation: {full_tps:8.1f} tokens/s")
    print(f"KV cache:           {cached_tps:8.1f} tokens/s")
    print(f"same tokens: {'yes' if same else 'no (float rounding differs between the paths)'}")
    print(f"kv_speedup={cached_tps / full_tps:.2f}")


if __name__ == "__main__":
    main()
