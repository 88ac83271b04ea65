"""The Debugger's line-stepping intents: line breakpoints, line moves, expressions and the
tensor viewer's data, each answered with a frozen DebugState."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from test_debugger import WAIT, Gate, in_thread

from gpt_tui.engine.core.frames import BreakpointError, EvaluateError
from gpt_tui.engine.core.line_tracer import BACKEND, tracing_here
from gpt_tui.engine.core.session import ModelSpec, Session
from gpt_tui.engine.debugger import Debugger


@pytest.fixture
def dbg() -> Iterator[Debugger]:
    debugger = Debugger(Session.open(ModelSpec(config="tiny")))
    debugger.set_prompt("ROMEO:")
    yield debugger
    debugger.close()


def forward_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "gpt-tui-forward"]


def test_a_line_breakpoint_pauses_with_the_frame_in_the_snapshot(dbg: Debugger) -> None:
    dbg.set_line_breakpoints(["CausalSelfAttention.forward"])
    state = dbg.step_line("continue")
    assert state.status == "paused" and state.frame is not None
    assert state.frame.function == "CausalSelfAttention.forward"
    assert state.paused_at == "transformer.h.0.attn"
    assert state.stepper_line.startswith("paused at nanogpt.py:")
    assert state.stepper_line.endswith("(transformer.h.0.attn) · breakpoint")
    assert state.line_breakpoints == frozenset({"CausalSelfAttention.forward"})
    state = dbg.step_line("next")
    assert state.frame.reason == "step" and state.frame.function == "CausalSelfAttention.forward"
    state = dbg.step("continue")  # a module move runs on to the breakpoint's next hit
    assert state.frame.module == "transformer.h.1.attn"
    state = dbg.step_line("continue")
    assert state.status == "finished" and state.frame is None and not forward_threads()


def test_evaluate_and_view_a_local_then_the_next_move_forgets_them(dbg: Debugger) -> None:
    c = dbg.session.config
    dbg.set_line_breakpoints(["CausalSelfAttention.forward"])
    dbg.step_line("continue")
    for _ in range(4):  # to the line after q, k and v are split into heads
        state = dbg.step_line("next")
    assert {v.name for v in state.frame.locals} >= {"q", "k", "v"}
    state = dbg.evaluate("q.shape[1]")
    assert state.evaluations[-1].value.repr == str(c.n_head)
    state = dbg.evaluate("undefined_name")
    assert state.status == "paused" and state.evaluations[-1].error.startswith("NameError")
    assert state.message == "undefined_name → NameError: name 'undefined_name' is not defined"
    state = dbg.view_tensor("q", (0, 1))
    view = state.tensor_view
    assert view.fixed == (0, 1) and view.values.shape == (len("ROMEO:"), c.n_embd // c.n_head)
    assert view.summary.startswith(f"tensor[1, {c.n_head}, {len('ROMEO:')}, ")
    with pytest.raises(EvaluateError, match="not a tensor"):
        dbg.view_tensor("T")
    state = dbg.step_line("next")
    assert state.evaluations == () and state.tensor_view is None


def test_a_breakpoint_matching_nothing_is_refused_and_the_old_set_stays(dbg: Debugger) -> None:
    dbg.set_line_breakpoints(["MLP.forward"])
    with pytest.raises(BreakpointError, match="searched nanogpt.py"):
        dbg.set_line_breakpoints(["rotary_emb"])
    assert dbg.state().line_breakpoints == frozenset({"MLP.forward"})
    with pytest.raises(EvaluateError, match="paused at a line"):
        dbg.evaluate("x")


def test_abort_and_close_at_a_line_leave_no_thread_and_no_trace(dbg: Debugger) -> None:
    dbg.set_line_breakpoints(["MLP.forward"])
    assert dbg.step_line("continue").frame is not None
    state = dbg.abort()
    assert state.status == "aborted" and state.frame is None and not forward_threads()
    assert dbg.step_line("continue").frame is not None
    dbg.close()
    assert not forward_threads() and not tracing_here()


def test_cancel_reaches_a_running_line_move_and_leaves_a_paused_one_alone(dbg: Debugger) -> None:
    dbg.set_line_breakpoints(["GPT.generate"])  # armed, never hit in a forward
    gate = Gate(dbg.session.model.transformer.h[0].mlp, thread_name="gpt-tui-forward")
    traces: list[object] = []
    hook = dbg.session.model.register_forward_pre_hook(lambda m, a: traces.append(tracing_here()))
    try:
        move = dbg.new_move()
        thread, out = in_thread(lambda: dbg.step_line("continue", move=move))
        assert gate.reached.wait(WAIT)
        # armed, yet nothing traced where GPT.generate cannot run (3.11's settrace)
        assert traces[-1] is (BACKEND == "sys.monitoring")
        assert dbg.cancel(move)
        gate.release.set()
        thread.join(WAIT)
        (state,) = out
        assert state.status == "aborted" and state.frame is None and not forward_threads()
        gate.remove()
        dbg.set_line_breakpoints(["MLP.forward"])
        move = dbg.new_move()
        paused = dbg.step_line("continue", move=move)
        assert not dbg.cancel(move)  # already paused: nothing is unwound
        assert dbg.state().frame == paused.frame
        dbg.set_line_breakpoints([])
        assert dbg.step("into").status == "paused"  # a module move from a line pause
        dbg.abort()
        dbg.step("into")  # a new pass with no line breakpoint: nothing traces
        assert not traces[-1]
    finally:
        gate.remove()
        hook.remove()


def test_a_statement_at_a_pause_changes_the_pass_that_goes_on(dbg: Debugger) -> None:
    """pdb's `!x = x * 0`: the assignment sticks in the paused frame, and the pass goes on
    with it (Block 0 adds attention and MLP to zero: its output is their sum only)."""
    dbg.set_line_breakpoints(["nanogpt.py:130"])  # Block.forward's first line
    dbg.step_line("continue")
    state = dbg.evaluate("!x = x * 0")
    assert state.evaluations[-1].error is None
    assert state.evaluations[-1].value.max == 0 and state.evaluations[-1].value.min == 0
    assert dbg.evaluate("float(x.abs().sum())").evaluations[-1].value.repr == "0.0"
    dbg.step_line("next")  # x = x + self.attn(self.ln_1(x)) ran on the zeroed x
    from_zero = "bool((x - self.attn(self.ln_1(torch.zeros_like(x)))).abs().max() == 0)"
    assert dbg.evaluate(from_zero).evaluations[-1].value.repr == "True"
    state = dbg.evaluate("!y = undefined_name")
    assert state.evaluations[-1].error == "NameError: name 'undefined_name' is not defined"
    dbg.set_line_breakpoints([])
    zeroed = dbg.step("continue").run
    fresh = dbg.run().run
    assert zeroed is not None and fresh is not None
    assert zeroed.next_tokens != fresh.next_tokens  # the zeroed pass was run to its end


def test_an_ablation_at_a_line_pause_comes_back_to_the_same_line_with_new_values(
    dbg: Debugger,
) -> None:
    """The paused pass is re-run so that its values see the ablation; before, it came back
    only to the module event before the line, and the Code tab lost its place."""
    dbg.set_line_breakpoints(["CausalSelfAttention.forward"])
    dbg.step_line("continue")
    dbg.step("continue")  # the breakpoint's next hit: the second block's attention
    for _ in range(4):  # past the line that splits q, k and v into heads
        before = dbg.step_line("next")
    assert before.frame.module == "transformer.h.1.attn"
    q_before = dbg.evaluate("float(q.abs().sum())").evaluations[-1].value.repr
    after = dbg.toggle_ablation("transformer.h.0.mlp", "mlp")  # upstream of the pause
    assert after.status == "paused" and after.frame is not None
    assert (after.frame.where, after.frame.module) == (before.frame.where, before.frame.module)
    assert after.event.index == before.event.index
    q_after = dbg.evaluate("float(q.abs().sum())").evaluations[-1].value.repr
    assert q_after != q_before  # the values at the line are the ablated pass's
    state = dbg.toggle_ablation("transformer.h.0.mlp", "mlp")  # and back again
    assert state.frame.where == before.frame.where
    assert dbg.evaluate("float(q.abs().sum())").evaluations[-1].value.repr == q_before
