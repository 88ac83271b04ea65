"""Cost of laying a training step open, against the same step taken plainly.

Hooked: `training.train_step` (probes on the forward, full backward hooks with stats, the
per-parameter grad norms, clipping, an AdamW step with update ratios, and the weights put
back). Bare: zero the grads, forward, cross-entropy, backward, clip, a fresh AdamW's step,
with nothing recorded and nothing put back. The same batch, the same model; runs
interleaved A, B, A, B so that drift hits both alike, and the ratio of each pair is
summarised by its median and spread. One torch thread: on a shared machine, more threads
measure the neighbours more than the step.

Usage: python benchmarks/train_step.py [repetitions] [preset] [batch] [block] [wall|cpu]
       (default 9, small, 8, 64, wall); `cpu` times with the process's CPU time, steadier
       than the wall clock when neighbours are busy.
Last line: train_step_ratio=<median> (<min>..<max>) (target <= 1.15)
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
import torch.nn.functional as F

from gpt_tui.engine.core.session import ModelSpec, Session
from gpt_tui.engine.training.step import StepOptions, make_optimizer, train_step
from gpt_tui.io.batches import Batch

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f}, min {min(values):.3f}, max {max(values):.3f}"


def main() -> None:
    torch.set_num_threads(1)
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 9
    preset = sys.argv[2] if len(sys.argv) > 2 else "small"
    rows = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    block = int(sys.argv[4]) if len(sys.argv) > 4 else 64
    clock = CLOCKS[sys.argv[5] if len(sys.argv) > 5 else "wall"]
    session = Session.open(ModelSpec(config=preset, device="cpu"))
    model, vocab = session.model, session.vocab_size
    block = min(block, session.context_len or block)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(vocab, (rows, block), generator=gen)
    y = torch.randint(vocab, (rows, block), generator=gen)
    batch = Batch(x, y, "random", ())
    opts = StepOptions()

    def hooked() -> float:
        start = clock()
        train_step(model, batch, opts)
        return clock() - start

    params = [p for p in model.parameters() if p.requires_grad]

    def bare() -> float:
        start = clock()
        model.zero_grad(set_to_none=True)
        logits = model(x)
        logits = logits[0] if isinstance(logits, tuple) else logits
        F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1)).backward()
        torch.nn.utils.clip_grad_norm_(params, opts.clip)
        make_optimizer(params, opts).step()
        return clock() - start

    model.train(False)
    hooked(), bare()  # warm up
    ratios, hooked_s, bare_s = [], [], []
    for i in range(reps):
        pair = (hooked, bare) if i % 2 == 0 else (bare, hooked)
        times = {fn: fn() for fn in pair}
        hooked_s.append(times[hooked])
        bare_s.append(times[bare])
        ratios.append(times[hooked] / times[bare])
    print(
        f"{preset} B={rows} T={block}: hooked step {statistics.median(hooked_s) * 1e3:.1f}ms, "
        f"bare step {statistics.median(bare_s) * 1e3:.1f}ms; ratio pair by pair: {spread(ratios)}"
    )
    print(
        f"train_step_ratio={statistics.median(ratios):.3f} ({min(ratios):.3f}..{max(ratios):.3f})"
    )


if __name__ == "__main__":
    main()
