"""A NaN in a weight is named as the weight: when the first non-finite output comes from a
module whose own parameters already hold NaN/Inf, `watch`'s finding, its case (case.json,
README.md) and `gpt-tui train-step --case` name that parameter and how many values."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_watch import batches, tiny_model, train

import gpt_tui
from gpt_tui.engine.training import held_values

FIXTURE = Path(__file__).parent / "fixtures" / "user_models" / "model.py"
WEIGHT = "transformer.h.1.mlp.c_fc.weight"
HELD = f"{WEIGHT} already held 1 NaN at this forward"


def users_model() -> torch.nn.Module:
    """The nanoGPT-style fixture file, imported as a user's own model.py."""
    spec = importlib.util.spec_from_file_location("held_user_model", FIXTURE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["held_user_model"] = module
    spec.loader.exec_module(module)
    config = module.GPTConfig(
        block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=True
    )
    torch.manual_seed(0)
    return module.GPT(config)


def tiny_finding(n_batches: int, before_step=None, lr: float = 1e-3) -> gpt_tui.NonFiniteError:
    """The error a watched tiny model's loop raises (no report written)."""
    with pytest.raises(gpt_tui.NonFiniteError) as raised:
        train(
            tiny_model(),
            batches(65, n_batches),
            watch=lambda m, opt: gpt_tui.watch(m, optimizer=opt, report=None),
            before_step=before_step,
            lr=lr,
        )
    return raised.value


def nan_at_step_3(step, m, x, y):
    if step == 3:
        with torch.no_grad():
            m.transformer.h[1].mlp.c_fc.weight[5, 7] = float("nan")
    return x, y


def test_a_nan_weight_is_named_in_the_finding_the_case_and_train_step(tmp_path: Path) -> None:
    report = tmp_path / "report"
    with pytest.raises(gpt_tui.NonFiniteError) as raised:
        train(
            users_model(),
            batches(65, 6),
            watch=lambda m, opt: gpt_tui.watch(m, optimizer=opt, report=report),
            before_step=nan_at_step_3,
        )
    finding = raised.value.finding
    assert (finding.step, finding.phase, finding.where) == (3, "forward", "transformer.h.1.mlp")
    assert [(h.name, h.nan, h.inf) for h in finding.held] == [(WEIGHT, 1, 0)]
    assert HELD in finding.summary and HELD in str(raised.value)
    folder = Path(finding.report)
    case = json.loads((folder / "case.json").read_text())
    assert case["finding"]["held"] == [{"name": WEIGHT, "nan": 1, "inf": 0}]
    assert HELD in case["summary"] and HELD in (folder / "README.md").read_text()

    command = [sys.executable, "-m", "gpt_tui", "train-step", "--case", str(report)]
    command.append("--trust-case-code")
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = " ".join(done.stdout.split())
    assert "the saved case: step 3: the first non-finite value is in forward at " in lines
    # the step run again on the saved weights finds the weight itself, not only the module
    assert f"first non-finite: forward at transformer.h.1.mlp ({HELD})" in lines, done.stdout
    done = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=300)
    data = json.loads(done.stdout)
    assert data["first_nonfinite"]["held"] == [{"name": WEIGHT, "nan": 1, "inf": 0}]
    assert data["case"]["held"] == data["first_nonfinite"]["held"]


def test_an_output_made_non_finite_with_finite_weights_names_no_weight() -> None:
    def inf_input(step, m, x, y):  # an overflowing activation, every weight finite
        if step == 1:
            with torch.no_grad():
                m.transformer.h[1].mlp.c_fc.weight.fill_(3e38)
        return x, y

    finding = tiny_finding(3, inf_input).finding
    assert (finding.phase, finding.where) == ("forward", "transformer.h.1.mlp")
    assert finding.held == () and "already held" not in finding.summary


def test_an_update_that_breaks_a_weight_says_how_many_values_it_left() -> None:
    finding = tiny_finding(2, lr=float("inf")).finding
    assert finding.phase == "optimizer" and finding.held[0].name == finding.where
    held = finding.held[0]
    assert finding.detail == (
        f"its gradient was finite; the update left {held.counts} in it; its group's lr is inf"
    )
    assert held.nan + held.inf > 0


def test_the_weights_are_read_only_at_a_finding(monkeypatch) -> None:
    calls = []
    real = held_values.nonfinite_parameters
    monkeypatch.setattr(
        "gpt_tui.engine.training.watch.nonfinite_parameters",
        lambda named: calls.append(1) or real(named),
    )
    model = tiny_model()
    train(model, batches(65, 4), watch=lambda m, opt: gpt_tui.watch(m, optimizer=opt))
    assert calls == []  # a clean run never reads the weights
    with pytest.raises(gpt_tui.NonFiniteError):
        train(
            model,
            batches(65, 4),
            watch=lambda m, opt: gpt_tui.watch(m, optimizer=opt, report=None),
            before_step=nan_at_step_3,
        )
    assert calls == [1]  # once, at the finding


def test_every_non_finite_parameter_of_the_module_is_counted_the_first_named() -> None:
    model = tiny_model()
    mlp = model.transformer.h[1].mlp
    with torch.no_grad():
        mlp.c_fc.weight[0, :3] = float("nan")
        mlp.c_fc.weight[1, 0] = float("-inf")
        mlp.c_proj.weight[2, 2] = float("inf")
    named = held_values.module_parameters(model, "transformer.h.1.mlp")
    held = held_values.nonfinite_parameters(named)
    assert [(h.name, h.nan, h.inf) for h in held] == [
        (WEIGHT, 3, 1), ("transformer.h.1.mlp.c_proj.weight", 0, 1)
    ]  # fmt: skip
    assert held_values.held_text(held, "at this forward") == (
        f"{WEIGHT} already held 3 NaN and 1 Inf at this forward "
        "(and 1 more of the module's parameters)"
    )
    assert held_values.module_parameters(model, "no.such.module") == []


def test_a_nan_in_the_token_embedding_is_a_lookup_not_a_finite_input() -> None:
    """An embedding's input is token ids: "its input was finite" said nothing there."""

    def nan_in_wte(step, m, x, y):
        if step == 1:
            with torch.no_grad():
                m.transformer.wte.weight[x[0, 0], 3] = float("nan")
        return x, y

    error = tiny_finding(3, nan_in_wte)
    finding = error.finding
    assert (finding.step, finding.phase, finding.where) == (1, "forward", "transformer.wte")
    assert "it looks up token ids" in str(error)
    assert "its input was finite" not in str(error)
    assert "transformer.wte.weight already held 1 NaN" in str(error)
