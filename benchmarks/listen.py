"""Cost of `gpt_tui.listen` while nobody is attached, against the same loop without it.

Listened: the hooks of `gpt_tui/listener.py` (remember the batch and the output, a flag read
at each optimizer step) and its socket's accepting thread, idle. Bare: the same steps.
Two copies of the same model and optimizer take the same batches, interleaved A, B, A, B;
each pair's ratio is summarised by its median and spread. One torch thread.

Usage: python benchmarks/listen.py [repetitions] [preset] [batch] [block]
       (default 21, small, 8, 64)
Last line: listen_ratio=<median> (target <= 1.01)
"""

from __future__ import annotations

import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import gpt_tui
from gpt_tui.models import build_model, make_config


def main() -> None:
    torch.set_num_threads(1)
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 21
    preset = sys.argv[2] if len(sys.argv) > 2 else "small"
    rows = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    config = make_config(preset, "nanogpt")
    block = min(int(sys.argv[4]) if len(sys.argv) > 4 else 64, config.block_size)
    listened_model = build_model(config, "cpu", seed=0)
    bare_model = copy.deepcopy(listened_model)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(config.vocab_size, (rows, block), generator=gen)
    y = torch.randint(config.vocab_size, (rows, block), generator=gen)

    def stepper(model: torch.nn.Module):
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step() -> float:
            start = time.perf_counter()
            _, loss = model(x, y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss.item()
            return time.perf_counter() - start

        return step, optimizer

    listened, optimizer = stepper(listened_model)
    bare, _ = stepper(bare_model)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.sock"
        with gpt_tui.listen(listened_model, optimizer=optimizer, path=path):
            listened(), bare()  # warm up
            ratios, listened_s, bare_s = [], [], []
            for i in range(reps):
                pair = (listened, bare) if i % 2 == 0 else (bare, listened)
                times = {fn: fn() for fn in pair}
                listened_s.append(times[listened])
                bare_s.append(times[bare])
                ratios.append(times[listened] / times[bare])
    print(
        f"{preset} B={rows} T={block}: listened step {statistics.median(listened_s) * 1e3:.1f}"
        f"ms, bare step {statistics.median(bare_s) * 1e3:.1f}ms; ratio pair by pair: median "
        f"{statistics.median(ratios):.3f}, min {min(ratios):.3f}, max {max(ratios):.3f}"
    )
    print(f"listen_ratio={statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
