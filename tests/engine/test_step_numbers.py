"""The laid-open training step reports the numbers of the plain computation, however it
reads them: backward stats are those full backward hooks see, and a step that reuses the
buffers of the last one (AdamW's moments, the weights' snapshot) reports what a fresh
optimizer gives."""

from __future__ import annotations

import pytest
import torch

from gpt_tui.engine.analysis.interventions import get_module
from gpt_tui.engine.core.session import ModelSpec, Session
from gpt_tui.engine.core.stats import tensor_stats
from gpt_tui.engine.training.step import (
    StepOptions,
    Stepper,
    restored,
    row_losses,
    train_step,
    training_logits,
    wants_targets,
)
from gpt_tui.io.batches import Batch


def tiny(arch: str = "nanogpt") -> torch.nn.Module:
    return Session.open(ModelSpec(config="tiny", arch=arch, device="cpu")).model


def random_batch(seed: int = 0) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(65, (4, 16), generator=gen)
    y = torch.randint(65, (4, 16), generator=gen)
    return Batch(x, y, "random", ())


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # the embedding's
@pytest.mark.parametrize("arch", ["nanogpt", "nanochat"])
def test_backward_stats_are_those_of_full_backward_hooks(arch):
    model, batch = tiny(arch), random_batch()
    report = train_step(model, batch, StepOptions(clip=None))
    seen = []

    def hook(name):
        def record(_m, grad_input, grad_output):
            gi = grad_input[0] if grad_input else None
            seen.append((name, tensor_stats(grad_output[0]),
                         None if gi is None else tensor_stats(gi)))  # fmt: skip

        return record

    names = dict.fromkeys(e.name for e in report.backward)
    handles = [get_module(model, n).register_full_backward_hook(hook(n)) for n in names]
    try:
        model.train(False)
        logits = training_logits(model, batch.x, batch.y, wants_targets(model, batch.x))
        row_losses(logits, batch.y)[0].backward()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
    assert [(e.name, e.grad_output, e.grad_input) for e in report.backward] == seen


def test_a_step_that_reuses_buffers_reports_what_a_fresh_optimizer_gives():
    model, opts = tiny(), StepOptions(lr=1e-2)
    first = train_step(model, random_batch(0), opts)
    other = train_step(model, random_batch(1), opts)
    again = train_step(model, random_batch(0), opts)
    with torch.inference_mode(False), restored(model) as saved:
        fresh = Stepper(model, opts).step(random_batch(0), None, saved)
    assert first == again == fresh
    assert other.params != first.params
    assert first.max_update_ratio > 0
