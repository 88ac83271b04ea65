"""Logit lens: the last layer is the model's output; earlier layers differ."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_nanochat

from gpt_tui.engine.lens import LensNotSupportedError, decode_residual, lens_logits, logit_lens
from gpt_tui.io.tokenizers import CharTokenizer
from gpt_tui.models import build_model, make_config

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
    with pytest.raises(LensNotSupportedError, match="not supported for this model"):
        decode_residual(other, torch.zeros(1, 4))
    with pytest.raises(LensNotSupportedError, match="not supported for this model"):
        lens_logits(other, torch.zeros(1, 2, dtype=torch.long))
