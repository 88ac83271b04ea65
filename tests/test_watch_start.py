"""Backward's start: when the value `backward()` is called on is not finite (`loss * nan`
after the model returned its loss, a loss divided by 0 for gradient accumulation, a loss
the loop computes outside the model from the logits), every module's grad_output is
already non-finite. The watch names the loss / the model's output then, not the first
parameter whose gradient it reads, and its case says it cannot replay that."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_watch import batches, tiny_model

import gpt_tui
from gpt_tui.cli import run
from gpt_tui.engine.training.watch_case import replay_case

NOT_AGAIN = "so it cannot find this again"


def reopened(report: Path) -> dict:
    """`gpt-tui train-step --case REPORT --json`'s output."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert run(["train-step", "--case", str(report), "--json"]) == 0
    return json.loads(out.getvalue())


def loop(model, data, scale, *, report=None, outside=False) -> gpt_tui.NonFiniteError:
    """A nanoGPT-style loop whose step 2 calls backward on `scale(loss)`; `outside`: the
    loop calls model(x) and computes the loss from the logits itself. The error it raises."""
    optimizer = torch.optim.AdamW(model.parameters())
    with (
        pytest.raises(gpt_tui.NonFiniteError) as raised,
        gpt_tui.watch(model, optimizer=optimizer, report=report),
    ):
        for step, (x, y) in enumerate(data):
            if outside:
                logits, _ = model(x)
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
            else:
                out = model(x, y)  # nanoGPT's (logits, loss), nanochat's bare loss
                loss = out[1] if isinstance(out, tuple) else out
            if step == 2 and scale is not None:
                loss = scale(loss)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return raised.value


def test_a_loss_multiplied_by_nan_is_named_at_the_loss_and_its_case_says_it_cannot_replay(
    tmp_path: Path,
) -> None:
    model = tiny_model()
    report = tmp_path / "report"
    error = loop(model, batches(65, 4), lambda loss: loss * float("nan"), report=report)
    finding = error.finding
    assert (finding.step, finding.phase, finding.where) == (2, "loss", "loss")
    assert finding.detail.startswith("the loss backward() started from was NaN")
    assert "gradients" not in str(error) and "wte" not in str(error)
    assert str(error).startswith(
        "step 2: the first non-finite value is in loss at loss (the loss backward() started "
        "from was NaN: the model's loss was finite, the gradient into it NaN (loss * nan"
    )
    assert model.transformer.wte.weight.isfinite().all()  # raised before the update
    folder = Path(finding.report)
    assert folder.name == "step2-loss-loss"
    case = json.loads((folder / "case.json").read_text())
    assert NOT_AGAIN in case["note"] and case["finding"]["unreplayable"] == case["note"]
    readme = (folder / "README.md").read_text()
    assert "This case cannot reproduce its finding: backward() started from a value" in readme
    again, session = replay_case(report)
    session.close()
    assert again is None  # the model's own loss of the batch is finite
    data = reopened(report)
    assert data["first_nonfinite"] is None
    mismatch = [n for n in data["notes"] if "not the saved finding" in n]
    assert mismatch == [
        "the reopened step found no non-finite value, not the saved finding (loss at loss): "
        + case["note"]
    ]


@pytest.mark.parametrize("arch", ["nanogpt", "nanochat"])
def test_a_loss_divided_by_zero_is_named_as_scaled_by_inf(arch: str) -> None:
    error = loop(tiny_model(arch=arch), batches(65, 4), lambda loss: loss / 0)
    finding = error.finding
    assert (finding.step, finding.phase, finding.where) == (2, "loss", "loss")
    assert "the gradient into it inf (a loss divided by 0" in finding.detail
    assert "gradient-accumulation" in finding.detail


def test_a_loss_computed_outside_the_model_names_the_models_output(tmp_path: Path, capsys) -> None:
    report = tmp_path / "report"
    # e.g. the loop's own gradient accumulation over a count of 0
    error = loop(tiny_model(), batches(65, 4), lambda loss: loss / 0, report=report, outside=True)
    finding = error.finding
    assert (finding.step, finding.phase, finding.where) == (2, "loss", "lm_head")
    assert finding.detail.startswith(
        "the gradient into the model's output (lm_head) was already not finite while every "
        "forward value was finite: the loss backward() started from, computed outside the "
        "model (from its logits), was not finite"
    )
    case = json.loads((Path(finding.report) / "case.json").read_text())
    assert "computed the loss backward() started from outside the model" in case["note"]
    # model(x) alone: the case has no targets to run a step on, and says why in one line
    capsys.readouterr()
    assert run(["train-step", "--case", str(report)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "no targets: your loop called the model on its inputs alone" in err


def test_a_loss_outside_the_model_scaled_by_nan_is_named_there_too() -> None:
    error = loop(tiny_model(), batches(65, 3), lambda loss: loss * math.nan, outside=True)
    assert (error.finding.phase, error.finding.where) == ("loss", "lm_head")


def test_the_models_loss_unused_for_one_of_its_own_is_named_outside(tmp_path: Path) -> None:
    """`logits, _ = model(x, y)` then the loop's own loss: the case has the targets, and its
    step run again finds nothing, saying why."""
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters())
    report = tmp_path / "report"
    with (
        pytest.raises(gpt_tui.NonFiniteError) as raised,
        gpt_tui.watch(model, optimizer=optimizer, report=report),
    ):
        for step, (x, y) in enumerate(batches(65, 3)):
            logits, _ = model(x, y)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
            (loss / 0 if step == 1 else loss).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    finding = raised.value.finding
    assert (finding.step, finding.phase, finding.where) == (1, "loss", "lm_head")
    assert "(not the loss the model returned)" in finding.detail
    data = reopened(report)
    assert data["first_nonfinite"] is None
    assert any(n.endswith(finding.unreplayable) for n in data["notes"])


def test_a_models_loss_whose_own_backward_breaks_is_named_in_backward() -> None:
    """A loss the model computes whose backward turns a finite gradient non-finite (sqrt at
    0: finite forward, infinite slope): the model's loss, in backward."""
    model = tiny_model()
    forward = model.forward

    def sqrt_loss(idx, targets=None):
        logits, loss = forward(idx, targets)
        return logits, torch.sqrt(loss - loss.detach())  # 0 forward, inf * 0 backward

    model.forward = sqrt_loss
    error = loop(model, batches(65, 2), None)
    finding = error.finding
    assert (finding.step, finding.phase, finding.where) == (0, "backward", "loss")
    assert finding.detail == (
        "the gradient into it was finite; what its backward passed into lm_head was not"
    )


def test_a_micro_steps_loss_made_nan_is_named_in_its_micro_step() -> None:
    """Gradient accumulation: micro-step 2 of 4 of step 1 backs up `loss * nan`; the others'
    gradients into the loss (1/4) are finite."""
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters())
    data = iter(batches(65, 8))
    with (
        pytest.raises(gpt_tui.NonFiniteError) as raised,
        gpt_tui.watch(model, optimizer=optimizer, report=None),
    ):
        for step in range(2):
            for micro in range(4):
                _, loss = model(*next(data))
                loss = loss / 4
                ((loss * math.nan) if (step, micro) == (1, 2) else loss).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    finding = raised.value.finding
    assert (finding.step, finding.micro_step, finding.micro_steps) == (1, 2, 4)
    assert (finding.phase, finding.where) == ("loss", "loss")
    assert str(raised.value).startswith(
        "step 1, micro-step 2 of 4: the first non-finite value is in loss at loss (the loss "
        "backward() started from was NaN"
    )


def test_without_an_optimizer_each_forward_is_a_step_and_the_start_is_named() -> None:
    model = tiny_model()
    with (
        pytest.raises(gpt_tui.NonFiniteError) as raised,
        gpt_tui.watch(model, report=None),
    ):
        for step, (x, y) in enumerate(batches(65, 3)):
            _, loss = model(x, y)
            (loss / 0 if step == 1 else loss).backward()
    finding = raised.value.finding
    assert (finding.step, finding.phase, finding.where) == (1, "loss", "loss")
    assert "the gradient into it inf" in finding.detail
