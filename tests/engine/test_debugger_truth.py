"""A snapshot never shows a false state: each race of issue 20, forced with events inside
the engine's own steps (never timed)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from test_debugger import WAIT, in_thread
from test_probes import IDX, nanogpt

from gpt_tui.engine.debugger import Debugger
from gpt_tui.engine.probes import Probes
from gpt_tui.engine.session import ModelSpec, Session
from gpt_tui.engine.stepping import ForwardStepper


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
