"""Cost of `gpt_tui.watch` in a training loop, against the same loop unwatched.

Watched: the hooks of `engine/training/watch.py` (finite flags of every block, attention, MLP,
embedding and head, forward and backward, one host read per step) with `every=1` and the
optimizer's checks before and after its step. Bare: the same steps with no hook. Two
copies of the same model and optimizer take the same batches; steps run interleaved A, B,
A, B so that drift hits both alike, and each pair's ratio is summarised by its median and
spread. One torch thread: on a shared machine, more threads measure the neighbours more
than the step.

`--nproc N` runs it under torchrun (N processes, gloo on CPU, both models wrapped in DDP):
the watched step then also pays the ranks' two small collectives per step. Rank 0 prints.

Usage: python benchmarks/watch.py [repetitions] [preset] [batch] [block] [--nproc N]
       (default 21, small, 8, 64, 1)
Last line: watch_ratio=<median> (target <= 1.05)
"""

from __future__ import annotations

import argparse
import copy
import os
import socket
import statistics
import subprocess
import sys
import time

import torch

import gpt_tui
from gpt_tui.models import build_model, make_config


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reps", nargs="?", type=int, default=21)
    parser.add_argument("preset", nargs="?", default="small")
    parser.add_argument("rows", nargs="?", type=int, default=8)
    parser.add_argument("block", nargs="?", type=int, default=64)
    parser.add_argument("--nproc", type=int, default=1, help="processes under torchrun")
    return parser.parse_args()


def launch(args: argparse.Namespace) -> int:
    """Run this script again under torchrun with `args.nproc` processes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run"]
    command += ["--nproc_per_node", str(args.nproc), "--master_port", str(port), sys.argv[0]]
    command += [str(args.reps), args.preset, str(args.rows), str(args.block)]
    return subprocess.run(command, check=False).returncode


def main() -> None:
    args = arguments()
    if args.nproc > 1 and "RANK" not in os.environ:
        sys.exit(launch(args))
    torch.set_num_threads(1)
    distributed = "RANK" in os.environ
    if distributed:
        torch.distributed.init_process_group("gloo")
    config = make_config(args.preset, "nanogpt")
    watched_model = build_model(config, "cpu", seed=0)
    bare_model = copy.deepcopy(watched_model)
    block = min(args.block, config.block_size)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(config.vocab_size, (args.rows, block), generator=gen)
    y = torch.randint(config.vocab_size, (args.rows, block), generator=gen)

    def stepper(model: torch.nn.Module):
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        run = torch.nn.parallel.DistributedDataParallel(model) if distributed else model

        def step() -> float:
            start = time.perf_counter()
            _, loss = run(x, y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss.item()  # a training loop's usual read of the loss
            return time.perf_counter() - start

        return step, optimizer, run

    watched, optimizer, watched_run = stepper(watched_model)
    bare, _, _ = stepper(bare_model)
    with gpt_tui.watch(watched_run, optimizer=optimizer, report=None):
        watched(), bare()  # warm up
        ratios, watched_s, bare_s = [], [], []
        for i in range(args.reps):
            pair = (watched, bare) if i % 2 == 0 else (bare, watched)
            times = {fn: fn() for fn in pair}
            watched_s.append(times[watched])
            bare_s.append(times[bare])
            ratios.append(times[watched] / times[bare])
    if distributed:
        world = torch.distributed.get_world_size()
        torch.distributed.destroy_process_group()
        if int(os.environ["RANK"]) != 0:
            return
    where = f" under torchrun ({world} processes, gloo, DDP)" if distributed else ""
    print(
        f"{args.preset} B={args.rows} T={block}{where}: watched step "
        f"{statistics.median(watched_s) * 1e3:.1f}ms, bare step "
        f"{statistics.median(bare_s) * 1e3:.1f}ms; ratio pair by pair: median "
        f"{statistics.median(ratios):.3f}, min {min(ratios):.3f}, max {max(ratios):.3f}"
    )
    print(f"watch_ratio={statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
