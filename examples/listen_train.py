"""A training loop that `gpt-tui attach` can look into while it runs.

    python examples/listen_train.py [--steps N] [--tcp PORT] [--watch]
    gpt-tui attach PID --do forward --do train-step      # in another terminal

The `tiny` model on random tokens; `gpt_tui.listen` prints the process id to attach to
(`--tcp PORT`: a TCP endpoint on 127.0.0.1 and its token). `--watch`: the loop runs
inside `gpt_tui.watch(..., listen=...)`, whose figures `attach` shows too.
"""

from __future__ import annotations

import argparse

import torch

import gpt_tui
from gpt_tui.models import build_model, make_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--tcp", type=int, metavar="PORT", help="listen on 127.0.0.1:PORT")
    parser.add_argument("--watch", action="store_true", help="inside gpt_tui.watch")
    args = parser.parse_args()
    model = build_model(make_config("tiny", "nanogpt"), "cpu", seed=0)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    where = {} if args.tcp is None else {"tcp": args.tcp}
    if args.watch:
        block = gpt_tui.watch(model, optimizer=optimizer, listen=where or True)
    else:
        block = gpt_tui.listen(model, optimizer=optimizer, **where)
    with block:
        for step in range(args.steps):
            x = torch.randint(65, (8, 16), generator=gen)
            y = torch.randint(65, (8, 16), generator=gen)
            _, loss = model(x, y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step % 1000 == 0:
                print(f"step {step}: loss {loss.item():.4f}", flush=True)


if __name__ == "__main__":
    main()
