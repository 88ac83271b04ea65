"""Activation patching: the ends of the scale (everything patched recovers the clean run,
nothing patched is the corrupted run), one changed token's path through the layers, and
head patching against a forward written out by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gpt_tui.engine.analysis.patching import Patch, Patcher, PatchError
from tests.engine.compare_helpers import ours

CLEAN = [3, 14, 15, 9, 26, 5, 35, 8]
CORRUPT = [3, 14, 40, 9, 26, 5, 35, 8]  # one token changed, at position 2


def patcher(family: str) -> Patcher:
    model = ours(family)
    with torch.no_grad():
        last = model(torch.tensor([CLEAN]))[0][0, -1]
    answer, wrong = int(last.argmax()), int(last.argmin())
    return Patcher(model, CLEAN, CORRUPT, answer, wrong)


@pytest.mark.parametrize("family", ["nanogpt", "nanochat"])
def test_all_of_resid_pre_at_layer_0_is_the_clean_run_and_nothing_is_the_corrupted(family):
    p = patcher(family)
    every_position = [Patch("resid_pre", 0, t) for t in range(len(CLEAN))]
    whole, nothing = p.effects([every_position, []])
    assert whole == pytest.approx(1.0, abs=1e-5)
    assert nothing == pytest.approx(0.0, abs=1e-5)
    assert p.effects([[Patch("resid_pre", 0, None)]]) == pytest.approx([1.0], abs=1e-5)


@pytest.mark.parametrize("family", ["nanogpt", "nanochat"])
def test_the_changed_token_carries_everything_at_layer_0(family):
    sweep = patcher(family).sweep("resid_pre")
    assert sweep.layers == (0, 1) and sweep.columns == tuple(range(len(CLEAN)))
    layer0 = sweep.values[0]
    assert layer0[2] == pytest.approx(1.0, abs=1e-5)  # the only position that differs
    assert all(v == pytest.approx(0.0, abs=1e-5) for t, v in enumerate(layer0) if t != 2)
    # before position 2 nothing differs at any layer: a causal model cannot look ahead
    assert all(abs(row[t]) < 1e-5 for row in sweep.values for t in (0, 1))
    assert sweep.clean_diff > sweep.corrupted_diff


def test_attn_and_mlp_sweeps_have_a_value_per_layer_and_position():
    p = patcher("nanogpt")
    for what in ("attn", "mlp"):
        sweep = p.sweep(what)
        assert len(sweep.values) == 2 and all(len(r) == len(CLEAN) for r in sweep.values)
        assert all(math.isfinite(v) for r in sweep.values for v in r)
        assert all(abs(r[0]) < 1e-5 and abs(r[1]) < 1e-5 for r in sweep.values)


def _reference_logit_diff(model, ids, patch_head, clean_heads, answer, wrong) -> float:
    """nanoGPT's forward written out, with one head's output replaced by the clean one's."""
    (layer, head) = patch_head
    W = dict(model.named_parameters())
    T = len(ids)
    x = W["transformer.wte.weight"][ids] + W["transformer.wpe.weight"][:T]
    heads_seen = []

    def ln(v, name):
        return F.layer_norm(v, v.shape[-1:], W[name + ".weight"], W.get(name + ".bias"))

    for i in range(model.config.n_layer):
        pre = f"transformer.h.{i}."
        h = ln(x, pre + "ln_1")
        qkv = h @ W[pre + "attn.c_attn.weight"].T + W[pre + "attn.c_attn.bias"]
        q, k, v = qkv.split(model.config.n_embd, dim=-1)
        nh = model.config.n_head
        hs = model.config.n_embd // nh
        outs = []
        for j in range(nh):
            cols = slice(j * hs, (j + 1) * hs)
            scores = q[:, cols] @ k[:, cols].T / math.sqrt(hs)
            scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), -math.inf)
            y = scores.softmax(-1) @ v[:, cols]  # (T, hs)
            if (i, j) == (layer, head):
                y = clean_heads[i][j]
            outs.append(y)
        heads_seen.append(outs)
        y = torch.cat(outs, dim=-1)
        x = x + y @ W[pre + "attn.c_proj.weight"].T + W[pre + "attn.c_proj.bias"]
        h = ln(x, pre + "ln_2")
        m = F.gelu(h @ W[pre + "mlp.c_fc.weight"].T + W[pre + "mlp.c_fc.bias"])
        x = x + m @ W[pre + "mlp.c_proj.weight"].T + W[pre + "mlp.c_proj.bias"]
    logits = ln(x, "transformer.ln_f") @ W["transformer.wte.weight"].T  # tied
    return float(logits[-1, answer] - logits[-1, wrong]), heads_seen


def test_head_patching_matches_a_hand_written_reference():
    p = patcher("nanogpt")
    model, a, w = p.model, p.answer, p.wrong
    with torch.no_grad():
        clean_diff, clean_heads = _reference_logit_diff(model, CLEAN, (-1, -1), None, a, w)
        corrupt_diff, _ = _reference_logit_diff(model, CORRUPT, (-1, -1), None, a, w)
        assert clean_diff == pytest.approx(p.clean_diff, abs=1e-4)
        sweep = p.sweep("heads")
        assert sweep.columns == (0, 1)
        for layer in sweep.layers:
            for head in sweep.columns:
                ref, _ = _reference_logit_diff(model, CORRUPT, (layer, head), clean_heads, a, w)
                expected = (ref - corrupt_diff) / (clean_diff - corrupt_diff)
                assert sweep.values[layer][head] == pytest.approx(expected, abs=1e-4)
    assert any(abs(v) > 1e-3 for row in sweep.values for v in row)  # heads do matter here


def test_patching_mistakes_are_one_line():
    model = ours("nanogpt")
    with pytest.raises(PatchError, match="same token length"):
        Patcher(model, CLEAN, CLEAN[:-1], 1, 2)
    with pytest.raises(PatchError, match="nothing to recover"):
        Patcher(model, CLEAN, CLEAN, 1, 2)
    with pytest.raises(PatchError, match="same token"):
        Patcher(model, CLEAN, CORRUPT, 1, 1)
