"""`gpt_tui.watch` arguments, steps counted as the loop counts them (gradient accumulation),
and compiled models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import gpt_tui
from gpt_tui.engine.training.watch import WatchArgumentError
from gpt_tui.errors import GptTuiError
from gpt_tui.models import build_model, make_config


def tiny_model(seed: int = 0) -> torch.nn.Module:
    model = build_model(make_config("tiny", "nanogpt"), "cpu", seed=seed)
    model.train()
    return model


def batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randint(65, (2, 16), generator=gen), torch.randint(65, (2, 16), generator=gen)


@pytest.mark.parametrize(
    ("model", "optimizer", "message"),
    [
        ("str", None, "watch('str'): give the torch.nn.Module your loop trains, not a str"),
        (dict, None, "watch(dict): that is a class; give the torch.nn.Module your loop"),
        ({"a": 1}, None, "not a dict"),
        (None, "adamw", "optimizer='adamw': give the torch.optim.Optimizer your loop steps"),
        (None, "other", "the optimizer's 4 parameters are none of this model's"),
    ],
)
def test_what_watch_cannot_watch_is_one_clear_line(model, optimizer, message) -> None:
    mine = tiny_model()
    if model is None:
        model = mine
    if optimizer == "other":
        optimizer = torch.optim.AdamW(torch.nn.Linear(3, 3).parameters())
        optimizer.add_param_group({"params": torch.nn.Linear(2, 2).parameters()})
    with (
        pytest.raises(WatchArgumentError) as raised,
        gpt_tui.watch(model, optimizer=optimizer, report=None),
    ):
        pass
    text = str(raised.value)
    assert message in text and len(text.splitlines()) == 1
    assert isinstance(raised.value, GptTuiError)
    assert all(not m._forward_hooks for m in mine.modules())


def test_every_and_report_are_checked_too() -> None:
    model = tiny_model()
    for every in (0, 1.5, True):
        with (
            pytest.raises(GptTuiError, match="check every N >= 1 steps"),
            gpt_tui.watch(model, every=every, report=None),
        ):
            pass
    with pytest.raises(GptTuiError, match="give a folder"), gpt_tui.watch(model, report=3):
        pass


def test_the_optimizer_of_the_ddp_inner_module_or_compiled_model_is_accepted() -> None:
    model = tiny_model()
    compiled = torch.compile(model, backend="eager")
    with gpt_tui.watch(compiled, optimizer=torch.optim.SGD(model.parameters()), report=None):
        pass


def accumulate(model, steps, micro_steps, *, watch, broken_at=None, compiled=None):
    """nanoGPT's train.py loop with gradient accumulation; `broken_at=(step, micro)` puts
    a NaN into h.1.mlp's weight just before that micro-step's forward."""
    gen = torch.Generator().manual_seed(1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    run = compiled or model
    losses = []
    with watch(run, optimizer) as handle:
        for step in range(steps):
            for micro in range(micro_steps):
                x, y = batch(gen)
                if (step, micro) == broken_at:
                    with torch.no_grad():
                        model.transformer.h[1].mlp.c_fc.weight[0, 0] = float("nan")
                _, loss = run(x, y)
                (loss / micro_steps).backward()
                losses.append(loss.item())
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return handle.finding, losses


def test_a_nan_at_step_1_micro_step_2_of_4_is_named_so(tmp_path: Path) -> None:
    report = tmp_path / "report"

    def watching(m, opt):
        return gpt_tui.watch(m, optimizer=opt, report=report)

    with pytest.raises(gpt_tui.NonFiniteError) as raised:
        accumulate(tiny_model(), 3, 4, watch=watching, broken_at=(1, 2))
    finding = raised.value.finding
    assert (finding.step, finding.micro_step, finding.micro_steps) == (1, 2, 4)
    assert (finding.phase, finding.where) == ("forward", "transformer.h.1.mlp")
    assert str(raised.value).startswith("step 1, micro-step 2 of 4: the first non-finite")
    assert finding.report is not None and Path(finding.report).parent == report
    case = json.loads((Path(finding.report) / "case.json").read_text())
    assert (case["finding"]["step"], case["finding"]["micro_step"]) == (1, 2)
    assert case["finding"]["micro_steps"] == 4 and "micro-step 2 of 4" in case["summary"]
    saved = torch.load(Path(finding.report) / "batch.pt", weights_only=True)["inputs"]
    gen = torch.Generator().manual_seed(1)
    for _ in range(4 + 3):  # the batch saved is micro-step 2 of step 1 (the 7th)
        x, y = batch(gen)
    assert torch.equal(saved[0], x) and torch.equal(saved[1], y)


def test_a_watch_attached_mid_run_counts_the_optimizers_steps() -> None:
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters())
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):
        model(*batch(gen))[1].backward()
        optimizer.step()
    with gpt_tui.watch(model, optimizer=optimizer, on="report", report=None) as handle:
        with torch.no_grad():
            model.transformer.h[0].attn.c_attn.weight.fill_(float("nan"))
        model(*batch(gen))[1].backward()
        optimizer.step()
    assert (handle.finding.step, handle.finding.where) == (2, "transformer.h.0.attn")


@pytest.mark.parametrize("attach", ["before", "after"])
def test_a_compiled_model_finds_the_same_nan_attached_before_or_after_compiling(
    attach: str, capsys
) -> None:
    torch._dynamo.reset()
    model = tiny_model()
    compiled = torch.compile(model, backend="eager")
    gen = torch.Generator().manual_seed(1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def train_step() -> float:
        _, loss = compiled(*batch(gen))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    if attach == "after":
        train_step(), train_step()  # compiled without hooks
    with gpt_tui.watch(compiled, optimizer=optimizer, on="report", report=None) as handle:
        for step in range(3):
            if step == 1:
                with torch.no_grad():
                    model.transformer.h[1].mlp.c_fc.weight[0, 0] = float("nan")
            train_step()
    finding = handle.finding
    first = 2 if attach == "after" else 0
    assert (finding.step, finding.phase, finding.where) == (
        first + 1, "forward", "transformer.h.1.mlp",
    )  # fmt: skip
    assert "recompiles with the watch's hooks" in capsys.readouterr().err


def test_a_compiled_graph_that_ignores_the_hooks_is_replayed_eagerly(monkeypatch) -> None:
    """Were dynamo's reset refused, the graph would run without the hooks: the watch sees
    the gradients outside it and names the module by an eager replay on a copy."""
    from gpt_tui.engine.training import watch as watch_module

    torch._dynamo.reset()
    model = tiny_model()
    compiled = torch.compile(model, backend="eager")
    gen = torch.Generator().manual_seed(1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    compiled(*batch(gen))[1].backward()  # compiled before the watch: no hooks in the graph
    optimizer.zero_grad()
    monkeypatch.setattr(watch_module, "recompile", lambda: "not recompiled")
    with torch.no_grad():
        model.transformer.h[1].mlp.c_fc.weight[0, 0] = float("nan")
    with (
        pytest.raises(gpt_tui.NonFiniteError) as raised,
        gpt_tui.watch(compiled, optimizer=optimizer, report=None),
    ):
        compiled(*batch(gen))[1].backward()
        optimizer.step()
    finding = raised.value.finding
    assert (finding.step, finding.phase, finding.where) == (0, "forward", "transformer.h.1.mlp")
    assert "eager replay" in finding.detail
    assert model.transformer.h[0].mlp.c_fc.weight.isfinite().all()  # raised before the update


def test_a_gradient_made_non_finite_outside_every_module_is_named_before_the_update() -> None:
    model = tiny_model()
    weight = model.transformer.h[0].attn.c_attn.weight
    weight.register_hook(lambda g: g * float("nan"))  # the weight's own gradient, only
    optimizer = torch.optim.AdamW(model.parameters())
    gen = torch.Generator().manual_seed(1)
    with (
        pytest.raises(gpt_tui.NonFiniteError) as raised,
        gpt_tui.watch(model, optimizer=optimizer, report=None),
    ):
        model(*batch(gen))[1].backward()
        optimizer.step()
    finding = raised.value.finding
    assert (finding.step, finding.phase) == (0, "gradients")
    assert finding.where == "transformer.h.0.attn.c_attn.weight"
    assert weight.isfinite().all()  # raised before the update


def forwards_then_nan(counts: list[int], tmp_path: Path) -> gpt_tui.NonFiniteError:
    """Steps taking `counts[i]` forwards each; the last forward of the last step meets a
    NaN written into a weight just before it. The watch's error."""
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters())
    gen = torch.Generator().manual_seed(0)
    with (
        pytest.raises(gpt_tui.NonFiniteError) as raised,
        gpt_tui.watch(model, optimizer=optimizer, report=tmp_path / "r"),
    ):
        for step, n in enumerate(counts):
            for micro in range(n):
                if step == len(counts) - 1 and micro == n - 1:
                    with torch.no_grad():
                        model.transformer.h[1].mlp.c_fc.weight[0, 0] = float("nan")
                _, loss = model(*batch(gen))
                (loss / n).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return raised.value


@pytest.mark.parametrize(
    ("counts", "when"),
    [
        ([2, 2, 2, 2], "step 3, micro-step 1 of 2"),  # a steady count: said
        ([1, 1, 1, 2], "step 3, micro-step 1"),  # one more forward than before: no "of 1"
        ([1, 2, 1, 1], "step 3"),  # counts that varied: the first forward, no guess
        ([2, 1, 2, 2], "step 3, micro-step 1"),
    ],
)
def test_a_finding_inside_a_step_says_of_n_only_when_the_loops_count_is_steady(
    tmp_path: Path, counts: list[int], when: str
) -> None:
    finding = forwards_then_nan(counts, tmp_path).finding
    assert (finding.step, finding.phase) == (3, "forward")
    assert finding.when == when
