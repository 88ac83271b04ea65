"""A snapshot never shows a false state: each race of issue 20, forced with events inside
the engine's own steps (never timed)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from test_debugger import WAIT, Gate, in_thread
from test_probes import IDX, nanogpt

from gpt_tui.engine.analysis.compare_intents import BSpec
from gpt_tui.engine.analysis.probes import Probes
from gpt_tui.engine.core.model_copy import dtype_copy
from gpt_tui.engine.core.runner import is_cancellable
from gpt_tui.engine.core.session import ModelSpec, Session
from gpt_tui.engine.core.stepping import ForwardStepper
from gpt_tui.engine.debugger import Debugger


@pytest.fixture
def dbg() -> Iterator[Debugger]:
    debugger = Debugger(Session.open(ModelSpec(config="tiny")))
    debugger.set_prompt("ROMEO:")
    yield debugger
    debugger.close()


def forward_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "gpt-tui-forward"]


class PauseWindow:
    """Holds the forward thread inside the pause being prepared (the stats read back
    before it is published), on the first flush made in the forward thread."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()
        flush = Probes.flush

        def held(probes: Probes) -> list:
            if threading.current_thread().name == "gpt-tui-forward" and not self.reached.is_set():
                self.reached.set()
                assert self.release.wait(WAIT)
            return flush(probes)

        monkeypatch.setattr(Probes, "flush", held)


def test_an_abort_inside_the_pause_window_unwinds_the_pass(monkeypatch) -> None:
    window = PauseWindow(monkeypatch)
    stepper = ForwardStepper(nanogpt(), IDX)
    out: list = []
    thread = threading.Thread(target=lambda: out.append(stepper.step_into()))
    thread.start()
    assert window.reached.wait(WAIT)
    assert stepper.request_abort()  # the move is still running: the abort is honoured
    window.release.set()
    thread.join(WAIT)
    assert out == [None] and stepper.aborted and stepper.finished  # never reported paused
    stepper.close()
    assert not forward_threads()


def test_a_cancel_inside_the_pause_window_leaves_no_paused_snapshot(
    dbg: Debugger, monkeypatch
) -> None:
    window = PauseWindow(monkeypatch)
    move = dbg.new_move()
    thread, out = in_thread(lambda: dbg.step("into", move=move))
    assert window.reached.wait(WAIT)
    assert dbg.cancel(move)
    window.release.set()
    thread.join(WAIT)
    (state,) = out
    assert state.status == "aborted" and state.event is None
    assert dbg.state().status == "aborted" and not forward_threads()
    again = dbg.step("into")  # a fresh pass starts and really pauses
    assert again.status == "paused" and len(forward_threads()) == 1


def moves_after_a_block_pause(dbg: Debugger, expression: str | None) -> list:
    dbg.set_line_breakpoints(["Block.forward"])
    paused = dbg.step_line("continue")
    assert paused.frame is not None and paused.frame.function == "Block.forward"
    if expression is not None:
        state = dbg.evaluate(expression)
        assert state.evaluations[-1].error is None and state.status == "paused"
        dbg.view_tensor("x")
    dbg.set_line_breakpoints([])
    states = [paused, dbg.step("into"), dbg.step("out"), dbg.step("continue")]
    return [
        (
            s.status,
            s.event and (s.event.name, s.event.phase),
            [(e.name, e.phase, e.stats) for e in s.events],
        )
        for s in states
    ]


def test_an_expression_calling_a_probed_module_leaves_the_pass_as_it_was(dbg: Debugger) -> None:
    plain = moves_after_a_block_pause(dbg, None)
    dbg.abort()
    called = moves_after_a_block_pause(dbg, "self.attn(self.ln_1(x)).shape")
    assert called == plain  # the same events, levels and stats rows as without it
    assert called[-1][0] == "finished" and not forward_threads()
    finished = dbg.state().run
    whole = dbg.run().run
    assert [(r.name, r.phase) for r in finished.records if r.kind != "resid"] == [
        (r.name, r.phase) for r in whole.records if r.kind != "resid"
    ]


def test_two_moves_named_in_advance_and_run_out_of_order(dbg: Debugger) -> None:
    first, second = dbg.new_move(), dbg.new_move()
    later = dbg.set_prompt("to be", move=second)
    earlier = dbg.set_prompt("or not", move=first)  # runs last although named first
    newest = max((later, earlier), key=lambda s: s.seq)
    assert newest is earlier and newest.prompt == dbg.state().prompt == "or not"
    assert dbg.state().seq > newest.seq


class CancelAt:
    """After the `at`-th call of `module` (in the threads `where` accepts), cancel `move`:
    the cancel lands at a chosen point of an intent's work."""

    def __init__(self, dbg: Debugger, module, move: int, at: int, where=lambda: True) -> None:
        self.calls, self.fired = 0, False

        def hook(*_args) -> None:
            if not where():
                return
            self.calls += 1
            if self.calls == at:
                self.fired = dbg.cancel(move)

        self.handle = module.register_forward_hook(hook)


def fresh_candidates(dbg: Debugger, ids: list[int]) -> list[tuple[int, float]]:
    """The next token's candidates from a fresh generation on `ids` (no cache carried)."""
    s = dbg.state().generation.settings
    gen = dbg.session.generation(ids, s.temperature, s.top_k, s.top_p, seed=s.seed)
    return [(c.token_id, c.prob) for c in gen.peek()[0]]


def same_records(a, b) -> bool:
    key = [(r.name, r.phase, r.shape) for r in a]
    return key == [(r.name, r.phase, r.shape) for r in b] and all(
        x.stats == pytest.approx(y.stats) for x, y in zip(a, b, strict=True)
    )


def test_a_cancel_at_each_phase_of_an_ablation_leaves_a_true_state() -> None:
    phase = 0
    while True:
        phase += 1
        dbg = Debugger(Session.open(ModelSpec(config="tiny")))
        try:
            dbg.set_prompt("ROMEO:")
            dbg.run()
            dbg.generate(2)
            dbg.step("into")
            before = dbg.step("into").event
            move = dbg.new_move()
            cancel = CancelAt(dbg, dbg.session.model.transformer.h[0], move, phase)
            state = dbg.toggle_ablation("transformer.h.1.attn", "attn", 0, move=move)
            cancel.handle.remove()
            if not cancel.fired:
                break
            assert state.cancelled, phase
            # The change is whole: listed, active, and every view is either gone or true.
            assert state.ablated_modules == ("transformer.h.1.attn",)
            assert len(dbg.session.interventions.active) == 1
            if state.run is not None:
                fresh = dbg.session.trace(state.prompt)
                assert same_records(state.run.records, fresh.records), phase
            if state.status == "paused":
                assert (state.event.name, state.event.phase) == (before.name, before.phase)
            gen = state.generation
            ids = list(dbg.session.encode("ROMEO:")) + [st.token_id for st in gen.steps]
            expected = fresh_candidates(dbg, ids)
            if gen.next_candidates:
                shown = [(c.token_id, c.prob) for c in gen.next_candidates]
                assert shown == pytest.approx(expected), phase
            step = dbg.generate(1).generation.steps[-1]  # the cache was dropped with it
            assert [(c.token_id, c.prob) for c in step.candidates] == pytest.approx(expected)
        finally:
            dbg.close()
    assert phase > 3  # the replay, the run and the generation's refresh were each hit


def test_a_late_cancel_of_a_stepped_token_keeps_the_token_in_the_snapshot(
    dbg: Debugger,
) -> None:
    dbg.generate(2)
    dbg.step_token()
    move = dbg.new_move()
    intent_thread = threading.current_thread()
    cancel = CancelAt(  # in the re-peek after the token joined the generation
        dbg, dbg.session.model.transformer.h[0], move, 1,
        where=lambda: threading.current_thread() is intent_thread,
    )  # fmt: skip
    state = dbg.step_line("continue", move=move)
    cancel.handle.remove()
    assert cancel.fired and state.cancelled and state.status == "finished"
    assert len(state.generation.steps) == len(state.generation.pieces) == 3
    assert dbg.state().generation.steps == state.generation.steps


@pytest.fixture
def started(monkeypatch) -> threading.Event:
    """An event a long expression sets when it begins (it imports this module)."""
    import sys
    import types

    signal = types.ModuleType("_truth_signal")
    signal.started = threading.Event()
    monkeypatch.setitem(sys.modules, "_truth_signal", signal)
    return signal.started


FOREVER = "__import__('_truth_signal').started.set() or [0 for _ in iter(int, 1)]"


def paused_in_mlp(dbg: Debugger) -> None:
    dbg.set_line_breakpoints(["MLP.forward"])
    assert dbg.step_line("continue").frame is not None


def test_cancel_interrupts_a_long_expression_and_the_pass_stays_paused(
    dbg: Debugger, started: threading.Event
) -> None:
    paused_in_mlp(dbg)
    move = dbg.new_move()
    thread, out = in_thread(lambda: dbg.evaluate(FOREVER, move=move))
    assert started.wait(WAIT)
    assert dbg.cancel(move)
    thread.join(WAIT)
    (state,) = out
    assert state.cancelled and state.status == "paused"
    assert state.evaluations[-1].error == "interrupted"
    assert "still paused" in state.message
    assert dbg.evaluate("x.shape[0]").evaluations[-1].value.repr == "1"  # still usable
    assert dbg.step_line("next").status == "paused"


def test_close_during_a_long_expression_returns_without_waiting(
    dbg: Debugger, started: threading.Event
) -> None:
    paused_in_mlp(dbg)
    thread, out = in_thread(lambda: dbg.evaluate(FOREVER))
    assert started.wait(WAIT)
    dbg.close()  # never waits for the intent: the teardown follows it
    assert dbg.closed.wait(WAIT)
    thread.join(WAIT)
    assert out[0].evaluations[-1].error == "interrupted" and not forward_threads()


def test_close_during_a_run_returns_before_the_run_unwinds(dbg: Debugger) -> None:
    gate = Gate(dbg.session.model.transformer.h[0])
    thread, out = in_thread(dbg.run)
    assert gate.reached.wait(WAIT)
    assert not dbg.close()  # returned while the run is still held inside a block
    assert not dbg.closed.is_set()
    gate.release.set()
    assert dbg.closed.wait(WAIT)
    thread.join(WAIT)
    assert out[0].cancelled and not dbg.runner.hooks
    gate.remove()


def impure(value: object, path: str = "state") -> list[str]:
    """Where a snapshot holds anything but frozen plain data (live tensors, caches,
    mutable containers of our own)."""
    if value is None or isinstance(value, str | int | float | bool | np.generic | np.ndarray):
        return []
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if type(value).__module__.startswith("gpt_tui.io"):
            return [f"{path}: io's {type(value).__name__} (a widget would import io)"]
        if not type(value).__dataclass_params__.frozen:
            return [f"{path}: {type(value).__name__} is not frozen"]
        return [
            bad
            for f in dataclasses.fields(value)
            for bad in impure(getattr(value, f.name), f"{path}.{f.name}")
        ]
    if type(value) in (tuple, frozenset):
        return [bad for i, v in enumerate(value) for bad in impure(v, f"{path}[{i}]")]
    if type(value) is dict:  # a RunResult's patterns: built for this snapshot alone
        return [bad for k, v in value.items() for bad in impure(v, f"{path}[{k!r}]")]
    return [f"{path}: {type(value).__module__}.{type(value).__name__}"]


def test_a_snapshot_is_plain_data(dbg: Debugger) -> None:
    states = [dbg.run(attention_layers=[0]), dbg.attention(1), dbg.generate(2)]
    dbg.set_line_breakpoints(["MLP.forward"])
    states += [dbg.step_line("continue"), dbg.evaluate("x"), dbg.view_tensor("x")]
    states += [dbg.train_step("into"), dbg.compare_runs(BSpec(dtype="bfloat16"))]
    assert type(states[0].run.patterns) is dict and 0 in states[0].run.patterns
    for state in states:
        assert impure(state) == []
    shapes = states[-1].shapes()  # taken from the snapshot alone, every time
    assert shapes == states[-1].shapes() and shapes["transformer.h.0.mlp"] == (1, 6, 32)


def test_every_long_intent_is_declared_cancellable() -> None:
    declared = {n for n in dir(Debugger) if is_cancellable(getattr(Debugger, n))}
    long_work = {"run", "step", "step_line", "step_token", "generate", "attention", "evaluate"}
    long_work |= {"compare_runs", "patch_runs", "attribute_logit", "train_step", "train_health"}
    assert long_work <= declared
    assert not {"state", "cancel", "abort", "set_breakpoints", "set_watch"} & declared


def cancel_at_check(dbg: Debugger, move: int, at: int) -> list[int]:
    """Cancel `move` at the `at`-th chunk check of its host work; the checks made."""
    made: list[int] = []
    make = dbg.runner.check

    def counted(mid: int):
        check = make(mid)

        def once() -> None:
            made.append(1)
            if len(made) == at:
                assert dbg.cancel(move)
            check()

        return once

    dbg.runner.check = counted
    return made


def weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_a_cancel_inside_the_dtype_copy_of_a_diff_stops_it(dbg: Debugger) -> None:
    move = dbg.new_move()
    made = cancel_at_check(dbg, move, 3)
    state = dbg.compare_runs(BSpec(dtype="bfloat16"), move=move)
    assert state.cancelled and state.compare is None and len(made) == 3
    del dbg.runner.check
    state = dbg.compare_runs(BSpec(dtype="bfloat16"))  # then it runs whole
    assert not state.cancelled and state.compare.comparison is not None


def test_dtype_copy_has_no_hooks_and_keeps_ties(dbg: Debugger) -> None:
    model = dbg.session.model
    dbg.toggle_ablation("transformer.h.0.mlp", "mlp")  # A's own hooks, not B's
    b = dtype_copy(model, torch.bfloat16, lambda: None)
    assert b.lm_head.weight is b.transformer.wte.weight and b.lm_head.weight.dtype == torch.bfloat16
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in b.modules())
    assert torch.equal(
        b.transformer.h[1].attn.c_attn.weight, model.transformer.h[1].attn.c_attn.weight.bfloat16()
    )


@pytest.mark.parametrize("at", [1, 5, 40])
def test_a_cancel_of_train_health_puts_every_weight_back(dbg: Debugger, at: int) -> None:
    before = weights(dbg.session.model)
    move = dbg.new_move()
    made = cancel_at_check(dbg, move, at)  # in the snapshot, or between modules of a step
    state = dbg.train_health(3, move=move)
    assert state.cancelled and len(made) == at
    after = weights(dbg.session.model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_close_during_train_health_returns_and_the_weights_come_back(dbg: Debugger) -> None:
    before = weights(dbg.session.model)
    gate = Gate(dbg.session.model.transformer.h[1], on_call=2)
    thread, out = in_thread(lambda: dbg.train_health(3))
    assert gate.reached.wait(WAIT)
    assert not dbg.close()  # returned while the step is held inside a block
    gate.release.set()
    assert dbg.closed.wait(WAIT)
    thread.join(WAIT)
    gate.remove()
    assert out[0].cancelled
    after = weights(dbg.session.model)
    assert all(torch.equal(before[k], after[k]) for k in before)
