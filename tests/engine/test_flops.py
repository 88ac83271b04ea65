"""FLOPs against hand computations and against nanoGPT's and nanochat's formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from gpt_tui.engine.analysis.flops import (
    cost_report,
    count_flops,
    count_step,
    device_peak,
    peak_for_name,
)
from gpt_tui.engine.core.session import ModelSpec, Session


class EmbedLinear(nn.Module):
    def __init__(self, vocab: int, d_in: int, d_out: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d_in)
        self.proj = nn.Linear(d_in, d_out)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.proj(self.wte(idx))


def test_a_linear_costs_two_flops_per_multiply_add() -> None:
    B, T, d_in, d_out = 3, 7, 16, 24
    model = EmbedLinear(10, d_in, d_out)
    x = torch.zeros(B, T, dtype=torch.long)
    forward = count_flops(model, x)
    assert forward == {"proj": 2 * B * T * d_in * d_out}
    train = count_step(model, x)
    # backward: the grad of the input and of the weight, each as large as the forward
    assert train.total == 3 * 2 * B * T * d_in * d_out
    assert train.forward == forward


def _non_matmul_params(model: nn.Module) -> int:
    """Parameters in N that do no matmul: norm gains and biases."""
    return sum(
        p.numel()
        for m in model.modules()
        for p in m.parameters(recurse=False)
        if not isinstance(m, (nn.Linear, nn.Embedding)) or p.dim() < 2
    )


def test_nanogpt_formula_and_the_measured_count_differ_by_known_terms() -> None:
    session = Session.open(ModelSpec(config="tiny", device="cpu", overrides=["bias=true"]))
    B, T = 2, 16
    report = cost_report(session, B, T, timing=False)
    c = session.config
    f = report.formula
    assert f is not None and f.name == "nanoGPT estimate_mfu formula"
    # attention's backward recomputes q·kᵀ: 2·L·C·T more per token; gains and biases: -6 each
    expected = f.at_block + 2 * c.n_layer * c.n_embd * T - 6 * _non_matmul_params(session.model)
    assert f.measured_per_token == expected
    assert f.non_matmul == _non_matmul_params(session.model)
    assert f.attention_extra == 2 * c.n_layer * c.n_embd * T
    assert [(p.label, p.per_token) for p in f.parts] == [
        ("norm gains and biases (in N, no matmul)", -6 * _non_matmul_params(session.model)),
        ("attention backward recomputes q·kᵀ", 2 * c.n_layer * c.n_embd * T),
    ]
    assert abs(f.difference) < 0.05
    assert report.train_flops == f.measured_per_token * B * T


def _nanogpt_params(c) -> int:
    """nanoGPT's get_num_params() from the config: every parameter, the tied wte once, no wpe."""
    C, V, L = c.n_embd, c.vocab_size, c.n_layer
    bias = C if c.bias else 0
    ln = C + bias
    block = 2 * ln + (C * 3 * C + 3 * bias) + (C * C + bias) + (C * 4 * C + 4 * bias)
    block += 4 * C * C + bias
    return V * C + L * block + ln


def test_nanogpt_formula_uses_block_size_not_the_steps_length() -> None:
    """nanoGPT's estimate_mfu: 6N + 12·L·H·Q·T with T = block_size whatever the batch's T."""
    session = Session.open(ModelSpec(config="tiny", device="cpu", overrides=["bias=true"]))
    c = session.config
    T = c.block_size // 4
    report = cost_report(session, 4, T)
    f = report.formula
    assert f is not None and f.context == c.block_size
    n = _nanogpt_params(c)
    assert n == session.model.num_params()
    by_hand = 6 * n + 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * c.block_size
    assert f.per_token == by_hand
    assert f.at_block == 6 * n + 12 * c.n_layer * c.n_embd * T
    # what nanoGPT's train.py would print: estimate_mfu(batch_size, dt), A100 bf16 peak
    mfu = by_hand * c.block_size * 4 / report.step_seconds / 312e12
    assert f.mfu == pytest.approx(mfu, rel=1e-12)


def _nanochat_linear_weights(c) -> int:
    """nanochat's num_matmul_params() from the config: q, k, v, proj, MLP and the head."""
    C, Q = c.n_embd, c.n_embd // c.n_head
    per_layer = C * c.n_head * Q + 2 * C * c.n_kv_head * Q + C * C + 8 * C * C
    return c.n_layer * per_layer + c.vocab_size * C


def test_nanochat_formula_counts_sliding_windows_at_sequence_len() -> None:
    """nanochat's estimate_flops: 6·(Linear weights) + Σ_layers 12·H·Q·min(window, seq_len)."""
    seq, short = 64, 16
    spec = ModelSpec(
        config="tiny", arch="nanochat", device="cpu",
        overrides=[f"sequence_len={seq}", "window_pattern=SSSL", f"short_window={short}",
                   "n_layer=4"],
    )  # fmt: skip
    session = Session.open(spec)
    c = session.config
    report = cost_report(session, 1, 32, timing=False)
    f = report.formula
    assert f is not None and f.name == "nanochat estimate_flops" and f.context == seq
    HQ = c.n_head * (c.n_embd // c.n_head)
    # layers 0-2 are S (16 back), the last is always L (all 64)
    attn = 3 * 12 * HQ * short + 12 * HQ * seq
    assert f.per_token == 6 * _nanochat_linear_weights(c) + attn
    assert f.at_block == 6 * _nanochat_linear_weights(c) + 3 * 12 * HQ * short + 12 * HQ * 32
    # the counter charges SDPA the whole square: the windows' share shows as its own term
    assert f.window_extra == 3 * 12 * HQ * (32 - short)
    assert f.measured_per_token == f.at_block + f.window_extra + 2 * c.n_layer * c.n_embd * 32


def test_the_models_own_estimate_flops_is_shown_beside_ours() -> None:
    session = Session.open(ModelSpec(config="tiny", arch="nanochat", device="cpu"))
    session.model.estimate_flops = lambda: 1234.0  # as nanochat's GPT has
    f = cost_report(session, 1, 8, timing=False).formula
    assert f is not None and f.model_says == 1234.0 and f.model_error is None
    session.model.estimate_flops = lambda: 1 / 0
    f = cost_report(session, 1, 8, timing=False).formula
    assert f is not None and f.model_says is None and "ZeroDivisionError" in f.model_error


def test_nanochat_formula_and_the_measured_count_differ_by_the_recompute() -> None:
    session = Session.open(ModelSpec(config="tiny", arch="nanochat", device="cpu"))
    T = 16
    report = cost_report(session, 1, T, timing=False)
    c = session.config
    f = report.formula
    assert f is not None and f.name == "nanochat estimate_flops"
    assert f.measured_per_token == f.at_block + 2 * c.n_layer * c.n_embd * T
    assert abs(f.difference) < 0.05


def test_module_rows_sum_to_the_forward_and_the_cpu_has_no_peak() -> None:
    session = Session.open(ModelSpec(config="tiny", device="cpu"))
    report = cost_report(session, 2, 8)
    assert sum(m.forward_flops for m in report.modules) == report.forward_flops
    c_fc = next(m for m in report.modules if m.name == "transformer.h.0.mlp.c_fc")
    C = session.config.n_embd
    assert c_fc.forward_flops == 2 * (2 * 8) * C * (4 * C)  # 2·B·T·d_in·d_out
    assert report.step_seconds > 0 and report.peak_flops is None and report.mfu is None
    assert device_peak(torch.device("cpu"), torch.float32) == ("cpu", None)


def test_gpu_peaks_by_name() -> None:
    assert peak_for_name("NVIDIA A100-SXM4-80GB", torch.bfloat16) == 312e12
    assert peak_for_name("NVIDIA H100 PCIe", torch.bfloat16) == 756e12
    assert peak_for_name("NVIDIA H100 80GB HBM3", torch.float16) == 989.4e12
    assert peak_for_name("NVIDIA A10G", torch.float32) == 31.2e12
    assert peak_for_name("Tesla V100-SXM2-16GB", torch.bfloat16) is None  # no bf16
    assert peak_for_name("Some Future GPU", torch.bfloat16) is None


def test_on_the_meta_device_flops_are_counted_and_nothing_is_timed() -> None:
    cpu = cost_report(Session.open(ModelSpec(config="tiny", device="cpu")), 2, 8, timing=False)
    meta = cost_report(Session.open(ModelSpec(config="tiny", device="meta")), 2, 8)
    assert meta.forward_flops == cpu.forward_flops > 0
    assert meta.step_seconds == 0 and all(m.forward_ms is None for m in meta.modules)
    assert meta.mfu is None


def test_the_gap_to_nanochats_formula_is_named_part_by_part() -> None:
    """A trial read `attention +2,039 (the backward recomputes q·kᵀ)`: the −9 in it was the
    smear gate, a Linear(24, 1) that reads only the T−1 tokens with a previous one."""
    session = Session.open(ModelSpec(config="tiny", arch="nanochat", device="cpu",
                                     overrides=["era=smear", "n_kv_head=1"]))  # fmt: skip
    B, T = 4, 16
    c = session.config
    f = cost_report(session, B, T, timing=False).formula
    assert f is not None
    smear = 6 * 24 * B * (T - 1) / (B * T) - 6 * 24  # 6·weights·tokens, per token: -9
    recompute = 2 * c.n_layer * c.n_embd * T  # 2·2·32·16
    assert (smear, recompute) == (-9, 2048)
    assert [(p.label, p.per_token) for p in f.parts] == [
        ("smear_gate on 15 of 16 tokens a row", smear),
        ("attention backward recomputes q·kᵀ", recompute),
    ]
    assert f.attention_extra == recompute
    assert f.measured_per_token == f.at_block + smear + recompute
