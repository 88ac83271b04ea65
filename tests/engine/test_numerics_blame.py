"""The fp32-vs-dtype check blames the module that amplified the error, not the first one
whose error happened to cross the tolerance."""

from __future__ import annotations

import torch
import torch.nn as nn

from gpt_tui.engine.analysis.compare import Comparison, ProbeDiff
from gpt_tui.engine.analysis.numerics import what_if
from gpt_tui.engine.analysis.numerics_blame import blame

TOL = 0.01


def _comparison(rows: list[tuple[str, float | None, float]]) -> Comparison:
    """(name, input relative error or None, output relative error), in execution order."""
    records = tuple(
        ProbeDiff(name, name, "module", None, out, out, 1.0, not out <= TOL)
        for name, _, out in rows
    )
    inputs = {name: inp for name, inp, _ in rows if inp is not None}
    return Comparison(records, None, TOL, (0,), input_rel=inputs)


def test_a_module_that_crosses_with_the_error_it_was_given_is_not_blamed() -> None:
    # the GELU case: 0.009 in, 0.012 out crosses 0.01 but did not amplify anything
    said = blame(_comparison([
        ("wte", 0.0, 0.002), ("h.3.mlp.c_fc", 0.008, 0.009), ("h.3.mlp.gelu", 0.009, 0.012),
        ("h.3.mlp.c_proj", 0.012, 0.013), ("h.3.resid_post", None, 0.011), ("logits", None, 0.02),
    ]))  # fmt: skip
    assert said.amplifier is None
    assert said.crossed == "h.3.mlp.gelu"
    assert "grew gradually" in said.message and "diverges at" not in said.message
    assert "input 0.009 -> output 0.012 relative" in said.message


def test_the_first_module_that_multiplies_the_error_is_named() -> None:
    said = blame(_comparison([
        ("h.0.mlp.gelu", 0.009, 0.012),  # crosses, no amplification
        ("h.1.attn.c_attn", 0.012, 0.015),
        ("h.1.attn.softmax", 0.015, 0.09),  # 6x: the amplifier
        ("h.1.attn.c_proj", 0.09, 0.5),  # later and larger, but not the first
    ]))  # fmt: skip
    assert said.amplifier == "h.1.attn.softmax"
    assert said.message.startswith("diverges at h.1.attn.softmax: ")
    assert "6x its input's 0.015" in said.message
    assert "crossed 0.01 gradually before, at h.0.mlp.gelu" in said.message


def test_doubling_an_error_still_within_tolerance_is_not_amplification() -> None:
    # 0.001 -> 0.015 is 15x the input but only 1.5x the tolerance: rounding noise grows so
    said = blame(_comparison([("a", 0.001, 0.015), ("b", 0.015, 0.016)]))
    assert said.amplifier is None and said.crossed == "a"


def test_nan_out_of_a_finite_input_is_amplification() -> None:
    said = blame(_comparison([("a", 0.004, 0.005), ("b", 0.005, float("nan"))]))
    assert said.amplifier == "b" and "NaN/inf" in said.message


def test_agreement_names_nothing() -> None:
    said = blame(_comparison([("a", 0.0, 0.001), ("b", 0.001, 0.002)]))
    assert (said.amplifier, said.crossed) == (None, None)
    assert "agrees with fp32" in said.message


class _Cancel(nn.Module):
    """(x + 300) - 300: in bf16 the ulp near 300 is 2, so small x lose every digit."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 300.0) - 300.0


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(16, 32)
        self.act = nn.GELU()
        self.cancel = _Cancel()
        self.lm_head = nn.Linear(32, 16)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.cancel(self.act(self.wte(idx))))


def test_a_real_bf16_pass_blames_the_cancellation_not_what_follows() -> None:
    torch.manual_seed(0)
    w = what_if(_Model().eval(), list(range(8)), "bfloat16")
    assert w.first == "cancel" and w.crossed == "cancel"
    assert w.message.startswith("diverges at cancel: ")
    worst = dict(w.worst)
    assert worst["act"] < TOL < worst["cancel"]  # GELU rounds, the cancellation amplifies
