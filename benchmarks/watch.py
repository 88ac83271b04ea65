"""Cost of `gpt_tui.watch` in a training loop, against the same loop unwatched.

Watched: the hooks of `engine/watch.py` (finite flags of every block, attention, MLP,
embedding and head, forward and backward, one host read per step) with `every=1` and the
optimizer's post-step check. Bare: the same steps with no hook. Two copies of the same
model and optimizer take the same batches; steps run interleaved A, B, A, B so that drift
hits both alike, and each pair's ratio is summarised by its median and spread. One torch
thread: on a shared machine, more threads measure the neighbours more than the step.

Usage: python benchmarks/watch.py [repetitions] [preset] [batch] [block]
       (default 21, small, 8, 64)
Last line: watch_ratio=<median> (target <= 1.05)
"""

from __future__ import annotations

import copy
import statistics
import sys
import time

import torch

import gpt_tui
from gpt_tui.models import build_model, make_config


def main() -> None:
    torch.set_num_threads(1)
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 21
    preset = sys.argv[2] if len(sys.argv) > 2 else "small"
    rows = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    block = int(sys.argv[4]) if len(sys.argv) > 4 else 64
    config = make_config(preset, "nanogpt")
    watched_model = build_model(config, "cpu", seed=0)
    bare_model = copy.deepcopy(watched_model)
    block = min(block, config.block_size)
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
            loss.item()  # a training loop's usual read of the loss
            return time.perf_counter() - start

        return step, optimizer

    watched, optimizer = stepper(watched_model)
    bare, _ = stepper(bare_model)
    with gpt_tui.watch(watched_model, optimizer=optimizer, report=None):
        watched(), bare()  # warm up
        ratios, watched_s, bare_s = [], [], []
        for i in range(reps):
            pair = (watched, bare) if i % 2 == 0 else (bare, watched)
            times = {fn: fn() for fn in pair}
            watched_s.append(times[watched])
            bare_s.append(times[bare])
            ratios.append(times[watched] / times[bare])
    print(
        f"{preset} B={rows} T={block}: watched step {statistics.median(watched_s) * 1e3:.1f}ms, "
        f"bare step {statistics.median(bare_s) * 1e3:.1f}ms; ratio pair by pair: median "
        f"{statistics.median(ratios):.3f}, min {min(ratios):.3f}, max {max(ratios):.3f}"
    )
    print(f"watch_ratio={statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
