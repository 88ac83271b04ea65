"""Memory of a training step against hand computations, and the fit's forecast against a
measured size."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from gpt_tui.engine.analysis.memory import MemoryError_, fit_memory, measure_step, memory_report
from gpt_tui.engine.core.session import ModelSpec, Session

V, D = 11, 24


class EmbedLinear(nn.Module):
    """Tokens -> embedding -> one Linear to the vocabulary."""

    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(V, D)
        self.head = nn.Linear(D, V)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(self.wte(idx))  # (B, T, V)


def test_a_linear_saves_its_input_and_adamw_keeps_two_moments() -> None:
    model = EmbedLinear()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    B, T = 3, 5
    step = measure_step(model, B, T, "adamw")
    head = next(m for m in step.modules if m.name == "head")
    assert head.activations == B * T * D * 4  # the input, fp32, saved for the weight's grad
    assert head.params == (D * V + V) * 4
    assert head.grads == head.params
    assert head.optimizer == 2 * head.params  # exp_avg and exp_avg_sq (the step count is 0-d)
    wte = next(m for m in step.modules if m.name == "wte")
    assert wte.activations == B * T * 8  # the int64 indices, for the embedding's grad
    assert step.peak == step.fixed + step.total("activations")
    for k, v in model.state_dict().items():  # the weights are put back
        assert torch.equal(v, before[k])
    assert all(p.grad is None for p in model.parameters())


def test_muon_keeps_one_buffer_for_block_matrices() -> None:
    session = Session.open(ModelSpec(config="tiny", device="cpu"))
    step = measure_step(session.model, 1, 8, "muon")
    c_fc = next(m for m in step.modules if m.name == "transformer.h.0.mlp.c_fc")
    assert c_fc.optimizer == c_fc.params  # one momentum buffer
    wpe = next(m for m in step.modules if m.name == "transformer.wpe")
    assert wpe.optimizer == 2 * wpe.params  # outside the blocks: AdamW


def test_the_fit_forecasts_a_measured_third_size_within_ten_percent() -> None:
    session = Session.open(ModelSpec(config="tiny", device="cpu"))
    fit, _ = fit_memory(session.model, 16)
    assert fit.check_error < 0.10
    measured = measure_step(session.model, 3, 12).peak
    assert fit.forecast(3, 12) == pytest.approx(measured, rel=0.10)


def test_largest_batch_is_the_last_that_fits() -> None:
    session = Session.open(ModelSpec(config="tiny", device="cpu"))
    report = memory_report(session, 2, 16, budget_gib=0.001)
    fit, n = report.fit, report.largest_batch
    assert n is not None and n > 2
    assert fit.forecast(n, 16) <= 0.001 * 2**30 < fit.forecast(n + 1, 16)
    # what grows with the batch is scaled by it; the position ids wpe saves are not
    one = {m.name: m for m in report.step.modules}
    for m in report.modules:
        free = one[m.name].batch_free
        assert m.activations == free + 2 * (one[m.name].activations - free)
    assert one["transformer.wpe"].batch_free == one["transformer.wpe"].activations == 16 * 8


def test_each_row_at_the_asked_batch_is_what_a_step_at_that_batch_saves() -> None:
    """nanoGPT's wpe saves a (T,) position index, the same at any batch: scaling every
    module's batch-1 activations by the batch overstated it 64 times at batch 64."""
    session = Session.open(ModelSpec(config="tiny", device="cpu"))
    batch, block = 5, 8
    report = memory_report(session, batch, block)
    truth = measure_step(session.model, batch, block)
    assert {m.name: m.activations for m in report.modules} == {
        m.name: m.activations for m in truth.modules
    }
    wpe = next(m for m in report.modules if m.name == "transformer.wpe")
    assert wpe.activations == block * 8  # int64 positions, not batch x that
    # the forecast is the sum of the rows (CPU: the peak is the measured tensors)
    assert report.forecast == pytest.approx(sum(m.total for m in report.modules), abs=1)
    assert report.forecast == pytest.approx(truth.peak, abs=1)


def test_a_batch_beyond_the_budget_and_a_block_beyond_the_context_are_errors() -> None:
    session = Session.open(ModelSpec(config="tiny", device="cpu"))
    with pytest.raises(MemoryError_, match="largest batch that fits is"):
        memory_report(session, 10**6, 16, budget_gib=0.001)
    with pytest.raises(MemoryError_, match="longer than the model's context"):
        memory_report(session, 1, 999)
    with pytest.raises(MemoryError_, match="above 0"):
        memory_report(session, 1, 8, budget_gib=0)


def test_an_upstream_nanogpt_file_is_measured_with_logits_at_every_position() -> None:
    """Upstream nanoGPT applies the head to the last position unless given targets: the
    step is measured as training runs it, the head saving its whole (B, T, C) input."""
    from pathlib import Path

    from gpt_tui.io.model_file import load_model_file

    args = dict(block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32, dropout=0.0,
                bias=False)  # fmt: skip
    path = Path(__file__).resolve().parents[1] / "fixtures" / "user_models" / "model.py"
    found = load_model_file(path, model_args=args)
    model = found.model_class(found.config_class(**args))
    step = measure_step(model, 2, 16)
    head = next(m for m in step.modules if m.name == "lm_head")
    assert head.activations == 2 * 16 * 32 * 4


def test_bf16_autocast_keeps_fp32_weights_grads_and_state_and_halves_the_head_input() -> None:
    """--dtype bfloat16 is the autocast of mixed-precision training (nanoGPT's train.py
    `dtype`), not a cast of the weights."""
    model = EmbedLinear()
    B, T = 3, 5
    step = measure_step(model, B, T, "adamw", autocast=torch.bfloat16)
    head = next(m for m in step.modules if m.name == "head")
    assert head.params == (D * V + V) * 4  # fp32 master weights
    assert head.grads == head.params and head.optimizer == 2 * head.params
    assert head.activations == B * T * D * 2  # the input, in bf16, saved for the weight's grad
    assert head.weight_copies == D * V * 2  # autocast's bf16 weight, saved for the input's grad
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_nanochat_stores_its_embeddings_in_bf16_and_puts_them_back() -> None:
    session = Session.open(ModelSpec(config="tiny", arch="nanochat", device="cpu"))
    model = session.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    step = measure_step(model, 1, 8, autocast=torch.bfloat16, family="nanochat")
    c = session.config
    rows = {m.name: m for m in step.modules}
    wte = c.table_rows * c.n_embd
    assert rows["transformer.wte"].params == wte * 2  # bf16, as nanochat's init_weights casts
    assert rows["transformer.wte"].optimizer == 2 * wte * 2  # AdamW's moments follow the param
    assert rows["lm_head"].params == wte * 4  # a Linear: fp32 master weight
    for k, v in model.state_dict().items():  # the fp32 embedding is back, bit for bit
        assert v.dtype == before[k].dtype and torch.equal(v, before[k])


def test_a_one_token_block_is_fitted_through_two_lengths() -> None:
    session = Session.open(ModelSpec(config="tiny", device="cpu"))
    fit, step = fit_memory(session.model, 1, context=session.context_len)
    assert [(b, t) for b, t, _ in fit.measured] == [(2, 1), (2, 2), (3, 1)]
    assert step.block == 1 and fit.check[:2] == (3, 2)


@pytest.mark.parametrize("era", ["classic", "lambdas", "value-embeds", "autoresearch", "smear"])
def test_nanochat_rows_add_up_to_the_forecast_and_a_step_at_that_batch(era: str) -> None:
    """At batch 1 nanochat's smear gate reads a view of the normed x that the model saves too
    (one storage); from batch 2 its reshape is a copy. Rows grown from batches 1 and 2 missed
    that copy for every further row (872.6 KiB of rows against an 884.6 KiB forecast)."""
    session = Session.open(ModelSpec(config="tiny", arch="nanochat", device="cpu",
                                     overrides=[f"era={era}"]))  # fmt: skip
    for optimizer, autocast in (("adamw", None), ("muon", "bfloat16")):
        report = memory_report(session, 5, 16, optimizer=optimizer, autocast=autocast)
        rows = sum(m.total for m in report.modules)
        assert round(report.forecast) == rows  # to the byte
        amp = torch.bfloat16 if autocast else None
        truth = measure_step(session.model, 5, 16, optimizer, session.vocab_size, 0, amp,
                             family="nanochat")  # fmt: skip
        assert rows == truth.peak
        assert {m.name: m.activations for m in report.modules} == {
            m.name: m.activations for m in truth.modules
        }
