"""FLOPs against hand computations and against nanoGPT's and nanochat's formulas."""

from __future__ import annotations

import torch
import torch.nn as nn

from gpt_tui.engine.analysis.flops import cost_report, count_flops, device_peak, peak_for_name
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
    train = count_flops(model, x, train=True)
    # backward: the grad of the input and of the weight, each as large as the forward
    assert sum(train.values()) == 3 * 2 * B * T * d_in * d_out


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
    assert f is not None and f.name == "nanoGPT estimate_flops"
    # attention's backward recomputes q·kᵀ: 2·L·C·T more per token; gains and biases: -6 each
    expected = f.per_token + 2 * c.n_layer * c.n_embd * T - 6 * _non_matmul_params(session.model)
    assert f.measured_per_token == expected
    assert f.non_matmul == _non_matmul_params(session.model)
    assert f.attention_extra == 2 * c.n_layer * c.n_embd * T
    assert abs(f.difference) < 0.05
    assert report.train_flops == f.measured_per_token * B * T


def test_nanochat_formula_and_the_measured_count_differ_by_the_recompute() -> None:
    session = Session.open(ModelSpec(config="tiny", arch="nanochat", device="cpu"))
    T = 16
    report = cost_report(session, 1, T, timing=False)
    c = session.config
    f = report.formula
    assert f is not None and f.name == "nanochat estimate_flops"
    assert f.measured_per_token == f.per_token + 2 * c.n_layer * c.n_embd * T
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
    assert meta.step_seconds == 0 and all(m.forward_ms == 0 for m in meta.modules)
    assert meta.mfu is None
