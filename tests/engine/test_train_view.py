"""Training view: the model's own loss, gradient norms, and no change to the weights."""

from __future__ import annotations

import pytest
import torch

from gpt_tui.engine.train_view import train_view
from gpt_tui.models import build_model, make_config

IDS = [3, 14, 15, 9, 26, 5, 35, 8, 9, 7]


@pytest.fixture(params=["nanogpt", "nanochat"])
def model(request) -> torch.nn.Module:
    if request.param == "nanogpt":
        return build_model(make_config("tiny", overrides={"dropout": 0.1}), "cpu")
    return build_model(make_config("tiny", "nanochat", {"n_head": 4, "n_kv_head": 2}), "cpu")


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_loss_gradients_and_untouched_weights(model):
    before = _snapshot(model)
    with torch.inference_mode():  # the session runs the model in inference mode elsewhere
        view = train_view(model, IDS)
    with torch.no_grad():
        _, expected = model(torch.tensor([IDS[:-1]]), targets=torch.tensor([IDS[1:]]))
    assert view.loss == pytest.approx(expected.item(), abs=1e-6)
    assert view.n_targets == len(IDS) - 1
    norms = [r.grad_norm for r in view.rows]
    assert norms == sorted(norms, reverse=True) and norms[0] > 0
    assert {r.name for r in view.rows} == {n for n, _ in model.named_parameters()}
    assert view.trainable_params == sum(p.numel() for p in model.parameters())
    assert view.frozen_params == 0 and view.frozen_tensors == ()
    after = _snapshot(model)
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert all(p.grad is None for p in model.parameters())
    assert not model.training


def test_gradient_norms_equal_a_plain_backward(model):
    view = train_view(model, IDS)
    _, loss = model(torch.tensor([IDS[:-1]]), targets=torch.tensor([IDS[1:]]))
    loss.backward()
    reference = {n: p.grad.norm().item() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    for row in view.rows:
        assert row.grad_norm == pytest.approx(reference[row.name], rel=1e-5, abs=1e-9)


def test_frozen_parameters_and_restored_state(model):
    first = next(iter(model.parameters()))
    first.requires_grad_(False)
    model.train()
    marker = torch.ones_like(list(model.parameters())[-1])
    list(model.parameters())[-1].grad = marker
    view = train_view(model, IDS)
    assert len(view.frozen_tensors) == 1 and view.frozen_params == first.numel()
    assert view.frozen_tensors[0] not in {r.name for r in view.rows}
    assert model.training and not first.requires_grad
    assert list(model.parameters())[-1].grad is marker  # earlier grads are put back


def test_long_prompt_is_cropped_and_short_one_rejected(model):
    view = train_view(model, list(range(30)))  # context 16
    assert view.n_targets == 16 and "cropped from the left" in view.note
    with pytest.raises(ValueError, match="at least two tokens"):
        train_view(model, [1])
