"""The training step laid open, on the `tiny` config (CPU)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gpt_tui.engine.core.session import ModelSpec, Session
from gpt_tui.engine.debugger import Debugger
from gpt_tui.engine.training.health import flags, train_health
from gpt_tui.engine.training.step import (
    ZERO_TARGETS,
    StepOptions,
    TrainingError,
    train_step,
)
from gpt_tui.io.batches import Batch


def tiny(arch: str = "nanogpt") -> Session:
    return Session.open(ModelSpec(config="tiny", arch=arch, device="cpu"))


def random_batch(rows: int = 4, block: int = 16, seed: int = 0) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(65, (rows, block), generator=gen)
    y = torch.randint(65, (rows, block), generator=gen)
    return Batch(x, y, "random", ())


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("arch", ["nanogpt", "nanochat"])
def test_loss_at_init_is_about_ln_vocab_on_random_targets(arch):
    report = train_step(tiny(arch).model, random_batch())
    assert abs(report.loss - math.log(65)) < 0.3
    assert len(report.row_losses) == 4 and report.scored_targets == 64
    assert report.loss == pytest.approx(sum(report.row_losses) / 4, rel=1e-5)
    assert report.first_nonfinite is None
    assert report.phases_run == ("forward", "loss", "backward", "optimizer")


def test_reported_gradients_equal_torch_own_grad():
    session = tiny()
    model, batch = session.model, random_batch()
    report = train_step(model, batch, StepOptions(clip=None))
    model.zero_grad()
    logits, _ = model(batch.x, batch.y)
    F.cross_entropy(logits.view(-1, 65), batch.y.view(-1)).backward()
    plain = {n: p.grad.norm().item() for n, p in model.named_parameters()}
    got = {r.name: r.grad_norm for r in report.params}
    assert set(got) == set(plain)
    for name, norm in plain.items():
        assert got[name] == pytest.approx(norm, rel=1e-4, abs=1e-7), name
    total = torch.linalg.vector_norm(torch.tensor(list(plain.values()))).item()
    assert report.grad_norm == pytest.approx(total, rel=1e-4)
    assert report.grad_norm_clipped == pytest.approx(report.grad_norm, rel=1e-6)


def test_clipping_and_update_ratios():
    report = train_step(tiny().model, random_batch(), StepOptions(clip=0.1, lr=1e-3))
    assert report.grad_norm > 0.1
    assert report.grad_norm_clipped == pytest.approx(0.1, rel=1e-3)
    assert all(p.update_ratio is not None and p.update_ratio > 0 for p in report.params)
    # Adam's first step moves every element by about lr: a gain of ones moves by lr / 1.
    gains = [p.update_ratio for p in report.params if p.name.endswith("ln_1.weight")]
    assert gains and all(r == pytest.approx(1e-3, rel=0.05) for r in gains)


def test_backward_visits_blocks_in_reverse_forward_order():
    report = train_step(tiny().model, random_batch())
    forward = [r.name for r in report.forward if r.phase == "out" and r.kind == "block"]
    backward = [e.name for e in report.backward if e.kind == "block"]
    assert forward == ["transformer.h.0", "transformer.h.1"]
    assert backward == forward[::-1]
    names = [e.name for e in report.backward]
    assert names.index("transformer.h.1.mlp") < names.index("transformer.h.1.attn")
    assert names.index("transformer.h.1") < names.index("transformer.h.0.mlp")
    assert all(e.grad_output is not None and e.grad_output.finite for e in report.backward)


def test_inject_grad_nan_names_the_module_in_backward():
    opts = StepOptions(inject_grad_nan="transformer.h.1.attn", watch_nan=True)
    report = train_step(tiny().model, random_batch(), opts)
    assert report.first_nonfinite is not None
    assert (report.first_nonfinite.phase, report.first_nonfinite.where) == (
        "backward",
        "transformer.h.1.attn",
    )
    assert "optimizer" not in report.phases_run  # the watch stops before the update


@pytest.mark.parametrize("module", ["transformer.h.0.mlp", "transformer.h.1.attn"])
def test_inject_nan_names_the_forward_module(module):
    report = train_step(tiny().model, random_batch(), StepOptions(inject_nan=module))
    assert report.first_nonfinite is not None
    assert (report.first_nonfinite.phase, report.first_nonfinite.where) == ("forward", module)


def test_bad_module_names_are_one_line_errors():
    with pytest.raises(TrainingError, match="--inject-nan: no module 'transformer.h.9'"):
        train_step(tiny().model, random_batch(), StepOptions(inject_nan="transformer.h.9"))
    with pytest.raises(TrainingError, match="token ids"):
        train_step(tiny().model, random_batch(), StepOptions(inject_grad_nan="transformer.wte"))


def test_all_ignored_targets_give_an_explained_nan():
    batch = random_batch()
    batch = Batch(batch.x, torch.full_like(batch.y, -1), "ignored", ())
    report = train_step(tiny().model, batch, StepOptions(watch_nan=True))
    assert math.isnan(report.loss) and report.scored_targets == 0
    assert report.loss_note == ZERO_TARGETS
    assert "averages over zero targets" in report.loss_note
    assert report.first_nonfinite is not None and report.first_nonfinite.phase == "loss"


def test_weights_are_bit_identical_unless_kept():
    model = tiny().model
    before = weights(model)
    report = train_step(model, random_batch(), StepOptions(lr=1e-2))
    assert report.max_update_ratio > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    train_step(model, random_batch(), StepOptions(lr=1e-2, keep=True))
    assert not torch.equal(before["lm_head.weight"], model.state_dict()["lm_head.weight"])


def test_sgd_update_is_lr_times_grad():
    model = tiny().model
    report = train_step(model, random_batch(), StepOptions(optimizer="sgd", lr=0.5, clip=None,
                                                           weight_decay=0.0))  # fmt: skip
    row = next(r for r in report.params if r.name == "transformer.h.0.mlp.c_fc.weight")
    assert row.update_ratio == pytest.approx(0.5 * row.grad_norm / row.param_norm, rel=1e-4)


def test_bfloat16_autocast_runs_on_cpu():
    report = train_step(tiny().model, random_batch(), StepOptions(dtype="bfloat16"))
    assert abs(report.loss - math.log(65)) < 0.3
    with pytest.raises(TrainingError, match="float16 or bfloat16"):
        train_step(tiny().model, random_batch(), StepOptions(dtype="int8"))


def test_health_stops_at_the_first_nonfinite_and_weights_come_back():
    model = tiny().model
    before = weights(model)
    health = train_health(model, lambda i: random_batch(seed=i), 6, StepOptions(lr=1e-3))
    assert [s.step for s in health.steps] == list(range(6)) and health.stopped is None
    assert all(s.tokens_per_s > 0 and s.memory for s in health.steps)
    assert {k for k, _ in health.steps[0].layer_ratios} == {"h.0", "h.1", "other"}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    opts = StepOptions(inject_grad_nan="transformer.h.0.mlp")
    health = train_health(model, lambda i: random_batch(seed=i), 6, opts)
    assert len(health.steps) == 1 and health.stopped_step == 0
    assert (health.stopped.phase, health.stopped.where) == ("backward", "transformer.h.0.mlp")
    assert health.steps[0].nonfinite > 0


def test_health_flags_a_too_high_learning_rate():
    health = train_health(tiny().model, lambda i: random_batch(seed=i), 3, StepOptions(lr=1.0))
    assert any("update ratio high" in f for f in health.flags)


def test_flags_name_a_loss_spike_and_a_growing_grad_norm():
    from gpt_tui.engine.training.health import HealthStep

    def step(i, loss, norm):
        return HealthStep(i, loss, norm, 1e-3, (("h.0", 1e-3),), 0, 1.0, ())

    losses = [2.0, 2.1, 1.9, 2.0, 2.05, 9.0]
    norms = [1, 1.5, 2, 3, 4, 5]
    found = flags(
        tuple(step(i, lo, n) for i, (lo, n) in enumerate(zip(losses, norms, strict=True)))
    )
    assert any(f.startswith("loss spike at step 5") for f in found)
    assert any(f.startswith("growing gradient norm: 1 -> 5") for f in found)
    calm = flags(tuple(step(i, 2.0 + 0.01 * (i % 2), 1.0) for i in range(8)))
    assert calm == ()


def test_debugger_steps_backward_module_by_module():
    debugger = Debugger(tiny())
    try:
        debugger.set_prompt("To be, or not to be: that is the question.")
        state = debugger.train_step("into")
        assert state.training.phase == "batch" and state.training.report is not None
        state = debugger.train_step("over")  # to the forward phase
        assert state.training.phase == "forward"
        state = debugger.train_step("over")
        assert state.training.phase == "loss"
        seen = []
        state = debugger.train_step("into")
        while state.training.phase == "backward":
            seen.append(state.training.current_module)
            state = debugger.train_step("into")
        assert seen == [e.name for e in state.training.report.backward]
        assert seen.index("transformer.h.1") < seen.index("transformer.h.0")
        assert state.training.phase == "optimizer"
    finally:
        debugger.close()


def test_debugger_continue_stops_at_the_gradient_watchpoint():
    debugger = Debugger(tiny())
    try:
        opts = StepOptions(watch_nan=True, inject_grad_nan="transformer.h.1.attn")
        debugger.set_training_options(opts)
        state = debugger.train_step("continue")
        assert state.message == "non-finite: backward at transformer.h.1.attn"
        assert state.training.current_module == "transformer.h.1.attn"
        assert state.training.phase == "backward"
    finally:
        debugger.close()


def test_a_cancelled_health_run_puts_the_weights_back():
    debugger = Debugger(tiny())
    before = weights(debugger.session.model)
    try:
        mid = debugger.new_move()
        seen = []

        def progress(step):
            seen.append(step.step)
            assert debugger.cancel(mid)

        state = debugger.train_health(50, progress=progress, move=mid)
        assert state.cancelled and seen == [0]
        assert "cancelled" in state.message
        model = debugger.session.model
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    finally:
        debugger.close()


def test_a_val_batch_of_the_sample_scores_near_its_eval_loss(shakespeare_path):
    from gpt_tui.engine.analysis.evaluate import evaluate, split_text
    from gpt_tui.io.batches import open_source

    session = Session.open(ModelSpec(sample="shakespeare-nanogpt", device="cpu"))
    context = session.context_len
    val = session.encode(split_text(shakespeare_path.read_text(encoding="utf-8"), "val"))
    expected = evaluate(session.model, val, context, session.device).loss
    decode = lambda i: session.decode([i])  # noqa: E731
    source = open_source(str(shakespeare_path), session.encode, decode, split="val")
    report = train_step(session.model, source.get_batch(8, context, seed=0))
    assert abs(report.loss - expected) < 0.3


def test_float16_autocast_runs_on_cpu_without_a_scaler():
    report = train_step(tiny().model, random_batch(), StepOptions(dtype="float16"))
    assert abs(report.loss - math.log(65)) < 0.3 and report.scaler is None
    assert report.first_nonfinite is None


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_a_cancelled_step_stops_at_the_next_module_and_puts_the_weights_back(where):
    debugger = Debugger(tiny())
    model = debugger.session.model
    before = weights(model)
    mid = debugger.new_move()
    block = model.transformer.h[0] if where == "forward" else model.transformer.h[1]
    seen = []

    def cancel(*_args):
        seen.append(where)
        assert debugger.cancel(mid)

    if where == "forward":
        handle = block.register_forward_hook(cancel)
    else:
        handle = block.register_full_backward_hook(cancel)
    try:
        state = debugger.train_step("into", move=mid)
        assert state.cancelled and seen == [where]
        assert state.message == "training step cancelled"
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        assert all(p.grad is None for p in model.parameters())
        handle.remove()
        state = debugger.train_step("into")  # the next move runs
        assert not state.cancelled and state.training.report is not None
    finally:
        handle.remove()
        debugger.close()
