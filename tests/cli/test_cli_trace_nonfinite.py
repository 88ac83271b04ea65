"""`gpt-tui trace` on a model whose logits are NaN: no ranking of next tokens (every
probability is NaN, so a ranking would be arbitrary), a note saying the logits are not
finite instead, in text and in JSON."""

from __future__ import annotations

import json

import torch

from gpt_tui.cli import run
from gpt_tui.io.checkpoints import save_nanogpt_checkpoint
from gpt_tui.io.tokenizers import CharTokenizer
from gpt_tui.models import build_model, make_config

TEXT = "ROMEO: What light through yonder window breaks?\n"


def checkpoint(folder, nan: bool) -> str:
    tokenizer = CharTokenizer.from_text(TEXT)
    model = build_model(make_config("tiny", "nanogpt", {"vocab_size": tokenizer.vocab_size}))
    if nan:
        with torch.no_grad():
            model.transformer.h[1].mlp.c_proj.weight[0, 0] = float("nan")
    save_nanogpt_checkpoint(folder, model, iter_num=1, best_val_loss=1.0, tokenizer=tokenizer)
    return str(folder / "ckpt.pt")


def test_nan_logits_rank_no_next_token_and_say_why(tmp_path, capsys) -> None:
    path = checkpoint(tmp_path / "nan", nan=True)
    args = ["trace", "--checkpoint", path, "--prompt", "ROMEO:"]
    assert run(args) == 0
    out = capsys.readouterr().out
    assert "next token:" not in out
    vocab = len(set(TEXT))
    said = f"the logits at the last position are not finite ({vocab} NaN, 0 Inf of {vocab})"
    assert f"note: {said}: no next token is ranked" in " ".join(out.split())
    # What a NaN row's mean, min and max are is said under the table.
    assert "rows with NaN or Inf: their mean, std, rms, min and max are over the finite" in (
        " ".join(out.split())
    )
    assert run([*args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["next_tokens"] == [] and said in data["note"]


def test_finite_logits_still_rank_next_tokens(tmp_path, capsys) -> None:
    path = checkpoint(tmp_path / "ok", nan=False)
    assert run(["trace", "--checkpoint", path, "--prompt", "ROMEO:"]) == 0
    out = capsys.readouterr().out
    assert "next token: '" in out and "not finite" not in out
    assert "rows with NaN or Inf" not in out
