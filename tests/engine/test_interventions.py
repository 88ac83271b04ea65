"""Interventions change the forward pass; removing them restores it bit for bit."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_models import tiny_nanochat

from gpt_tui.engine.analysis.interventions import (
    ActivationPatch,
    BlockScale,
    HeadScale,
    InterventionError,
    Interventions,
    OutputScale,
    inject_nonfinite,
    record_activation,
)
from gpt_tui.models import build_model, make_config

IDS_A = torch.tensor([[3, 14, 15, 9, 26, 5, 35, 8]])
IDS_B = torch.tensor([[2, 7, 18, 28, 18, 28, 45, 9]])


@pytest.fixture(params=["nanogpt", "nanochat"])
def model(request) -> torch.nn.Module:
    return (
        build_model(make_config("tiny"), "cpu") if request.param == "nanogpt" else tiny_nanochat()
    )


@torch.inference_mode()
def _logits(model, idx=IDS_A) -> torch.Tensor:
    return model(idx)[0]


def test_head_ablation_changes_logits_and_removal_restores_them_exactly(model):
    before = _logits(model)
    registry = Interventions(model)
    ident = registry.add(HeadScale("transformer.h.1.attn", head=1))
    assert str(registry.active[0]) == "ablate head 1 of transformer.h.1.attn"
    ablated = _logits(model)
    assert not torch.allclose(ablated, before)
    assert registry.remove(ident).head == 1
    assert registry.active == []
    assert torch.equal(_logits(model), before)


def test_head_ablation_zeroes_exactly_that_slice(model):
    attn = model.transformer.h[0].attn
    seen = []
    with Interventions(model) as registry:
        registry.add(HeadScale("transformer.h.0.attn", head=1))
        # Pre-hooks run in the order registered: this one sees the ablated input.
        hook = attn.c_proj.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
        _logits(model)
        hook.remove()
    hs = attn.c_proj.in_features // attn.n_head
    x = seen[0]
    assert torch.count_nonzero(x[..., hs : 2 * hs]) == 0
    assert torch.count_nonzero(x[..., :hs]) > 0
    assert not model.transformer.h[0].attn.c_proj._forward_pre_hooks


def test_scale_one_is_identity(model):
    before = _logits(model)
    with Interventions(model) as registry:
        registry.add(HeadScale("transformer.h.0.attn", head=0, scale=1.0))
        registry.add(OutputScale("transformer.h.1.mlp", scale=1.0))
        registry.add(BlockScale("transformer.h.0", scale=1.0))
        assert torch.equal(_logits(model), before)


def test_mlp_and_block_ablation(model):
    before = _logits(model)
    registry = Interventions(model)
    registry.add(OutputScale("transformer.h.1.mlp"))
    assert not torch.allclose(_logits(model), before)
    registry.clear()
    # Removing every block's contribution leaves only the embedding, read by the head.
    for i in range(model.config.n_layer):
        registry.add(BlockScale(f"transformer.h.{i}", scale=0.0))
    assert registry.active[0].description == "ablate the contribution of block transformer.h.0"
    seen = []
    hook = model.transformer.h[1].register_forward_hook(lambda _m, a, out: seen.append((a[0], out)))
    _logits(model)
    hook.remove()
    x_in, x_out = seen[0]
    assert torch.equal(x_in, x_out)
    registry.clear()
    assert torch.equal(_logits(model), before)


def test_patching_a_run_reproduces_its_downstream_output(model):
    resid_a = record_activation(model, "transformer.h.0", IDS_A)
    with Interventions(model) as registry:
        registry.add(ActivationPatch("transformer.h.0", resid_a, source="run A"))
        assert registry.active[0].description == "patch transformer.h.0 from run A"
        assert torch.equal(_logits(model, IDS_B), _logits(model, IDS_A))


def test_patching_positions_only(model):
    resid_a = record_activation(model, "transformer.h.1", IDS_A)
    with Interventions(model) as registry:
        registry.add(ActivationPatch("transformer.h.1", resid_a, positions=(7,)))
        patched = _logits(model, IDS_B)
    plain_a, plain_b = _logits(model, IDS_A), _logits(model, IDS_B)
    assert torch.equal(patched[:, 7], plain_a[:, 7])  # the last block: output is per position
    assert torch.equal(patched[:, :7], plain_b[:, :7])


def test_patch_shape_mismatch_is_clear(model):
    resid_a = record_activation(model, "transformer.h.0", IDS_A)
    with Interventions(model) as registry:
        registry.add(ActivationPatch("transformer.h.0", resid_a))
        with pytest.raises(InterventionError, match="recorded activation has shape"):
            _logits(model, IDS_B[:, :4])


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_inject_nonfinite_reaches_the_logits(model, value):
    with Interventions(model) as registry:
        registry.add(inject_nonfinite("transformer.h.0.mlp", value=value, position=3))
        logits = _logits(model)
    # Masked attention weights are 0, but 0 * NaN is NaN: earlier positions may see it too.
    assert not torch.isfinite(logits[:, 3:]).any()


def test_validation(model):
    registry = Interventions(model)
    with pytest.raises(InterventionError, match=r"no module 'transformer.h.7.attn'"):
        registry.add(HeadScale("transformer.h.7.attn", head=0))
    n_head = model.transformer.h[0].attn.n_head
    with pytest.raises(
        InterventionError, match=rf"head {n_head} is out of range: .* {n_head} heads"
    ):
        registry.add(HeadScale("transformer.h.0.attn", head=n_head))
    with pytest.raises(InterventionError, match="not an attention module"):
        registry.add(HeadScale("transformer.h.0.mlp", head=0))
    with pytest.raises(InterventionError, match="not a transformer block"):
        registry.add(BlockScale("transformer.h.0.mlp"))
    with pytest.raises(InterventionError, match="NaN or ±Inf"):
        registry.add(inject_nonfinite("transformer.h.0", value=1.0))
    with pytest.raises(InterventionError, match="no active intervention with id 5"):
        registry.remove(5)
    assert registry.active == []
