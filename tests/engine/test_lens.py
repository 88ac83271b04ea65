"""Logit lens: the last layer is the model's output; earlier layers differ."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_models import tiny_nanochat

from gpt_tui.engine.analysis.lens import LensNotSupportedError, lens_logits, logit_lens
from gpt_tui.engine.core.model_access import UnsupportedModelError, logits_from_residual
from gpt_tui.io.model_file import load_model_file
from gpt_tui.io.tokenizers import CharTokenizer
from gpt_tui.models import build_model, make_config

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "user_models"
TOK = CharTokenizer([chr(ord("0") + i) for i in range(65)])
IDS = [3, 14, 15, 9, 26, 5, 35, 8]


@pytest.fixture(scope="module", params=["nanogpt", "nanochat"])
def model(request) -> torch.nn.Module:
    return (
        build_model(make_config("tiny"), "cpu") if request.param == "nanogpt" else tiny_nanochat()
    )


def test_last_layer_equals_the_model_output(model):
    idx = torch.tensor([IDS])
    with torch.inference_mode():
        logits, _ = model(idx)
    lens = lens_logits(model, idx)
    assert lens.shape == (model.config.n_layer + 1, len(IDS), 65)
    assert torch.equal(lens[-1], logits[0])


def test_records_per_layer(model):
    result = logit_lens(model, TOK, IDS, k=5)
    assert result.position == len(IDS) - 1 and result.token_id == IDS[-1]
    assert [layer.layer for layer in result.layers] == [-1, 0, 1]
    assert result.layers[0].name == "transformer.h.0.resid_pre"
    assert result.layers[-1].name == "transformer.h.1"
    last = result.layers[-1]
    assert last.final_rank == 0 and last.tokens[0].prob == pytest.approx(last.final_prob)
    assert all(len(layer.tokens) == 5 for layer in result.layers)
    with torch.inference_mode():
        expected = torch.softmax(model(torch.tensor([IDS]))[0][0, -1].float(), -1)
    top = torch.topk(expected, 5)
    assert [t.token_id for t in last.tokens] == top.indices.tolist()
    assert [t.prob for t in last.tokens] == pytest.approx(top.values.tolist(), abs=1e-6)


def test_lens_changes_across_layers(model):
    result = logit_lens(model, TOK, IDS, position=2)
    assert result.position == 2
    dists = [tuple(t.prob for t in layer.tokens) for layer in result.layers]
    assert len(set(dists)) == len(dists)


def test_without_embedding_and_cropping(model):
    result = logit_lens(model, TOK, list(range(20)), include_embedding=False)
    assert [layer.layer for layer in result.layers] == [0, 1]
    assert "cropped from the left to the last 16 tokens" in result.note
    assert result.token_id == 19 and result.position == 15


def test_bad_inputs(model):
    with pytest.raises(ValueError, match="position 8 is outside"):
        logit_lens(model, TOK, IDS, position=8)
    with pytest.raises(ValueError, match="token id 65 is out of range"):
        logit_lens(model, TOK, [1, 65])


def test_unknown_model_is_not_supported():
    other = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(UnsupportedModelError, match="not supported for this model"):
        logits_from_residual(other, torch.zeros(1, 4))
    with pytest.raises(LensNotSupportedError, match="not supported for this model"):
        lens_logits(other, torch.zeros(1, 2, dtype=torch.long))


class Wrapped(torch.nn.Module):
    """Blocks somewhere else than `transformer.h`: the lens must find them by structure."""

    def __init__(self, core: torch.nn.Module) -> None:
        super().__init__()
        self.core = core
        self.config = core.config

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.core(idx)[0]

    def logits_from_residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.core.logits_from_residual(x)


def test_blocks_and_names_come_from_the_structure():
    model = Wrapped(tiny_nanochat())
    result = logit_lens(model, TOK, IDS, k=3)
    assert [layer.name for layer in result.layers] == [
        "core.transformer.h.0.resid_pre",
        "core.transformer.h.0",
        "core.transformer.h.1",
    ]
    assert result.note is None
    with torch.inference_mode():
        expected = model(torch.tensor([IDS]))[0, -1].float()
    assert result.layers[-1].tokens[0].token_id == int(expected.argmax())


@pytest.mark.parametrize(
    "file,args",
    [
        ("model.py", dict(block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32, bias=True)),
        (
            "gpt.py",
            dict(sequence_len=16, vocab_size=65, n_layer=2, n_head=4, n_kv_head=2, n_embd=32),
        ),
    ],
)
def test_users_nanogpt_and_nanochat_style_files(file, args):
    found = load_model_file(FIXTURES / file, model_args=args)
    torch.manual_seed(0)
    model = found.model_class(found.config_class(**args)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    result = logit_lens(model, TOK, IDS, k=5)
    assert result.note is None  # the last layer's lens is the file's own output
    assert result.layers[-1].name == "transformer.h.1"
    with torch.inference_mode():
        out = model(torch.tensor([IDS]))
    logits = (out[0] if isinstance(out, tuple) else out)[0, -1].float()
    top = torch.topk(torch.softmax(logits, -1), 5)
    assert [t.token_id for t in result.layers[-1].tokens] == top.indices.tolist()
    assert [t.prob for t in result.layers[-1].tokens] == pytest.approx(
        top.values.tolist(), abs=1e-5
    )


def test_backout_is_named_when_the_last_layer_is_not_the_output():
    overrides = dict(n_layer=4, backout=True, resid_x0_lambdas=True, padded_vocab_size=128)
    model = build_model(make_config("tiny", "nanochat", overrides), "cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    result = logit_lens(model, TOK, IDS, k=3)
    assert "differs from the model's output" in result.note and "backout" in result.note


def test_a_head_the_adapter_does_not_know_is_one_clear_error():
    found = load_model_file(
        FIXTURES / "tinylm.py", model_args=dict(vocab=40, d_model=32, n_layers=2, n_heads=4)
    )
    model = found.model_class(found.config_class(vocab=40, d_model=32, n_layers=2, n_heads=4))
    with pytest.raises(UnsupportedModelError, match="not supported for this model"):
        logit_lens(model, CharTokenizer([chr(ord("0") + i) for i in range(40)]), IDS)
