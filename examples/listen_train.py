"""A training loop that `gpt-tui attach` can look into while it runs.

    python examples/listen_train.py [--steps N]      # then, in another terminal:
    gpt-tui attach PID --do forward --do train-step

The `tiny` model on random tokens; `gpt_tui.listen` prints the process id to attach to.
"""

from __future__ import annotations

import argparse

import torch

import gpt_tui
from gpt_tui.models import build_model, make_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20000)
    args = parser.parse_args()
    model = build_model(make_config("tiny", "nanogpt"), "cpu", seed=0)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    with gpt_tui.listen(model, optimizer=optimizer):
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
