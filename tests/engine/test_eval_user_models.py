"""`evaluate` on users' model files: nanoGPT's forward gives every position's logits only
with targets, nanochat's without; either way the loss is the one the model itself reports."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from gpt_tui.engine.analysis.evaluate import EvalError, evaluate
from gpt_tui.io.model_file import load_model_file

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "user_models"

CASES = {
    "model.py": dict(
        block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=False
    ),
    "gpt.py": dict(sequence_len=16, vocab_size=65, n_layer=2, n_head=4, n_kv_head=2, n_embd=32),
}


def user_model(file: str) -> nn.Module:
    args = CASES[file]
    found = load_model_file(FIXTURES / file, model_args=args)
    torch.manual_seed(0)
    model = found.model_class(found.config_class(**args)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model


def own_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The mean loss the file's forward returns when given targets."""
    out = model(x, targets=y)
    loss = out[1] if isinstance(out, tuple) else out  # nanoGPT (logits, loss), nanochat loss
    return float(loss)


@pytest.mark.parametrize("file", sorted(CASES))
def test_eval_scores_a_user_model_as_its_own_forward_does(file):
    model = user_model(file)
    context, windows = 16, 5
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 65, (context * windows + 1,), generator=g)
    x = torch.stack([ids[i * context : (i + 1) * context] for i in range(windows)])
    y = torch.stack([ids[i * context + 1 : (i + 1) * context + 1] for i in range(windows)])
    with torch.no_grad():
        expected = own_loss(model, x, y)
    result = evaluate(model, ids.tolist(), context, torch.device("cpu"), batch_size=2)
    assert result.tokens == context * windows and result.windows == windows
    assert result.loss == pytest.approx(expected, rel=1e-5)


class LastOnly(nn.Module):
    """A forward that keeps only the last position's logits and takes no targets."""

    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(65, 8)
        self.lm_head = nn.Linear(8, 65)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.wte(idx)[:, [-1], :])  # (B, 1, V)


def test_a_model_that_never_gives_every_position_is_told_in_one_line():
    with pytest.raises(EvalError, match=r"every position, \(2, 8\) \+ \(V,\); model\(x\) "):
        evaluate(LastOnly(), list(range(17)), 8, torch.device("cpu"))
