"""A nanoGPT-style training loop on Shakespeare, watched by gpt-tui, with a learning rate
far too high on purpose: the run diverges, and `gpt_tui.watch` names where the first
non-finite value arose and saves a case that `gpt-tui train-step --case` reopens.

    python examples/nanogpt_train_watch.py path/to/tinyshakespeare.txt [--lr 1000] [--on open]

`--on open` opens the debugger on the model and the step's batch at the finding (in a
terminal); quitting it stops the run as `raise` does.
"""

from __future__ import annotations

import argparse
import sys

import torch

import gpt_tui
from gpt_tui.io.tokenizers import CharTokenizer
from gpt_tui.models import build_model, make_config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text", help="a UTF-8 text file, e.g. tinyshakespeare.txt")
    parser.add_argument("--lr", type=float, default=1000.0, help="too high on purpose")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--report", default="gpt-tui-report")
    parser.add_argument("--on", choices=("raise", "report", "open"), default="raise")
    args = parser.parse_args()

    with open(args.text, encoding="utf-8") as f:
        text = f.read()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)

    config = make_config("tiny", "nanogpt", {"vocab_size": len(chars)})
    model = build_model(config, "cpu", seed=0)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95))
    block, batch = config.block_size, 8
    gen = torch.Generator().manual_seed(0)

    def get_batch() -> tuple[torch.Tensor, torch.Tensor]:  # as nanoGPT's train.py
        ix = torch.randint(len(data) - block, (batch,), generator=gen)
        x = torch.stack([data[i : i + block] for i in ix])
        y = torch.stack([data[i + 1 : i + 1 + block] for i in ix])
        return x, y

    try:
        vocabulary = CharTokenizer(chars)  # saved with the case: its batch reads as text
        with gpt_tui.watch(
            model, optimizer=optimizer, on=args.on, report=args.report, tokenizer=vocabulary
        ):
            for step in range(args.steps):
                x, y = get_batch()
                _, loss = model(x, y)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                print(f"step {step}: loss {loss.item():.4f}")
    except gpt_tui.NonFiniteError as err:
        print(f"stopped: {err}", file=sys.stderr)
        return 1
    print("no non-finite value: try a higher --lr")
    return 0


if __name__ == "__main__":
    sys.exit(main())
