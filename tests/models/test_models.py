"""The two families: exact parameter counts, KV-cached decoding, generation."""

import math

import pytest
import torch

from gpt_tui.models import build_model, make_config
from gpt_tui.models.sampling import generate


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # shared tensors once


@pytest.mark.parametrize(
    "preset,total,non_embedding",
    [
        ("small", 10_745_088, 10_646_784),
        ("gpt2", 124_439_808, 123_653_376),
        ("gpt2-medium", 354_823_168, None),
        ("gpt2-large", 774_030_080, None),
        ("gpt2-xl", 1_557_611_200, None),
    ],
)
def test_nanogpt_parameter_counts_match_upstream(preset, total, non_embedding):
    model = build_model(make_config(preset, "nanogpt"), "meta")
    assert _count(model) == total
    if non_embedding is not None:
        assert model.num_params(non_embedding=True) == non_embedding


def test_nanochat_depth_presets_follow_the_scaling_rule():
    for depth in (12, 20, 26, 32):
        config = make_config(f"d{depth}")
        assert config.family == "nanochat"
        assert config.head_dim == 128 and config.n_embd % 128 == 0
        assert config.n_embd == -(-depth * 64 // 128) * 128
        assert (config.vocab_size, config.sequence_len) == (32768, 2048)
    # d20: 1280 wide, 10 heads; counted by hand: 2 * 32768 * 1280 + 20 * 12 * 1280**2
    model = build_model(make_config("d20"), "meta")
    assert _count(model) == 2 * 32768 * 1280 + 20 * 12 * 1280**2
    # Non-embedding leaves out the wte lookup table but keeps the untied head (a matmul).
    assert model.num_params(non_embedding=True) == 32768 * 1280 + 20 * 12 * 1280**2


def test_tied_head_is_one_tensor():
    model = build_model(make_config("tiny"), "cpu")
    assert model.lm_head.weight is model.transformer.wte.weight
    chat = build_model(make_config("tiny", "nanochat"), "cpu")
    assert chat.lm_head.weight is not chat.transformer.wte.weight


def _randomize(model: torch.nn.Module) -> torch.nn.Module:
    # nanochat zero-inits its head and projections; random weights make the test meaningful.
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model


FAMILIES = [
    ("nanogpt", {}),
    ("nanochat", {}),
    ("nanochat", {"n_head": 4, "n_kv_head": 2}),  # grouped-query attention
    ("nanochat", {"n_head": 4, "n_kv_head": 1}),  # multi-query attention
]


HEAD_CASES = [
    ("nanogpt", {}),
    ("nanogpt", {"bias": True}),
    ("nanochat", {}),  # classic era: softcap 15
    ("nanochat", {"softcap": 0.0}),  # softcap off
    ("nanochat", {"padded_vocab_size": 128, "resid_x0_lambdas": True}),  # padded vocabulary
    (
        "nanochat",
        dict(
            n_layer=4,
            padded_vocab_size=128,
            resid_x0_lambdas=True,
            value_embeds=True,
            ve_gate_channels=12,
            smear=True,
            backout=True,
            qk_scale=1.2,
            window_pattern="SL",
            softcap=20.0,
        ),
    ),  # the latest era, backout included
]


@pytest.mark.parametrize("family,overrides", HEAD_CASES)
def test_logits_from_residual_is_what_forward_does_after_the_last_block(family, overrides):
    model = _randomize(build_model(make_config("tiny", family, overrides), "cpu"))
    blocks = model.transformer.h
    outputs: dict[int, torch.Tensor] = {}
    for i, block in enumerate(blocks):
        block.register_forward_hook(lambda _m, _a, out, i=i: outputs.__setitem__(i, out))
    idx = torch.randint(0, 65, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits, _ = model(idx)
        residual = outputs[len(blocks) - 1]  # (B, T, C)
        if getattr(model.config, "backout", False):
            residual = residual - model.backout_lambda * outputs[len(blocks) // 2]
        from_residual = model.logits_from_residual(residual)
    assert logits.shape == (2, 12, 65)
    assert torch.equal(from_residual, logits)
    # Not the identity of some other tensor: an earlier layer's residual reads differently.
    with torch.no_grad():
        assert not torch.allclose(model.logits_from_residual(outputs[0]), logits)


def test_gelu_is_exact_by_default_and_tanh_on_request():
    x = torch.linspace(-4, 4, 101)
    exact = 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    tanh = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    models = {}
    for setting in ("none", "tanh"):
        config = make_config("tiny", overrides={"gelu_approximate": setting})
        models[setting] = _randomize(build_model(config, "cpu"))
    default = build_model(make_config("tiny"), "cpu")
    assert torch.allclose(default.transformer.h[0].mlp.gelu(x), exact, atol=1e-6)
    assert torch.allclose(models["tanh"].transformer.h[0].mlp.gelu(x), tanh, atol=1e-6)
    assert not torch.allclose(exact, tanh, atol=1e-4)
    idx = torch.randint(0, 65, (1, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a, b = models["none"](idx)[0], models["tanh"](idx)[0]
    assert torch.equal(models["none"].lm_head.weight, models["tanh"].lm_head.weight)
    assert not torch.allclose(a, b, atol=1e-6)  # same weights, different activation


@pytest.mark.parametrize("family,overrides", FAMILIES)
def test_kv_cache_gives_the_same_logits_as_full_recomputation(family, overrides):
    model = _randomize(build_model(make_config("tiny", family, overrides), "cpu"))
    idx = torch.randint(0, 65, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full, _ = model(idx)
        cache = model.make_kv_cache(batch_size=2)
        chunks = [model(idx[:, a:b], kv_cache=cache)[0] for a, b in [(0, 5), (5, 6), (6, 12)]]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, rtol=1e-5, atol=1e-5)
    assert cache.used == 12


@pytest.mark.parametrize("family,overrides", FAMILIES)
def test_cached_greedy_generation_equals_recomputation(family, overrides):
    model = _randomize(build_model(make_config("tiny", family, overrides), "cpu"))
    prompt = torch.tensor([[1, 2, 3]])
    # 30 tokens run past the 16-token context, so the crop-and-refill path is covered too.
    cached = generate(model, prompt, 30, temperature=0, use_kv_cache=True)
    full = generate(model, prompt, 30, temperature=0, use_kv_cache=False)
    assert torch.equal(cached, full)
    assert cached.shape == (1, 33)


def test_seeded_sampling_replays_and_differs_across_seeds():
    model = _randomize(build_model(make_config("tiny"), "cpu"))
    prompt = torch.tensor([[1, 2, 3]])
    a = model.generate(prompt, 20, temperature=1.0, top_k=10, seed=7)
    b = model.generate(prompt, 20, temperature=1.0, top_k=10, seed=7)
    c = model.generate(prompt, 20, temperature=1.0, top_k=10, seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_loss_with_targets_matches_cross_entropy():
    model = _randomize(build_model(make_config("tiny", "nanochat"), "cpu"))
    idx = torch.randint(0, 65, (1, 10))
    logits, loss = model(idx[:, :-1], targets=idx[:, 1:])
    expected = torch.nn.functional.cross_entropy(logits[0], idx[0, 1:])
    torch.testing.assert_close(loss, expected)
    assert logits.shape == (1, 9, 65)  # every position, unlike upstream nanoGPT


def test_softcap_bounds_nanochat_logits():
    model = _randomize(build_model(make_config("tiny", "nanochat"), "cpu"))
    with torch.no_grad():
        model.lm_head.weight.mul_(100)
        logits, _ = model(torch.tensor([[1, 2, 3]]))
    assert logits.abs().max() <= model.config.softcap


def test_prompt_longer_than_context_is_a_clear_error():
    model = build_model(make_config("tiny"), "cpu")
    with pytest.raises(ValueError, match="longer than the context"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_meta_device_allocates_nothing():
    model = build_model(make_config("gpt2-xl"), "meta")
    assert all(p.device.type == "meta" for p in model.parameters())
