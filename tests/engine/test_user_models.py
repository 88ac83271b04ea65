"""Users' own model files opened through the Session, as `--model-file` does: the probes
find every block, attention and MLP by structure, patterns verify, and generation through
the inspector equals the file's own forward pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gpt_tui.engine.core.session import ModelSpec, Session
from gpt_tui.io.model_file import load_model_file, user_forward

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "user_models"

CASES = {
    "model.py": dict(
        block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=False
    ),
    "gpt.py": dict(sequence_len=16, vocab_size=65, n_layer=2, n_head=4, n_kv_head=2, n_embd=32),
    # renamed classes, hand-written softmax, a block returning (x, None)
    "tinylm.py": dict(vocab=40, d_model=32, n_layers=2, n_heads=4, max_len=16),
    # the model class imports its parts from a sibling module
    "stacked.py": dict(vocab_size=30, width=16, depth=2, heads=2),
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
    kinds = [r.kind for r in trace.records]
    assert kinds.count("block") == 2
    if "stacked" not in session.info["model_file"]:
        assert kinds.count("attn") == 2 and kinds.count("mlp") == 2
    # stacked.py's blocks are attention layers themselves; their patterns come all the same
    assert set(trace.patterns) == {0, 1}
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
    # stacked.py's kernel call is in its sibling file, which the report reads too
    assert "patterns captured" in session.info["attention_kernel"]


OPAQUE_KERNEL = '''

def flash_attn_func(q, k, v):
    """Stands in for the flash-attn package: a kernel whose weights nothing can see."""
    T = q.size(-2)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return torch.exp(scores - torch.logsumexp(scores, -1, keepdim=True)) @ v
'''


def test_an_invisible_kernel_falls_back_to_the_files_own_switch(tmp_path):
    source = (FIXTURES / "model.py").read_text()
    sdpa_call = source[source.index("y = F.scaled_dot_product_attention(") :]
    sdpa_call = sdpa_call[: sdpa_call.index(")\n") + 1]
    source = source.replace(sdpa_call, "y = flash_attn_func(q, k, v)")
    source = source.replace("\n\nclass LayerNorm", OPAQUE_KERNEL + "\n\nclass LayerNorm", 1)
    (tmp_path / "model.py").write_text(source)
    ckpt = save_user_checkpoint("model.py", tmp_path, compiled=False)
    spec = ModelSpec(checkpoint=str(ckpt), model_file=str(tmp_path / "model.py"), device="cpu")
    session = Session.open(spec)
    assert "FlashAttention" in session.info["attention_kernel"]
    assert any("manual softmax path" in note for note in session.notes)
    trace = session.trace([1, 2, 3, 4], attention_layers="all")
    assert set(trace.patterns) == {0, 1}
    assert max(p.max_abs_error for p in trace.patterns.values()) <= 1e-4
    session.close()
