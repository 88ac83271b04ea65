"""Attention at long context: patterns computed lazily, one layer at a time, equal the full
computation (both families, GQA and sliding windows), and large ones are stored in float16."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_probes import randomize

from gpt_tui.engine.analysis import attention
from gpt_tui.engine.analysis.attention import LazyPatterns
from gpt_tui.engine.analysis.probes import Probes
from gpt_tui.models import build_model, make_config

T = 384


def long_model(family: str) -> torch.nn.Module:
    if family == "nanogpt":
        config = make_config("tiny", "nanogpt", {"block_size": T})
    else:  # GQA (4 query heads over 2 key heads), a 100-token window on layer 0
        config = make_config(
            "tiny",
            "nanochat",
            {"n_head": 4, "n_kv_head": 2, "n_embd": 32, "sequence_len": T}
            | {"window_pattern": "SL", "short_window": 100},
        )
    return randomize(build_model(config, "cpu"))


def explicit(call: attention.AttentionCall, window: int | None) -> np.ndarray:
    """softmax(q·kᵀ/√d) in float64 under an explicitly built causal (windowed) mask."""
    q, k = call.q[0].double(), call.k[0].double()  # (nh, T, hs), (nkv, T, hs)
    k = k.repeat_interleave(q.size(0) // k.size(0), dim=0)
    pos = torch.arange(q.size(1))
    allowed = pos[None, :] <= pos[:, None]
    if window is not None:  # `window` tokens before the query, and the query itself
        allowed &= pos[None, :] > pos[:, None] - (window + 1)
    scores = (q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))).masked_fill(~allowed, -math.inf)
    return torch.softmax(scores, -1).numpy()


@pytest.mark.parametrize("family", ["nanogpt", "nanochat"])
def test_lazy_patterns_equal_the_full_computation_at_long_context(family: str) -> None:
    model = long_model(family)
    idx = torch.randint(
        0, model.config.vocab_size, (1, T), generator=torch.Generator().manual_seed(1)
    )
    n_layer = model.config.n_layer
    with Probes(model, attention_layers="all") as probes:
        probes.run(idx)
        lazy = probes.patterns()
        calls = dict(probes.capture.calls)
    assert isinstance(lazy, LazyPatterns) and list(lazy) == list(range(n_layer))
    for layer in range(n_layer):
        window = getattr(model.config, "layer_window", lambda i: None)(layer)
        with Probes(model, attention_layers=[layer]) as one:  # the one-layer, eager path
            one.run(idx)
            eager = one.pattern(layer)
        p = lazy[layer]
        assert p.weights.shape == (model.config.n_head, T, T)
        np.testing.assert_array_equal(p.weights, eager.weights)
        np.testing.assert_allclose(p.weights, explicit(calls[layer], window), atol=1e-5)
        assert p.max_abs_error <= 1e-4  # W·V reproduces the kernel's own output
        assert p.causal and p.window == (None if window is None else window + 1)
    if family == "nanochat":
        assert calls[0].k.shape[1] == 2 and lazy[0].n_kv_head == 2  # GQA reached the kernel
        assert lazy[0].window == 101 and lazy[1].window is None


def test_patterns_are_computed_only_when_looked_at(monkeypatch: pytest.MonkeyPatch) -> None:
    computed: list[int] = []
    recompute = attention.recompute_pattern

    def counting(call, batch=0):
        computed.append(call.layer)
        return recompute(call, batch)

    monkeypatch.setattr(attention, "recompute_pattern", counting)
    model = long_model("nanogpt")
    idx = torch.randint(0, model.config.vocab_size, (1, 64))
    with Probes(model, attention_layers="all") as probes:
        probes.run(idx)
        lazy = probes.patterns()
        first = lazy[1].weights
        probes.run(torch.flip(idx, [1]))  # a later pass does not change what `lazy` shows
    assert computed == [1]
    assert lazy[1].weights is first and computed == [1]  # kept: viewing it again is free
    later = lazy[0]  # computed after the second pass, from the first pass's inputs
    assert computed == [1, 0]
    with Probes(model, attention_layers=[0]) as probes:
        probes.run(idx)
        np.testing.assert_array_equal(later.weights, probes.pattern(0).weights)
    with pytest.raises(KeyError):
        lazy[5]


def test_large_patterns_are_stored_in_float16_but_checked_in_fp32(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = long_model("nanochat")
    idx = torch.randint(0, model.config.vocab_size, (1, 128))
    with Probes(model, attention_layers=[0]) as probes:
        probes.run(idx)
        full = probes.pattern(0)
        monkeypatch.setattr(attention, "FP16_ABOVE", 4 * 128 * 128 - 1)
        small = probes.pattern(0)
    assert full.weights.dtype == np.float32 and small.weights.dtype == np.float16
    np.testing.assert_allclose(small.weights, full.weights, atol=1e-3)
    assert small.max_abs_error == full.max_abs_error <= 1e-4
