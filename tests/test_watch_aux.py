"""A gradient that enters the model from outside its watched modules: a loss the loop (or
the model) takes on an intermediate activation. Its gradient lands on a module's output
while the next module, which reads that output, sends a finite one back; the watch names
the module whose output received it, not the next one and not a parameter's gradient."""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable
from contextlib import nullcontext

import pytest
import torch
from test_watch import batches, tiny_model

import gpt_tui
from gpt_tui.cli import run

Aux = Callable[[torch.Tensor], torch.Tensor]


def nan_gradient(h: torch.Tensor) -> torch.Tensor:
    """A loss whose gradient is NaN where h < 0 (sqrt's derivative there)."""
    return torch.sqrt(h).mean() * 1e-3


def finite_aux(h: torch.Tensor) -> torch.Tensor:
    return h.pow(2).mean() * 1e-2


def train(model, where: str, aux: Aux, *, at_step: int | None, watched: bool) -> list[float]:
    """Three steps of a loop that adds `aux(output of module `where`)` to the model's loss
    at `at_step` (None: every step); the losses, or NonFiniteError from the watch."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    kept: dict[str, torch.Tensor] = {}
    module = dict(model.named_modules())[where]
    module.register_forward_hook(lambda m, args, out: kept.__setitem__("h", out))
    losses = []
    with gpt_tui.watch(model, optimizer=optimizer) if watched else nullcontext():
        for step, (x, y) in enumerate(batches(model.config.vocab_size, 3)):
            out = model(x, y)  # nanoGPT's (logits, loss), nanochat's bare loss
            loss = out[1] if isinstance(out, tuple) else out
            if at_step is None or step == at_step:
                loss = loss + aux(kept["h"])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
    return losses


@pytest.mark.parametrize(
    ("arch", "where", "after"),
    [
        ("nanogpt", "transformer.h.0", "transformer.h.1"),  # the next block reads it
        ("nanogpt", "transformer.h.1", "transformer.ln_f"),
        ("nanogpt", "transformer.h.1.attn", "transformer.h.1.mlp"),  # the residual between
        ("nanochat", "transformer.h.0", "transformer.h.1"),  # x0 mixed in between
        ("nanochat", "transformer.h.1", "lm_head"),  # the final norm between
    ],
)
def test_a_nan_gradient_from_a_loss_on_an_activation_is_named_where_it_entered(
    tmp_path, monkeypatch, arch: str, where: str, after: str
) -> None:
    monkeypatch.chdir(tmp_path)  # the case folder
    model = tiny_model(arch=arch)
    with pytest.raises(gpt_tui.NonFiniteError) as raised:
        train(model, where, nan_gradient, at_step=1, watched=True)
    finding = raised.value.finding
    assert (finding.step, finding.phase, finding.where) == (1, "backward", where)
    assert finding.detail.startswith(
        f"the gradient into its output was not finite while {after}, the next module, sent "
        "a finite one back"
    )
    assert "a loss taken on this activation" in finding.detail
    assert all(p.isfinite().all() for p in model.parameters())  # raised before the update


@pytest.mark.parametrize("arch", ["nanogpt", "nanochat"])
def test_a_finite_loss_on_an_activation_trains_the_same_watched_or_not(arch: str) -> None:
    # The watch gives each module a view of its input; the gradients must not change.
    plain = train(tiny_model(arch=arch), "transformer.h.0", finite_aux, at_step=None,
                  watched=False)  # fmt: skip
    watched = train(tiny_model(arch=arch), "transformer.h.0", finite_aux, at_step=None,
                    watched=True)  # fmt: skip
    assert watched == plain  # bit for bit


def test_a_nan_made_inside_a_block_by_a_loss_on_its_mlp_names_the_block(tmp_path, monkeypatch):
    # Nothing inside the block reads the MLP's output but the residual sum: no watched
    # module sits between, so the block's own backward is where it arose.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(gpt_tui.NonFiniteError) as raised:
        train(tiny_model(), "transformer.h.0.mlp", nan_gradient, at_step=0, watched=True)
    finding = raised.value.finding
    assert (finding.phase, finding.where) == ("backward", "transformer.h.0")
    assert finding.detail == "its grad_output was finite"


@pytest.mark.parametrize("arch", ["nanogpt", "nanochat"])
def test_the_watch_keeps_no_module_output_alive(arch: str) -> None:
    # Its links between modules must not hold a head's logits (nanochat returns only the
    # loss: (B, T, vocab) would outlive the forward) past the loop's last reference.
    alive = {}
    for watched in (False, True):
        model = tiny_model(arch=arch)
        optimizer = torch.optim.AdamW(model.parameters())
        outputs: list[weakref.ref] = []
        keep = outputs.append
        model.lm_head.register_forward_hook(lambda m, a, out, keep=keep: keep(weakref.ref(out)))
        x, y = batches(model.config.vocab_size, 1)[0]
        with gpt_tui.watch(model, optimizer=optimizer) if watched else nullcontext():
            out = model(x, y)
            del out
            alive[watched] = outputs[0]() is not None
    assert alive[True] == alive[False] is False


def test_the_case_of_such_a_finding_says_why_the_step_run_again_does_not_meet_it(
    tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(gpt_tui.NonFiniteError) as raised:
        train(tiny_model(), "transformer.h.0", nan_gradient, at_step=1, watched=True)
    assert run(["train-step", "--case", raised.value.finding.report, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["first_nonfinite"] is None  # the model's own loss alone is finite
    assert any(
        note.startswith("the reopened step found no non-finite value, not the saved finding "
                        "(backward at transformer.h.0)")
        and note.endswith("a loss your loop took on an activation is not part of it")
        for note in report["notes"]
    )  # fmt: skip


def z_loss_loop(model, bad_step: int | None, watched: bool) -> list[float]:
    """nanoGPT's (logits, loss) plus a z-loss-like term on the returned logits, whose
    gradient is NaN at `bad_step` (the square root of a negative)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    with gpt_tui.watch(model, optimizer=optimizer) if watched else nullcontext():
        for step, (x, y) in enumerate(batches(model.config.vocab_size, 3)):
            logits, loss = model(x, y)
            shift = 100.0 if step == bad_step else 0.0
            loss = loss + 1e-4 * torch.sqrt(logits.pow(2).mean() - shift)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
    return losses


def test_a_term_the_loop_takes_from_the_returned_logits_is_named_not_the_models_loss(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(gpt_tui.NonFiniteError) as raised:
        z_loss_loop(tiny_model(), bad_step=1, watched=True)
    finding = raised.value.finding
    assert (finding.step, finding.phase, finding.where) == (1, "loss", "lm_head")
    assert finding.detail.startswith(
        "the gradient your loop sent into the logits the model returned (lm_head) was not "
        "finite while the model's loss sent a finite one"
    )
    assert "backward at loss" not in str(raised.value)
    assert finding.unreplayable.startswith("your loop added a term computed from the logits")


def test_a_finite_term_on_the_returned_logits_trains_the_same_watched_or_not() -> None:
    assert z_loss_loop(tiny_model(), None, watched=True) == z_loss_loop(
        tiny_model(), None, watched=False
    )
