"""Attention patterns recomputed from the kernel's inputs, for SDPA and hand-written softmax."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_probes import IDX, Foreign, nanochat, nanogpt

from gpt_tui.engine.analysis.attention import AttentionCapture, head_summaries
from gpt_tui.engine.analysis.probes import Probes
from gpt_tui.engine.core.trace import AttentionPattern


def causal_mask(T: int, window: int | None = None) -> np.ndarray:
    """(T, T) bool, True = query row may attend to key column; `window` keeps the last w keys."""
    q = np.arange(T)[:, None]
    k = np.arange(T)[None, :]
    allowed = k <= q
    if window is not None:
        allowed &= k > q - window
    return allowed


def check_rows(weights: np.ndarray, mask: np.ndarray) -> None:
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    assert np.all(weights[:, ~mask] == 0.0)


def test_causal_mask_helper() -> None:
    np.testing.assert_array_equal(causal_mask(3), [[1, 0, 0], [1, 1, 0], [1, 1, 1]])
    np.testing.assert_array_equal(causal_mask(4, window=2)[3], [0, 0, 1, 1])


def test_nanogpt_pattern_equals_explicit_computation() -> None:
    model = nanogpt()
    with Probes(model, attention_layers=[1]) as probes:
        probes.run(IDX)
        pattern = probes.pattern(1)
        attn_in = {}
        block = model.transformer.h[1]
        handle = block.attn.register_forward_pre_hook(lambda m, a: attn_in.setdefault("x", a[0]))
        with torch.no_grad():
            model(IDX)
        handle.remove()
    with torch.no_grad():
        q, k, _ = block.attn.c_attn(attn_in["x"]).split(32, dim=2)
    q = q.view(1, 8, 2, 16).transpose(1, 2)[0].double()  # (nh, T, hs)
    k = k.view(1, 8, 2, 16).transpose(1, 2)[0].double()
    scores = q @ k.transpose(-2, -1) / math.sqrt(16)
    scores = scores.masked_fill(~torch.ones(8, 8, dtype=torch.bool).tril(), -math.inf)
    explicit = torch.softmax(scores, -1).numpy()
    assert pattern.name == "transformer.h.1.attn.pattern" and pattern.weights.shape == (2, 8, 8)
    np.testing.assert_allclose(pattern.weights, explicit, atol=1e-5)
    check_rows(pattern.weights, causal_mask(8))
    assert pattern.causal and pattern.window is None
    assert pattern.max_abs_error <= 1e-4
    with pytest.raises(KeyError, match="layer 0"):
        probes.pattern(0)  # not requested


def test_nanochat_gqa_pattern() -> None:
    model = nanochat()
    with Probes(model, attention_layers="all") as probes:
        probes.run(IDX)
        patterns = probes.patterns()
        call = probes.capture.calls[0]
    assert set(patterns) == {0, 1}
    p = patterns[0]
    assert p.weights.shape == (4, 8, 8) and p.n_kv_head == 2
    assert call.k.shape[1] == 2  # the kernel really got 2 key heads
    q, k = call.q[0].double(), call.k[0].double()
    for h in range(4):  # query head h reads key head h // 2
        s = q[h] @ k[h // 2].T / math.sqrt(8)
        s = s.masked_fill(~torch.ones(8, 8, dtype=torch.bool).tril(), -math.inf)
        np.testing.assert_allclose(p.weights[h], torch.softmax(s, -1).numpy(), atol=1e-5)
    check_rows(p.weights, causal_mask(8))
    assert all(pat.max_abs_error <= 1e-4 for pat in patterns.values())


@pytest.mark.parametrize("manual", [False, True], ids=["sdpa", "hand-written"])
def test_sliding_window(manual: bool) -> None:
    torch.manual_seed(0)
    model = Foreign(window=3, manual=manual)
    with Probes(model, attention_layers=[2]) as probes:
        probes.run(IDX)
        p = probes.pattern(2)
    assert p.name == "layers.2.mixer.pattern"
    assert p.causal and p.window == 3
    np.testing.assert_array_equal(p.mask, causal_mask(8, window=3))
    check_rows(p.weights, causal_mask(8, window=3))
    assert p.max_abs_error <= 1e-4


def test_capture_without_probes_numbers_calls_by_order() -> None:
    q = torch.randn(1, 2, 5, 4)
    with AttentionCapture(layers=[1]) as capture:
        F.scaled_dot_product_attention(q, q, q, is_causal=True)
        F.scaled_dot_product_attention(q * 2, q, q, is_causal=True)
    assert set(capture.calls) == {1}
    p = capture.pattern(1)
    assert p.causal and p.max_abs_error <= 1e-5
    check_rows(p.weights, causal_mask(5))


def test_float_mask_and_scale() -> None:
    q, k, v = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8)
    bias = torch.zeros(4, 6)
    bias[:, 0] = -math.inf
    with AttentionCapture() as capture:
        F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=0.5)
    p = capture.pattern(0)
    assert p.weights.shape == (2, 4, 6) and np.all(p.weights[:, :, 0] == 0)
    assert not p.causal and p.max_abs_error <= 1e-5


def pattern_of(weights: np.ndarray) -> AttentionPattern:
    return AttentionPattern(
        layer=0,
        name="t.pattern",
        weights=weights,
        n_kv_head=weights.shape[0],
        causal=True,
        window=None,
        max_abs_error=0.0,
    )


def test_head_summaries_of_known_patterns() -> None:
    T = 5
    mask = causal_mask(T)
    uniform = mask / mask.sum(-1, keepdims=True)  # row k spreads over k + 1 keys
    identity = np.eye(T)
    last_first = np.eye(T)
    last_first[-1] = [0.7, 0.1, 0.1, 0.05, 0.05]  # the last query looks back at position 0
    heads = head_summaries(pattern_of(np.stack([uniform, identity, last_first])))
    assert [s.head for s in heads] == [0, 1, 2]
    u, i, f = heads
    assert u.mean_entropy == pytest.approx(np.mean([math.log(k + 1) for k in range(T)]))
    assert u.diagonal_share == pytest.approx(np.mean([1 / (k + 1) for k in range(T)]))
    assert u.last_query_weight == pytest.approx(1 / T)
    assert i.mean_entropy == pytest.approx(0.0, abs=1e-9)
    assert i.diagonal_share == 1.0
    assert (i.last_query_argmax, i.last_query_weight) == (T - 1, 1.0)
    assert (f.last_query_argmax, f.last_query_weight) == (0, pytest.approx(0.7))
    assert f.diagonal_share == pytest.approx((4 + 0.05) / T)
    assert all(isinstance(v, (int, float)) for s in heads for v in vars(s).values())


def test_head_summaries_align_queries_to_the_end_of_the_keys() -> None:
    # A cached step: 2 queries over 4 keys; query j sits at key position j + 2.
    w = np.zeros((1, 2, 4))
    w[0, 0, 2] = 1.0
    w[0, 1, 3] = 1.0
    (s,) = head_summaries(pattern_of(w))
    assert s.diagonal_share == 1.0 and s.last_query_argmax == 3
