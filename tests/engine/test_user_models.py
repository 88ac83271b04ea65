"""Users' own model files opened through the Session, as `--model-file` does: the probes
find every block, attention and MLP by structure, patterns verify, and generation through
the inspector equals the file's own forward pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gpt_tui.engine.session import ModelSpec, Session
from gpt_tui.io.model_file import load_model_file, user_forward

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "user_models"

CASES = {
    "model.py": dict(
        block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=False
    ),
    "gpt.py": dict(sequence_len=16, vocab_size=65, n_layer=2, n_head=4, n_kv_head=2, n_embd=32),
}


def save_user_checkpoint(file: str, tmp_path: Path, compiled: bool) -> Path:
    args = CASES[file]
    found = load_model_file(FIXTURES / file, model_args=args)
    torch.manual_seed(0)
    model = found.model_class(found.config_class(**args)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    prefix = "_orig_mod." if compiled else ""
    state = {prefix + k: v for k, v in model.state_dict().items()}
    path = tmp_path / "ckpt.pt"
    torch.save({"model": state, "model_args": args, "iter_num": 7, "best_val_loss": 1.5}, path)
    return path


@pytest.fixture(params=sorted(CASES))
def session(request, tmp_path):
    ckpt = save_user_checkpoint(request.param, tmp_path, compiled=request.param == "model.py")
    spec = ModelSpec(checkpoint=str(ckpt), model_file=str(FIXTURES / request.param), device="cpu")
    s = Session.open(spec)
    yield s
    s.close()


def test_probes_find_every_block_attention_and_mlp(session):
    trace = session.trace([1, 2, 3, 4, 5], attention_layers="all")
    kinds = [(r.name, r.kind) for r in trace.records if r.kind in ("block", "attn", "mlp")]
    assert [k for _, k in kinds].count("block") == 2
    assert [k for _, k in kinds].count("attn") == 2
    assert [k for _, k in kinds].count("mlp") == 2
    for pattern in trace.patterns.values():
        assert pattern.max_abs_error <= 1e-4
        assert pattern.weights.shape[1:] == (5, 5)


def test_greedy_generation_equals_the_files_own_forward(session):
    gen = session.generation([1, 2, 3], temperature=0)
    steps = gen.run(6)
    ids = [1, 2, 3]
    for step in steps:
        with torch.no_grad():
            logits = user_forward(session.model, torch.tensor([ids]), all_positions=False)
        ids.append(int(logits[0, -1].argmax()))
        assert step.token_id == ids[-1]


def test_checkpoint_info_and_kernel_report(session):
    assert session.info["iter_num"] == 7
    assert "patterns captured" in session.info["attention_kernel"]
