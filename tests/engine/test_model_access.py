"""What the engine asks of any model: device, context, vocabulary, logits, cropping, and the
head applied to a residual stream (our families' own method, or worked out for a user's file).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_models import tiny_nanochat

from gpt_tui.engine.core.model_access import (
    ModelOutputError,
    UnsupportedModelError,
    crop_to_context,
    find_block_list,
    last_position_logits,
    logits_from_residual,
    model_context_len,
    model_device,
    output_logits,
    usable_vocab_size,
)
from gpt_tui.io.model_file import load_model_file, user_forward
from gpt_tui.io.tokenizers import CharTokenizer
from gpt_tui.models import build_model, make_config

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "user_models"
USER_ARGS = {
    "model.py": dict(
        block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=True
    ),
    "gpt.py": dict(sequence_len=16, vocab_size=65, n_layer=2, n_head=4, n_kv_head=2, n_embd=32),
    "tinylm.py": dict(vocab=40, d_model=32, n_layers=2, n_heads=4, max_len=16),
    "stacked.py": dict(vocab_size=30, width=16, depth=2, heads=2),
}


def user_model(file: str) -> torch.nn.Module:
    found = load_model_file(FIXTURES / file, model_args=USER_ARGS[file])
    torch.manual_seed(0)
    model = found.model_class(found.config_class(**USER_ARGS[file])).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)  # large enough that a softcap of 15 bites
    return model


def last_block_residual(model: torch.nn.Module, idx: torch.Tensor) -> torch.Tensor:
    """(B, T, C) output of the last block, taken by a hook during one forward."""
    _, blocks = find_block_list(model)
    seen: list[torch.Tensor] = []
    handle = blocks[-1].register_forward_hook(
        lambda _m, _a, out: seen.append(out[0] if isinstance(out, tuple) else out)
    )
    try:
        with torch.no_grad():
            model(idx)
    finally:
        handle.remove()
    return seen[0]


def test_crop_to_context() -> None:
    assert crop_to_context([1, 2, 3], 3) == ([1, 2, 3], None)
    assert crop_to_context((1, 2, 3), None) == ([1, 2, 3], None)
    ids, note = crop_to_context(range(20), 16)
    assert ids == list(range(4, 20))
    assert note == (
        "prompt of 20 tokens cropped from the left to the last 16 tokens "
        "(the context length), as nanoGPT does"
    )
    ids, note = crop_to_context([5, 6, 7], 2, what="sequence", limit="the window")
    assert ids == [6, 7] and note.startswith("sequence of 3 tokens") and "(the window)" in note


def test_context_device_and_usable_vocabulary() -> None:
    gpt = build_model(make_config("tiny", overrides={"vocab_size": 80}), "cpu")
    chat = build_model(make_config("tiny", "nanochat"), "cpu")
    assert model_context_len(gpt) == 16 and model_context_len(chat) == 16
    assert model_context_len(torch.nn.Linear(2, 2)) is None
    assert model_device(gpt) == torch.device("cpu")
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")
    tok = CharTokenizer([chr(ord("0") + i) for i in range(65)])
    assert usable_vocab_size(gpt, tok) == 65  # the padding rows have no text
    small = build_model(make_config("tiny", overrides={"vocab_size": 50}), "cpu")
    assert usable_vocab_size(small, tok) == 50
    assert usable_vocab_size(torch.nn.Linear(2, 2), tok) == 65


def test_output_logits_of_every_shape_a_forward_returns() -> None:
    logits = torch.arange(24.0).view(1, 4, 6)
    assert output_logits((logits, None)) is logits and output_logits(logits) is logits
    assert torch.equal(last_position_logits(logits), logits[0, -1])
    assert torch.equal(last_position_logits([logits[:, -1]]), logits[0, -1])
    assert torch.equal(last_position_logits(logits[0, -1]), logits[0, -1])
    with pytest.raises(ModelOutputError, match="returned dict, not logits"):
        output_logits({"logits": logits})
    with pytest.raises(ModelOutputError, match=r"cannot read logits of shape \(1, 1, 4, 6\)"):
        last_position_logits(logits[None])


@pytest.mark.parametrize(
    "make",
    [
        lambda: build_model(make_config("tiny"), "cpu"),
        tiny_nanochat,
        lambda: build_model(
            make_config("tiny", "nanochat", {"padded_vocab_size": 128, "softcap": 0.0}), "cpu"
        ),
    ],
    ids=["nanogpt", "nanochat", "nanochat-padded-no-softcap"],
)
def test_our_families_use_their_own_method(make) -> None:
    model = make()
    idx = torch.tensor([[1, 5, 9, 20, 3]])
    with torch.no_grad():
        logits, _ = model(idx)
        assert torch.equal(logits_from_residual(model, last_block_residual(model, idx)), logits)


def test_a_compiled_wrapper_is_read_through() -> None:
    model = tiny_nanochat()
    wrapper = torch.nn.Module()
    wrapper._orig_mod = model  # what torch.compile's wrapper holds
    x = torch.randn(1, 3, 32)
    with torch.no_grad():
        assert torch.equal(logits_from_residual(wrapper, x), model.logits_from_residual(x))


@pytest.mark.parametrize("file", ["model.py", "gpt.py"])
def test_user_files_are_read_by_structure(file: str) -> None:
    """nanoGPT-style: ln_f + tied head; nanochat-style: RMS norm, head, and the softcap of 15
    its forward names (without it the capped logits would not match)."""
    model = user_model(file)
    assert not hasattr(model, "logits_from_residual")
    idx = torch.tensor([[1, 5, 9, 20, 3, 7]])
    with torch.no_grad():
        expected = user_forward(model, idx)  # (B, T, V), the file's own forward
        got = logits_from_residual(model, last_block_residual(model, idx))
    assert got.shape == expected.shape == (1, 6, 65)
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)
    if file == "gpt.py":
        assert expected.abs().max() > 5 and expected.abs().max() < 15  # the cap is in play


def test_softcap_on_the_config_wins_over_the_forwards_literal() -> None:
    model = user_model("gpt.py")
    x = torch.randn(1, 3, 32) * 10
    with torch.no_grad():
        raw = model.lm_head(torch.nn.functional.rms_norm(x, (32,)))  # (B, T, V), uncapped
        from_source = logits_from_residual(model, x)
        model.config.softcap = 2.0
        from_config = logits_from_residual(model, x)
    assert torch.allclose(from_source, 15 * torch.tanh(raw / 15))
    assert torch.allclose(from_config, 2 * torch.tanh(raw / 2))


@pytest.mark.parametrize("file", ["tinylm.py", "stacked.py"])
def test_other_structures_are_one_clear_error(file: str) -> None:
    with pytest.raises(UnsupportedModelError, match="not supported for this model"):
        logits_from_residual(user_model(file), torch.zeros(1, 2, 32))
