"""GPT-2 in the Hugging Face layout follows its config's `activation_function`
(`gelu_new` is tanh GELU), so its logits match Hugging Face's own."""

from __future__ import annotations

import json

import pytest
import torch

from gpt_tui.io.checkpoints import CheckpointError, gpt2_config_from_hf, load_checkpoint
from gpt_tui.io.checkpoints.hf_gpt2 import has_gelu_field

needs_field = pytest.mark.skipif(
    not has_gelu_field(), reason="needs gelu_approximate from models branch"
)
BASE = dict(model_type="gpt2", n_layer=2, n_head=2, n_embd=32, n_positions=16, vocab_size=99)


@needs_field
@pytest.mark.parametrize(
    ("activation", "approximate"),
    [("gelu_new", "tanh"), ("gelu_pytorch_tanh", "tanh"), ("gelu", "none"), (None, "tanh")],
)
def test_activation_function_picks_the_gelu(activation, approximate):
    values = {**BASE, **({"activation_function": activation} if activation else {})}
    assert gpt2_config_from_hf(values).gelu_approximate == approximate


def test_an_activation_gpt2_never_used_is_one_line():
    with pytest.raises(CheckpointError) as err:
        gpt2_config_from_hf({**BASE, "activation_function": "relu"})
    msg = str(err.value)
    assert "activation_function 'relu'" in msg and "gelu_new" in msg and "\n" not in msg


@needs_field
def test_logits_match_transformers_within_1e_5(tmp_path):
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    values = {k: v for k, v in BASE.items() if k != "model_type"}
    config = transformers.GPT2Config(**values, activation_function="gelu_new")
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    hf.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["activation_function"] == "gelu_new"
    loaded = load_checkpoint(tmp_path)
    ids = torch.tensor([[5, 17, 2, 98, 0, 42, 7]])
    with torch.no_grad():
        expected = hf(ids).logits
        ours, _ = loaded.model(ids, targets=torch.zeros_like(ids))
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
