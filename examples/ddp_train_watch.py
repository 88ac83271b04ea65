"""nanoGPT's DDP training loop in miniature, watched by gpt-tui under torchrun.

    torchrun --nproc_per_node 2 examples/ddp_train_watch.py [--break-rank 1 --break-step 3]
        [--micro-steps 4] [--on report|raise] [--compile] [--report gpt-tui-report]

Gloo on CPU (NCCL on GPUs: untested here), the `tiny` model, each rank its own random
batches, gradient accumulation with DDP's no_sync as train.py does it. `--break-rank R
--break-step S` puts a NaN into h.1.mlp's weight on rank R just before step S's last
micro-step: every rank then names the same first finding, the others as received through
the gradients' all-reduce, and `on="raise"` stops every rank at the same step.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import gpt_tui
from gpt_tui.models import build_model, make_config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--micro-steps", type=int, default=1, help="gradient accumulation")
    parser.add_argument("--break-rank", type=int, default=None)
    parser.add_argument("--break-step", type=int, default=3)
    parser.add_argument("--on", choices=["report", "raise"], default="raise")
    parser.add_argument("--compile", action="store_true", help="torch.compile (eager backend)")
    parser.add_argument("--report", default="gpt-tui-report")
    args = parser.parse_args()

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = build_model(make_config("tiny", "nanogpt"), "cpu", seed=0)
    model.train()
    run = torch.compile(model, backend="eager") if args.compile else model
    ddp = DDP(run)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(100 + rank)
    try:
        with gpt_tui.watch(ddp, optimizer=optimizer, on=args.on, report=args.report):
            for step in range(args.steps):
                for micro in range(args.micro_steps):
                    last = micro == args.micro_steps - 1
                    if (rank, step) == (args.break_rank, args.break_step) and last:
                        with torch.no_grad():
                            model.transformer.h[1].mlp.c_fc.weight[0, 0] = float("nan")
                    x = torch.randint(65, (4, 16), generator=gen)
                    y = torch.randint(65, (4, 16), generator=gen)
                    with contextlib.nullcontext() if last else ddp.no_sync():
                        _, loss = ddp(x, y)
                        (loss / args.micro_steps).backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if rank == 0:
                    print(f"step {step}: loss {loss.item():.4f}")
    except gpt_tui.NonFiniteError as err:
        if rank == 0:  # every rank raised the same error at the same step
            print(f"stopped at step {err.finding.step} on every rank", file=sys.stderr)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
