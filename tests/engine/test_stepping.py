"""The pausable forward pass: order, step over/out, breakpoints, watchpoint, abort, errors."""

from __future__ import annotations

import threading

import pytest
import torch
from test_probes import IDX, nanochat, nanogpt

from gpt_tui.engine.analysis.probes import Probes
from gpt_tui.engine.core.stepping import ForwardStepper, StepperError


def forward_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "gpt-tui-forward"]


def run_all(stepper: ForwardStepper) -> list[tuple[str, str]]:
    seen = []
    while (event := stepper.step_into()) is not None:
        seen.append((event.name, event.phase))
    return seen


@pytest.mark.parametrize("make", [nanogpt, nanochat])
def test_event_order_equals_probe_recording_order(make) -> None:
    model = make()
    with Probes(model, inputs=True) as probes:
        expected_logits = probes.run(IDX)
        expected = [(r.name, r.phase) for r in probes.records if r.kind != "resid"]
    with ForwardStepper(model, IDX) as stepper:
        assert run_all(stepper) == expected
        assert stepper.finished and torch.equal(stepper.result, expected_logits)
        assert [e.index for e in stepper.events] == list(range(len(expected)))
    assert not forward_threads()


def test_step_over_and_out() -> None:
    with ForwardStepper(nanogpt(), IDX, breakpoints=["transformer.h.0"]) as stepper:
        event = stepper.continue_()
        assert (event.name, event.phase, stepper.reason) == ("transformer.h.0", "in", "breakpoint")
        event = stepper.step_over()
        assert (event.name, event.phase) == ("transformer.h.0", "out")  # attn, mlp skipped
        event = stepper.step_into()
        assert (event.name, event.phase) == ("transformer.h.1", "in")
        event = stepper.step_into()
        assert (event.name, event.phase) == ("transformer.h.1.attn", "in")
        event = stepper.step_out()
        assert (event.name, event.phase) == ("transformer.h.1", "out")
        event = stepper.step_out()
        assert (event.name, event.phase) == ("logits", "out")  # out of a top-level module
        assert stepper.step_into() is None and stepper.finished


def test_breakpoints_by_glob() -> None:
    with ForwardStepper(nanogpt(), IDX, breakpoints=["*.mlp", "transformer.h.1.*"]) as stepper:
        hits = []
        while (event := stepper.continue_()) is not None:
            hits.append((event.name, event.phase))
    assert hits == [
        ("transformer.h.0.mlp", "in"),
        ("transformer.h.1.attn", "in"),
        ("transformer.h.1.mlp", "in"),
    ]


def test_abort_leaves_no_thread_and_the_next_run_works() -> None:
    model = nanogpt()
    stepper = ForwardStepper(model, IDX, attention_layers="all")
    stepper.step_into()
    stepper.step_into()
    assert len(forward_threads()) == 1
    stepper.abort()
    assert not forward_threads() and stepper.aborted
    assert not torch.overrides._get_current_function_mode_stack()
    stepper.close()
    stepper = ForwardStepper(model, IDX, attention_layers="all")
    run_all(stepper)
    with torch.inference_mode():
        assert torch.equal(stepper.result, model(IDX)[0])
    attn_outs = [e for e in stepper.events if e.kind == "attn" and e.phase == "out"]
    assert all(e.pattern is not None and e.pattern.max_abs_error <= 1e-4 for e in attn_outs)
    stepper.close()
    assert all(not m._forward_hooks for m in model.modules())


def test_nan_watchpoint_stops_where_the_nan_appears() -> None:
    model = nanogpt()

    def inject(module, args, out):
        return out.masked_fill(
            torch.zeros_like(out, dtype=torch.bool).index_fill(1, torch.tensor([5]), True),
            float("nan"),
        )

    handle = model.transformer.h[1].mlp.register_forward_hook(inject)
    with ForwardStepper(model, IDX, watch_nonfinite=True) as stepper:
        event = stepper.continue_()
        assert (event.name, event.phase, stepper.reason) == ("transformer.h.1.mlp", "out", "watch")
        assert event.stats.nan_count == 32
        before = [e for e in stepper.events if e.name == "transformer.h.1.mlp" and e.phase == "in"]
        assert before[0].stats.finite
        assert stepper.continue_() is None  # fires once: later modules only carry it on
    handle.remove()


def test_model_exception_is_delivered_clearly() -> None:
    model = nanogpt()

    def boom(module, args):
        raise ValueError("bad activation")

    handle = model.transformer.h[1].attn.register_forward_pre_hook(boom)
    with ForwardStepper(model, IDX) as stepper:
        with pytest.raises(StepperError, match="ValueError in transformer.h.1: bad") as info:
            stepper.continue_()
        assert isinstance(info.value.__cause__, ValueError)
        assert stepper.finished and stepper.step_into() is None
    handle.remove()
    assert not forward_threads()


def test_residual_stream_so_far() -> None:
    model = nanogpt()
    with ForwardStepper(model, IDX, breakpoints=["transformer.h.1.mlp"]) as stepper:
        stepper.continue_()
        assert [r.name for r in stepper.residual][-2:] == [
            "transformer.h.1.resid_pre",
            "transformer.h.1.resid_mid",
        ]
        seen = stepper.residual[-1].stats
    with torch.no_grad():
        h = model.transformer.h
        x = model.transformer.wte(IDX) + model.transformer.wpe(torch.arange(8))
        x = h[0](x)
        x = x + h[1].attn(h[1].ln_1(x))
    assert seen.mean == pytest.approx(float(x.mean()), abs=1e-6)
    assert seen.abs_max == pytest.approx(float(x.abs().max()), rel=1e-6)


def test_plain_model_calls_while_paused_are_not_disturbed() -> None:
    model = nanogpt()
    with ForwardStepper(model, IDX, breakpoints=["*.mlp"]) as stepper:
        stepper.continue_()
        with torch.inference_mode():
            model(IDX)  # e.g. the UI runs the lens meanwhile: must neither pause nor record
        assert stepper.continue_().name == "transformer.h.1.mlp"
        assert stepper.continue_() is None


def test_request_abort_stops_a_running_continue_from_another_thread() -> None:
    model = nanogpt()
    inside, release = threading.Event(), threading.Event()

    def hold(module, args, output):  # keeps the pass inside h.0.mlp until released
        if threading.current_thread().name == "gpt-tui-forward":
            inside.set()
            release.wait(timeout=30)

    handle = model.transformer.h[0].mlp.register_forward_hook(hold)
    try:
        stepper = ForwardStepper(model, IDX)
        outcome: list = []
        driver = threading.Thread(target=lambda: outcome.append(stepper.continue_()))
        driver.start()
        assert inside.wait(timeout=30)
        stepper.request_abort()
        release.set()
        driver.join(timeout=30)
        assert outcome == [None]
        assert stepper.aborted and stepper.result is None
        assert not forward_threads()
        stepper.close()
    finally:
        handle.remove()
