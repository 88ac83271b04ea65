"""The driver without the app: a thin view over the Session, plus what pilots cannot time."""

from __future__ import annotations

import threading

import pytest

from gpt_tui.engine.session import ModelSpec
from gpt_tui.ui.driver import Driver, open_driver


@pytest.fixture
def driver():
    driver = open_driver(ModelSpec(config="tiny"))
    yield driver
    driver.close()


def test_run_is_the_session_trace(driver: Driver) -> None:
    run = driver.run("ROMEO:")
    trace = driver.session.last_trace
    assert trace is not None and run.records == trace.records and run.tokens == trace.tokens


def test_ablation_while_paused_reruns_the_pass_to_the_same_event(driver: Driver) -> None:
    mlp = "transformer.h.0.mlp"
    driver.step("continue", "ROMEO:", frozenset({mlp}), False)
    before = driver.step("over", "ROMEO:", frozenset({mlp}), False)
    assert (before.event.name, before.event.phase) == (mlp, "out")
    assert before.event.stats.abs_max > 0
    driver.toggle_ablation(mlp, "mlp", None)
    after = driver.current_step()
    assert after is not None and after.event.index == before.event.index
    assert after.event.stats.abs_max == 0.0  # the new probes see the ablated output
    assert after.run.records[after.run.paused].stats.abs_max == 0.0
    finished = driver.step("continue", "ROMEO:", frozenset({mlp}), False)
    assert finished.status == "finished"  # the breakpoint at the input is behind us


def test_request_abort_stops_a_running_continue(driver: Driver) -> None:
    """A continue held inside a module: `request_abort` (no engine lock) ends it."""
    reached, release = threading.Event(), threading.Event()

    def hold(_module, _args, _output) -> None:
        if threading.current_thread().name == "gpt-tui-forward":
            reached.set()
            release.wait(30)

    model = driver.session.model
    handle = model.transformer.h[0].mlp.register_forward_hook(hold)
    try:
        assert not driver.request_abort()  # nothing running
        result: list = []
        worker = threading.Thread(
            target=lambda: result.append(driver.step("continue", "ROMEO:", frozenset(), False))
        )
        worker.start()
        assert reached.wait(30)
        assert driver.request_abort()
        release.set()
        worker.join(30)
    finally:
        handle.remove()
    (state,) = result
    assert state.status == "aborted"
    names = [e.name for e in state.events]
    assert "transformer.h.0.mlp" in names and "logits" not in names  # stopped mid-pass
    assert driver.current_step() is None


def test_leaf_probes_let_the_stepper_stop_inside_attention(driver: Driver) -> None:
    """With leaf probes on, step-into reaches the Linear layers and the NaN watch can name
    them; switching ends a paused pass, which was probed the other way."""
    driver.step("into", "ROMEO:", frozenset(), False)
    ended = driver.set_leaf_probes(True)
    assert ended is not None and ended.status == "aborted"
    state = driver.step("continue", "ROMEO:", frozenset({"*.c_attn"}), False)
    assert state.event.name == "transformer.h.0.attn.c_attn"
    driver.abort()
    run = driver.run("ROMEO:")
    assert any(r.name == "transformer.h.1.mlp.c_fc" for r in run.records)
    assert driver.set_leaf_probes(False) is None  # nothing was paused: nothing to end
