"""GPT-2 weights in the Hugging Face layout: Conv1D transposed, prefixes, tied head."""

from __future__ import annotations

import json

import pytest
import torch
from io_helpers import MERGES, logits, tiny_model, write_data_gym_bpe

from gpt_tui.io.checkpoints import CheckpointError, load_checkpoint
from gpt_tui.io.checkpoints.hf_gpt2 import has_gelu_field
from gpt_tui.io.tokenizers import ByteTokenizer, TiktokenTokenizer

safetensors_torch = pytest.importorskip("safetensors.torch")

VOCAB = 300
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def gpt2_like():
    """A small GPT-2-shaped nanogpt model (biases on and tanh GELU, as GPT-2 has)."""
    gelu = {"gelu_approximate": "tanh"} if has_gelu_field() else {}
    return tiny_model("nanogpt", VOCAB, bias=True, block_size=16, n_head=2, n_embd=32, **gelu)


def hf_state_dict(model, prefix: str, with_head: bool) -> dict[str, torch.Tensor]:
    """The model's weights as Hugging Face's GPT2Model / GPT2LMHeadModel store them."""
    out = {}
    for key, t in model.state_dict().items():
        if key == "lm_head.weight":
            if with_head:
                out[key] = t.clone()
            continue
        name = key.removeprefix("transformer.")
        if name.endswith(CONV1D):
            t = t.t()  # nn.Linear (out, in) -> Conv1D (in, out)
        out[prefix + name] = t.contiguous().clone()
    for i in range(model.config.n_layer):  # causal-mask buffers old exports carry
        out[f"{prefix}h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 16, 16))
        out[f"{prefix}h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    return out


def write_config(folder, model) -> None:
    c = model.config
    cfg = {
        "model_type": "gpt2",
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_embd": c.n_embd,
        "n_positions": c.block_size,
        "n_ctx": c.block_size,
        "vocab_size": c.vocab_size,
        "activation_function": "gelu_new",
        "n_inner": None,
    }
    (folder / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("prefix", ["", "transformer."])
def test_safetensors_folder_gives_the_same_logits(tmp_path, prefix):
    model = gpt2_like()
    safetensors_torch.save_file(hf_state_dict(model, prefix, False), tmp_path / "model.safetensors")
    write_config(tmp_path, model)
    loaded = load_checkpoint(tmp_path)
    assert (loaded.format, loaded.family) == ("hf-gpt2", "nanogpt")
    assert loaded.config.bias is True
    ids = [5, 17, 2, 299, 0, 42]
    assert torch.equal(logits(loaded.model, ids), logits(model, ids))
    assert loaded.model.lm_head.weight is loaded.model.transformer.wte.weight
    if has_gelu_field():
        assert loaded.config.gelu_approximate == "tanh" and "note" not in loaded.info
    else:
        assert "gelu_new" in loaded.info["note"]


def test_pytorch_model_bin_with_head(tmp_path):
    model = gpt2_like()
    torch.save(hf_state_dict(model, "transformer.", True), tmp_path / "pytorch_model.bin")
    write_config(tmp_path, model)
    loaded = load_checkpoint(tmp_path)
    assert loaded.format == "hf-gpt2"
    ids = [1, 2, 3]
    assert torch.equal(logits(loaded.model, ids), logits(model, ids))


def test_single_safetensors_file_without_config(tmp_path):
    gelu = {"gelu_approximate": "tanh"} if has_gelu_field() else {}  # GPT2Config's default
    model = tiny_model("nanogpt", VOCAB, bias=True, n_head=1, n_embd=64, **gelu)  # 64-wide heads
    path = tmp_path / "gpt2-ish.safetensors"
    safetensors_torch.save_file(hf_state_dict(model, "", False), path)
    loaded = load_checkpoint(path)
    assert (loaded.config.n_layer, loaded.config.n_head, loaded.config.n_embd) == (2, 1, 64)
    assert "no config.json" in loaded.info["note"]
    assert torch.equal(logits(loaded.model, [3, 4]), logits(model, [3, 4]))


def test_vocab_json_and_merges_txt_give_gpt2_bpe(tmp_path):
    pytest.importorskip("tiktoken")
    model = gpt2_like()
    safetensors_torch.save_file(hf_state_dict(model, "", False), tmp_path / "model.safetensors")
    write_config(tmp_path, model)
    vocab_bpe, encoder_json = write_data_gym_bpe(tmp_path / "bpe", MERGES)
    vocab_bpe.rename(tmp_path / "merges.txt")
    encoder_json.rename(tmp_path / "vocab.json")
    loaded = load_checkpoint(tmp_path)
    assert isinstance(loaded.tokenizer, TiktokenTokenizer)
    ids = loaded.tokenizer.encode("hello world")
    assert loaded.tokenizer.decode(ids) == "hello world"
    assert loaded.tokenizer.token_str(ids[0]) == "hell"
    assert loaded.tokenizer.token_str(ids[2]) == "␣w"


def test_not_gpt2_and_mismatched_config(tmp_path):
    model = gpt2_like()
    safetensors_torch.save_file(hf_state_dict(model, "", False), tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "n_layer": 2}))
    with pytest.raises(CheckpointError, match="model_type 'llama' is not GPT-2"):
        load_checkpoint(tmp_path)
    write_config(tmp_path, tiny_model("nanogpt", VOCAB, bias=True, n_layer=3))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path)
    assert "model.safetensors does not fit a nanogpt model with n_layer=3" in str(err.value)
    assert "missing (transformer.h.2." in str(err.value)


def test_gpt2_vocab_without_cached_bpe_falls_back_to_bytes(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    model = tiny_model("nanogpt", 50257, bias=True)
    safetensors_torch.save_file(hf_state_dict(model, "", False), tmp_path / "model.safetensors")
    write_config(tmp_path, model)
    loaded = load_checkpoint(tmp_path)
    assert isinstance(loaded.tokenizer, ByteTokenizer)
    assert "not cached" in loaded.info["tokenizer_note"]


def test_damaged_safetensors(tmp_path):
    model = gpt2_like()
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file(hf_state_dict(model, "", False), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    write_config(tmp_path, model)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path)
    assert "\n" not in str(err.value) and "model.safetensors" in str(err.value)
