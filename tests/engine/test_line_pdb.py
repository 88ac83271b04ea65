"""pdb parity at line pauses (issue 21): display expressions re-evaluated at each line
pause, temporary breakpoints (tbreak), ignore counts, numbered breakpoints with hit counts,
disable / enable and condition N [EXPR]. These run on both line backends (sys.settrace on
3.11, sys.monitoring on 3.12: .ci/run)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from test_debugger import WAIT, in_thread

from gpt_tui.engine.core.line_breakpoints import BreakpointError
from gpt_tui.engine.core.line_intents import DisplayError
from gpt_tui.engine.core.line_tracer import tracing_here
from gpt_tui.engine.core.session import ModelSpec, Session
from gpt_tui.engine.debugger import Debugger

STARTED = threading.Event()  # set by a display expression, to cancel it while it runs


@pytest.fixture
def dbg() -> Iterator[Debugger]:
    debugger = Debugger(Session.open(ModelSpec(config="tiny")))
    debugger.set_prompt("ROMEO:")
    yield debugger
    debugger.close()


def test_displays_are_evaluated_at_each_line_pause_and_marked_when_they_change(
    dbg: Debugger,
) -> None:
    dbg.set_line_breakpoints(["MLP.forward"])
    dbg.display("x.shape")
    state = dbg.display("x.abs().max()")  # not paused yet: kept for the next pause
    assert [d.expr for d in state.displays] == ["x.shape", "x.abs().max()"]
    assert all(d.evaluation is None for d in state.displays)
    state = dbg.step_line("continue")
    assert state.frame.module == "transformer.h.0.mlp"
    shape, peak = state.displays
    assert shape.evaluation.value.repr == "torch.Size([1, 6, 32])" and not shape.changed
    assert peak.evaluation.value.kind == "tensor" and not peak.changed
    first_peak = peak.evaluation.value.max
    state = dbg.step_line("continue")  # the next block's MLP: another input
    assert state.frame.module == "transformer.h.1.mlp"
    shape, peak = state.displays
    assert not shape.changed and shape.previous is None  # pdb shows nothing new for it
    assert peak.changed and peak.previous.value.max == first_peak
    assert peak.evaluation.value.max != first_peak


def test_a_display_that_fails_shows_its_one_line_error_and_the_pass_stays_paused(
    dbg: Debugger,
) -> None:
    dbg.set_line_breakpoints(["MLP.forward"])
    dbg.step_line("continue")
    state = dbg.display("no_such_name + 1")  # paused at a line: evaluated now
    (shown,) = state.displays
    assert state.status == "paused"
    assert shown.evaluation.error == "NameError: name 'no_such_name' is not defined"
    assert state.message == f"display no_such_name + 1: {shown.evaluation.error}"
    with pytest.raises(DisplayError, match="not a Python expression"):
        dbg.display("x = 1")
    with pytest.raises(DisplayError, match="no such display expression .1 no_such_name"):
        dbg.undisplay("x")


def test_a_display_adds_no_probe_events_even_when_it_calls_a_module(dbg: Debugger) -> None:
    dbg.set_line_breakpoints(["Block.forward"])
    plain = dbg.step_line("continue")
    dbg.abort()
    dbg.display("self.mlp(x).sum()")  # runs a probed module at the pause
    state = dbg.step_line("continue")
    assert state.displays[0].evaluation.value.kind == "tensor"
    assert [e.name for e in state.events] == [e.name for e in plain.events]


def test_displays_are_not_evaluated_at_a_module_pause(dbg: Debugger) -> None:
    dbg.display("x.shape")
    state = dbg.step("into")
    assert state.status == "paused" and state.frame is None
    assert state.displays[0].evaluation is None


def test_undisplay_by_number_by_expression_or_all(dbg: Debugger) -> None:
    for expr in ("x.shape", "x.dtype", "x.device"):
        dbg.display(expr)
    state = dbg.undisplay(2)  # the others keep their numbers, as breakpoints do
    assert [(d.number, d.expr) for d in state.displays] == [(1, "x.shape"), (3, "x.device")]
    with pytest.raises(DisplayError, match=r"undisplay 2: .*\(1 x.shape, 3 x.device\)"):
        dbg.undisplay(2)
    state = dbg.undisplay(3)
    assert [(d.number, d.expr) for d in state.displays] == [(1, "x.shape")]
    state = dbg.display("x.dtype")  # a new one takes a new number, never one given before
    assert [(d.number, d.expr) for d in state.displays] == [(1, "x.shape"), (4, "x.dtype")]
    state = dbg.undisplay("x.shape")
    assert [d.expr for d in state.displays] == ["x.dtype"]
    assert dbg.undisplay().displays == ()
    assert [d.number for d in dbg.display("x.shape").displays] == [5]


def test_a_cancel_interrupts_a_display_and_the_pass_stays_paused(dbg: Debugger) -> None:
    dbg.set_line_breakpoints(["MLP.forward"])
    STARTED.clear()
    # never ends: a generator (Python code) the interrupt can stop at its next line
    dbg.display("__import__('test_line_pdb').STARTED.set() or all(True for _ in iter(int, 1))")
    dbg.display("x.shape")
    move = dbg.new_move()
    thread, out = in_thread(lambda: dbg.step_line("continue", move=move))
    assert STARTED.wait(WAIT)
    assert dbg.cancel(move)
    thread.join(WAIT)
    (state,) = out
    assert state.status == "paused" and state.frame.function == "MLP.forward"
    assert [d.evaluation.error for d in state.displays] == ["interrupted", "interrupted"]
    assert "display interrupted" in state.message
    state = dbg.undisplay(1)  # the pass is still usable
    assert dbg.evaluate("x.dim()").evaluations[-1].value.repr == "3"


def test_breakpoints_are_numbered_as_pdb_and_keep_their_numbers(dbg: Debugger) -> None:
    state = dbg.set_line_breakpoints(["MLP.forward", "Block.forward"])
    assert {b.spec: b.number for b in state.line_table} == {"MLP.forward": 1, "Block.forward": 2}
    state = dbg.set_line_breakpoints(["Block.forward"])
    state = dbg.add_line_breakpoint("CausalSelfAttention.forward", temporary=True)
    assert [(b.number, b.spec, b.temporary) for b in state.line_table] == [
        (2, "Block.forward", False),
        (3, "CausalSelfAttention.forward", True),
    ]
    assert state.message == "temporary breakpoint 3 at CausalSelfAttention.forward"
    assert state.line_table[1].line == "3 tbreak CausalSelfAttention.forward"


def test_a_temporary_breakpoint_stops_once_then_is_gone(dbg: Debugger) -> None:
    dbg.add_line_breakpoint("MLP.forward", temporary=True)
    state = dbg.step_line("continue")
    assert state.frame.module == "transformer.h.0.mlp"
    assert state.hit.number == 1 and state.hit.temporary and state.hit.hits == 1
    assert state.line_table == () and state.line_breakpoints == frozenset()
    assert state.message == "paused; deleted temporary breakpoint 1 at MLP.forward"
    state = dbg.step_line("continue")  # block 1's MLP runs the same line: no stop
    assert state.status == "finished"


def test_a_condition_that_raises_stops_and_the_pause_carries_its_error(dbg: Debugger) -> None:
    dbg.add_line_breakpoint("MLP.forward if nosuch > 1", temporary=True)
    state = dbg.step_line("continue")
    assert state.frame.module == "transformer.h.0.mlp"  # stopped, as pdb does
    error = "NameError: name 'nosuch' is not defined"
    assert state.hit.number == 1 and state.hit.error == error
    assert f"error in breakpoint 1's condition: {error}" in state.message
    assert state.stepper_line.endswith(" · breakpoint 1: its condition raised NameError")
    # pdb keeps a temporary breakpoint whose condition raised; the listing has no error
    (row,) = state.line_table
    assert row.spec == "MLP.forward if nosuch > 1" and row.error is None
    state = dbg.step_line("continue")  # block 1's MLP: it stops again, still raising
    assert state.frame.module == "transformer.h.1.mlp" and state.hit.error == error
    dbg.condition_line_breakpoint(1, "x.dim() == 3")
    assert dbg.step_line("continue").status == "finished"
    state = dbg.step_line("continue")  # a new pass: the condition holds, no error now
    assert state.frame.module == "transformer.h.0.mlp" and state.hit.error is None
    assert "condition" not in state.message


def test_a_temporary_line_breakpoint_with_a_condition_stops_where_it_holds(
    dbg: Debugger,
) -> None:
    second = id(dbg.session.model.transformer.h[1].mlp)
    dbg.add_line_breakpoint(f"MLP.forward if id(self) == {second}", temporary=True)
    state = dbg.step_line("continue")
    assert state.frame.module == "transformer.h.1.mlp" and state.hit.hits == 2
    assert state.line_table == ()


def test_ignore_passes_the_next_hits_and_hits_are_counted(dbg: Debugger) -> None:
    dbg.set_line_breakpoints(["MLP.forward"])
    state = dbg.ignore_line_breakpoint(1, 1)
    assert state.line_table[0].ignore == 1
    assert state.message == "will ignore the next hit of breakpoint 1 (MLP.forward)"
    state = dbg.step_line("continue")
    assert state.frame.module == "transformer.h.1.mlp"  # block 0's hit was passed
    (row,) = state.line_table
    assert (row.hits, row.ignore) == (2, 0) and state.hit == row
    assert row.line == "1 break MLP.forward · hit 2"
    state = dbg.step_line("continue")
    assert state.status == "finished" and state.line_table[0].hits == 2
    state = dbg.step_line("continue")  # a new pass: hits go on counting, as in pdb
    assert state.frame.module == "transformer.h.0.mlp" and state.line_table[0].hits == 3


def test_ignore_names_the_numbers_there_are(dbg: Debugger) -> None:
    dbg.set_line_breakpoints(["MLP.forward"])
    with pytest.raises(BreakpointError, match=r"no line breakpoint number 4 \(numbers: 1\)"):
        dbg.ignore_line_breakpoint(4, 1)
    with pytest.raises(BreakpointError, match="0 or more"):
        dbg.ignore_line_breakpoint(1, -1)


def test_a_replay_counts_no_hit_twice(dbg: Debugger) -> None:
    """Leaf probes switched on re-run the paused pass to where it was: the breakpoint hits
    on the way were counted the first time, and an ignore count is not used up again."""
    dbg.set_line_breakpoints(["MLP.forward", "Block.forward"])
    dbg.step_line("continue")
    dbg.step_line("continue")
    state = dbg.step_line("continue")  # Block.forward, MLP.forward, then block 1
    assert state.frame.module == "transformer.h.1"
    before = dbg.ignore_line_breakpoint(1, 1).line_table
    assert [(b.hits, b.ignore) for b in before] == [(1, 1), (2, 0)]
    state = dbg.set_leaves(True)
    assert state.status == "paused" and state.line_table == before
    # The replay comes back to the same line, counting nothing on the way.
    assert state.frame.module == "transformer.h.1" and state.frame.function == "Block.forward"
    state = dbg.step_line("continue")  # block 1's MLP: its hit is the one ignored
    assert state.status == "finished" and [b.hits for b in state.line_table] == [2, 2]


def test_a_disabled_breakpoint_stops_nowhere_counts_no_hits_and_arms_no_line_events(
    dbg: Debugger,
) -> None:
    traced: list[bool] = []  # whether line events are armed as each MLP's first Linear runs
    hooks = [
        block.mlp.c_fc.register_forward_pre_hook(lambda m, a: traced.append(tracing_here()))
        for block in dbg.session.model.transformer.h
    ]
    try:
        dbg.set_line_breakpoints(["MLP.forward", "Block.forward"])
        state = dbg.step_line("continue")
        assert state.frame.module == "transformer.h.0" and state.line_table[0].hits == 0
        state = dbg.enable_line_breakpoints([2, 1], on=False)  # while paused
        assert state.message == (
            "disabled breakpoint 2 at Block.forward; disabled breakpoint 1 at MLP.forward"
        )
        assert [b.line for b in state.line_table] == [
            "1 break MLP.forward · disabled",
            "2 break Block.forward · hit 1 · disabled",
        ]
        assert state.line_breakpoints == frozenset()  # the ones that stop
        state = dbg.step_line("continue")
        assert state.status == "finished" and [b.hits for b in state.line_table] == [0, 1]
        assert traced == [False, False]  # neither block's MLP ran with line events armed

        state = dbg.enable_line_breakpoints([1])
        assert state.message == "enabled breakpoint 1 at MLP.forward"
        assert state.line_table[0].line == "1 break MLP.forward"
        state = dbg.step_line("continue")  # a new pass
        assert state.frame.module == "transformer.h.0.mlp" and state.hit.number == 1
        state = dbg.step_line("continue")  # block 0's MLP runs on, traced, to block 1's
        assert state.frame.module == "transformer.h.1.mlp"
        assert traced[2] is True and [b.hits for b in state.line_table] == [2, 1]
    finally:
        for hook in hooks:
            hook.remove()


def test_a_disabled_temporary_breakpoint_is_kept_until_it_is_enabled_and_stops(
    dbg: Debugger,
) -> None:
    dbg.add_line_breakpoint("MLP.forward", temporary=True)
    dbg.enable_line_breakpoints([1], on=False)
    assert dbg.step_line("continue").status == "finished"
    assert [(b.number, b.temporary, b.enabled) for b in dbg.state().line_table] == [
        (1, True, False)
    ]
    dbg.enable_line_breakpoints([1])
    state = dbg.step_line("continue")
    assert state.hit.number == 1 and state.line_table == ()


def test_condition_is_replaced_and_removed_keeping_number_hits_ignore_and_tbreak(
    dbg: Debugger,
) -> None:
    second = id(dbg.session.model.transformer.h[1].mlp)
    dbg.set_line_breakpoints(["MLP.forward"])
    dbg.add_line_breakpoint("Block.forward if False", temporary=True)
    state = dbg.step_line("continue")
    assert state.frame.module == "transformer.h.0.mlp" and state.hit.hits == 1
    dbg.ignore_line_breakpoint(2, 3)
    state = dbg.condition_line_breakpoint(1, f"id(self) == {second}")
    assert state.message == f"breakpoint 1 stops at MLP.forward only if id(self) == {second}"
    assert [(b.number, b.spec, b.hits) for b in state.line_table][0] == (
        1,
        f"MLP.forward if id(self) == {second}",
        1,
    )
    state = dbg.condition_line_breakpoint(2)  # removed: Block.forward stops now
    assert state.message == "breakpoint 2 is now unconditional (Block.forward)"
    tbreak = state.line_table[1]
    assert (tbreak.number, tbreak.spec, tbreak.temporary, tbreak.ignore, tbreak.hits) == (
        2,
        "Block.forward",
        True,
        3,
        1,
    )
    dbg.ignore_line_breakpoint(2, 0)
    state = dbg.step_line("continue")  # block 1's Block.forward: the tbreak, now bare
    assert state.frame.module == "transformer.h.1" and state.hit.number == 2
    state = dbg.step_line("continue")  # block 1's MLP: its condition holds
    assert state.frame.module == "transformer.h.1.mlp"
    assert state.hit.number == 1 and state.hit.hits == 2  # block 0's was not stopped at
    state = dbg.condition_line_breakpoint(1)
    assert [(b.number, b.spec, b.hits) for b in state.line_table] == [(1, "MLP.forward", 2)]
    state = dbg.step_line("continue")
    state = dbg.step_line("continue")  # a new pass: block 0's MLP stops again
    assert state.frame.module == "transformer.h.0.mlp" and state.hit.hits == 3


def test_a_condition_on_a_disabled_breakpoint_leaves_it_disabled(dbg: Debugger) -> None:
    dbg.set_line_breakpoints(["MLP.forward"])
    dbg.enable_line_breakpoints([1], on=False)
    state = dbg.condition_line_breakpoint(1, "True")
    assert state.line_table[0].line == "1 break MLP.forward if True · disabled"
    assert state.line_breakpoints == frozenset()
    assert dbg.step_line("continue").status == "finished"


def test_disable_enable_and_condition_mistakes_are_one_line_and_change_nothing(
    dbg: Debugger,
) -> None:
    dbg.set_line_breakpoints(["MLP.forward", "MLP.forward if False"])
    before = dbg.state().line_table
    cases = [
        (lambda: dbg.enable_line_breakpoints([1, 4], on=False), r"number 4 \(numbers: 1, 2\)"),
        (lambda: dbg.enable_line_breakpoints([]), "enable takes breakpoint numbers"),
        (lambda: dbg.condition_line_breakpoint(3, "True"), "no line breakpoint number 3"),
        (lambda: dbg.condition_line_breakpoint(1, "x =="), r"not a Python expression \("),
        (lambda: dbg.condition_line_breakpoint(2), "breakpoint 1 is MLP.forward already"),
    ]
    for act, said in cases:
        with pytest.raises(BreakpointError, match=said) as err:
            act()
        assert "\n" not in str(err.value)
        assert dbg.state().line_table == before


def test_t_stops_at_sample_next_by_itself_where_a_disabled_breakpoint_is(dbg: Debugger) -> None:
    """T's own stop at sampling's entry is not the user's disabled breakpoint there: no
    hit is counted and the pause does not name it."""
    dbg.set_line_breakpoints(["sample_next"])
    dbg.enable_line_breakpoints([1], on=False)
    state = dbg.step_token()
    assert state.stepper_line.endswith(" in sample_next · sampling (T stops here)")
    assert state.hit is None and state.line_table[0].hits == 0


def test_pdb_words_p_pp_whatis_where_and_display_at_a_line(dbg: Debugger) -> None:
    dbg.set_line_breakpoints(["MLP.forward"])
    dbg.display("x.shape")
    state = dbg.step_line("continue")
    words = ("p x.shape", "pp x.shape", "whatis x", "whatis self", "whatis self.forward")
    for expr in (*words, "whatis self.c_fc.weight"):
        state = dbg.evaluate(expr)
    shown = [(e.expr, e.error, e.value.repr) for e in state.evaluations]
    assert shown == [
        ("p x.shape", None, "torch.Size([1, 6, 32])"),
        ("pp x.shape", None, "torch.Size([1, 6, 32])"),
        ("whatis x", None, "torch.Tensor (1, 6, 32) float32 cpu"),
        ("whatis self", None, "gpt_tui.models.nanogpt.MLP"),
        ("whatis self.forward", None, "method MLP.forward"),
        (
            "whatis self.c_fc.weight",
            None,
            "torch.nn.parameter.Parameter (128, 32) float32 cpu, requires grad",
        ),
    ]
    stack = state.frame.stack
    for word in ("where", "w", "bt"):
        lines = dbg.evaluate(word).evaluations[-1].value.repr.splitlines()
        assert len(lines) == len(stack) and lines[-1].startswith("> ")
        assert lines[-1] == f"> {stack[-1].file}:{stack[-1].line} MLP.forward (transformer.h.0.mlp)"
        assert lines[0].startswith(f"  {stack[0].file}:{stack[0].line} {stack[0].function}")
    state = dbg.evaluate("display")
    assert state.evaluations[-1].value.repr == "1 x.shape: torch.Size([1, 6, 32])"
    assert "where → " in dbg.evaluate("where").message and "\n" not in state.message
    dbg.undisplay()
    assert dbg.evaluate("display").evaluations[-1].value.repr == "no display expressions"
    assert dbg.evaluate("whatis nosuch").evaluations[-1].error == (
        "NameError: name 'nosuch' is not defined"
    )
    assert dbg.state().status == "paused"


def test_other_pdb_words_say_what_is_taken_but_a_variable_of_that_name_evaluates(
    dbg: Debugger,
) -> None:
    dbg.set_line_breakpoints(["MLP.forward"])
    dbg.step_line("continue")
    for word in ("n", "next", "list", "l 90", "continue", "q", "help"):
        error = dbg.evaluate(word).evaluations[-1].error
        assert error.startswith(f"{word.split()[0]} is a pdb command not run here: type a ")
        assert "whatis EXPR" in error and "\n" not in error
    assert dbg.evaluate("p").evaluations[-1].error == "p takes an expression: p x.shape"
    dbg.evaluate("!w = x.shape[-1]")  # a local named as pdb's where: Python wins
    dbg.evaluate("!p = 7")
    state = dbg.evaluate("w")
    assert state.evaluations[-1].value.repr == "32"
    assert [e.value.repr for e in dbg.evaluate("p + 1").evaluations[-1:]] == ["8"]
    assert dbg.evaluate("nosuch").evaluations[-1].error == "NameError: name 'nosuch' is not defined"
    assert dbg.state().status == "paused"
