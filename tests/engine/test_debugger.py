"""The Debugger: one intent per method, and its concurrency contract.

Every concurrent case is driven by events inside forward hooks: a hook signals that the
pass reached it and waits for the test's go-ahead, so each interleaving is forced, never
timed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from gpt_tui.engine.core.debug_state import DebugState, GenerationSettings
from gpt_tui.engine.core.session import ModelSpec, Session
from gpt_tui.engine.debugger import Debugger

WAIT = 30  # seconds before a stuck test fails instead of hanging


@pytest.fixture
def dbg() -> Iterator[Debugger]:
    debugger = Debugger(Session.open(ModelSpec(config="tiny")))
    yield debugger
    debugger.close()


class Gate:
    """A forward hook on a module that holds the pass inside it, on its `on_call`-th
    call, until released."""

    def __init__(self, module, *, thread_name: str | None = None, on_call: int = 1) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        self._on_call = on_call
        self._thread_name = thread_name
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, _module, _args, _output) -> None:
        if self._thread_name and threading.current_thread().name != self._thread_name:
            return
        self.calls += 1
        if self.calls == self._on_call:
            self.reached.set()
            assert self.release.wait(WAIT)

    def remove(self) -> None:
        self.release.set()
        self.handle.remove()


def in_thread(fn: Callable[[], DebugState]) -> tuple[threading.Thread, list]:
    out: list = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    return thread, out


def test_step_into_over_out_and_continue_follow_the_stepper(dbg: Debugger) -> None:
    first = dbg.step("into")
    assert first.status == "paused" and first.event is not None and first.event.index == 0
    assert first.stepping is not None and first.stepping.paused is not None
    dbg.set_breakpoints({"transformer.h.1.mlp"})
    hit = dbg.step("continue")
    assert (hit.event.name, hit.event.phase, hit.reason) == (
        "transformer.h.1.mlp",
        "in",
        "breakpoint",
    )
    over = dbg.step("over")
    assert (over.event.name, over.event.phase) == ("transformer.h.1.mlp", "out")
    done = dbg.step("continue")
    assert done.status == "finished" and done.run is not None and done.event is None
    assert done.events[-1].name == "logits"
    assert done.move > hit.move > first.move


def test_the_moves_give_the_events_a_whole_run_records(dbg: Debugger) -> None:
    whole = dbg.run()
    state = dbg.step("into")
    while state.status == "paused":
        state = dbg.step("into")
    assert state.status == "finished"
    stepped = [(r.name, r.stats) for r in state.run.records]
    assert stepped == [(r.name, r.stats) for r in whole.run.records if r.phase == "out"]
    assert state.previous_run is whole.run  # the Stats diff compares with the run before
    dbg.set_prompt("JULIET")
    again = dbg.run()  # a whole run forgets the stepped pass's events (their shapes)
    assert again.events == () and again.run.token_ids != whole.run.token_ids


def test_abort_after_the_move_paused_leaves_the_pass_paused(dbg: Debugger) -> None:
    """The race: an abort that lands after its move paused. The paused pass survives and
    the snapshot says so; the abort intent then ends it, and the snapshot says that."""
    move = dbg.new_move()
    state = dbg.step("into", move=move)
    assert not dbg.cancel(move)  # its move is over: nothing is unwound behind our back
    assert state.status == "paused"
    assert dbg.state().status == "paused" and dbg._pass.stepper is not None
    assert dbg._pass.stepper._thread is not None and dbg._pass.stepper._thread.is_alive()
    nxt = dbg.step("into")
    assert nxt.status == "paused" and nxt.event.index == state.event.index + 1
    ended = dbg.abort()
    assert ended.status == "aborted" and ended.event is None and dbg._pass.stepper is None


def test_abort_during_a_continue_unwinds_it(dbg: Debugger) -> None:
    model = dbg.session.model
    gate = Gate(model.transformer.h[0].mlp, thread_name="gpt-tui-forward")
    try:
        move = dbg.new_move()
        assert not dbg.cancel(move)  # not running yet
        thread, out = in_thread(lambda: dbg.step("continue", move=move))
        assert gate.reached.wait(WAIT)
        assert not dbg.cancel(move + 1000)  # an abort naming another move does nothing
        assert dbg.cancel(move)
        gate.release.set()
        thread.join(WAIT)
    finally:
        gate.remove()
    (state,) = out
    assert state.status == "aborted" and state.move == move
    names = [e.name for e in state.events]
    assert "transformer.h.0.mlp" in names and "logits" not in names
    assert dbg._pass.stepper is None


def test_quit_during_a_generation_of_n_tokens(dbg: Debugger) -> None:
    """close() during N generation steps: the generation stops at its next block, then
    the lock is free, hooks are gone, no thread is left behind."""
    model = dbg.session.model
    dbg.generate(1)  # the generation is open: its next steps are what runs
    gate = Gate(model.transformer.h[1])
    before = threading.active_count()
    dbg.step("into")  # a paused pass too: its thread must be joined
    thread, out = in_thread(lambda: dbg.generate(50))
    assert gate.reached.wait(WAIT)
    closer = threading.Thread(target=dbg.close)
    closer.start()
    gate.release.set()
    closer.join(WAIT)
    thread.join(WAIT)
    gate.remove()
    assert dbg.closed.wait(WAIT)  # close() returns at once; the teardown follows the move
    for teardown in [t for t in threading.enumerate() if t.name == "gpt-tui-close"]:
        teardown.join(WAIT)
    assert not closer.is_alive() and not thread.is_alive()
    (state,) = out
    assert state.cancelled and len(state.generation.steps if state.generation else ()) < 50
    assert threading.active_count() <= before
    for module in model.modules():
        assert not module._forward_pre_hooks and not module._forward_hooks


def test_generate_n_cancelled_keeps_the_tokens_taken(dbg: Debugger) -> None:
    dbg.generate(1)  # opened: from here each step is one forward
    gate = Gate(dbg.session.model.transformer.h[0], on_call=3)  # inside the third step
    try:
        move = dbg.new_move()
        thread, out = in_thread(lambda: dbg.generate(20, move=move))
        assert gate.reached.wait(WAIT)
        assert dbg.cancel(move)
        gate.release.set()
        thread.join(WAIT)
    finally:
        gate.remove()
    (state,) = out
    assert state.cancelled and state.message == "generation cancelled after 2 of 20 tokens"
    assert len(state.generation.steps) == 1 + 2  # the third step never finished
    more = dbg.generate(1)  # the generation goes on from where it stopped
    assert len(more.generation.steps) == 4
    assert not dbg.cancel(move)  # that move is over


def test_ablation_while_paused_reruns_the_pass_to_the_same_event(dbg: Debugger) -> None:
    mlp = "transformer.h.0.mlp"
    dbg.set_breakpoints({mlp})
    dbg.step("continue")
    before = dbg.step("over")
    assert (before.event.name, before.event.phase) == (mlp, "out")
    assert before.event.stats.abs_max > 0
    after = dbg.toggle_ablation(mlp, "mlp")
    assert after.status == "paused" and after.event.index == before.event.index
    assert after.event.stats.abs_max == 0.0  # the new probes see the ablated output
    assert after.stepping.records[after.stepping.paused].stats.abs_max == 0.0
    assert after.ablated_modules == (mlp,) and after.ablations
    assert dbg.step("continue").status == "finished"  # the breakpoint is behind us
    assert dbg.toggle_ablation(mlp, "mlp").ablations == ()


def test_leaf_probes_keep_the_paused_pass(dbg: Debugger) -> None:
    """Switching leaf probes re-runs a paused pass to the same module event, and to the
    leaf's parent when leaves go off."""
    dbg.set_breakpoints({"transformer.h.0.attn"})
    at_attn = dbg.step("continue")
    on = dbg.set_leaves(True)
    assert on.status == "paused" and on.event.name == "transformer.h.0.attn" and on.leaves
    inner = dbg.step("into")
    assert inner.event.name == "transformer.h.0.attn.c_attn"
    off = dbg.set_leaves(False)
    assert off.status == "paused" and off.event.name == "transformer.h.0.attn"
    assert off.event.index == at_attn.event.index


def test_generation_settings_apply_to_the_next_step_without_restarting(dbg: Debugger) -> None:
    dbg.reset_generation(GenerationSettings(seed=3))
    two = dbg.generate(2)
    greedy = dbg.set_generation_settings(GenerationSettings(top_k=1, seed=3))
    assert greedy.generation.steps == two.generation.steps  # the text is kept
    assert greedy.generation.next_kept == 1  # the candidates were re-peeked
    three = dbg.generate(1)
    assert three.generation.steps[:2] == two.generation.steps
    assert three.generation.steps[-1].token_id == greedy.generation.next_candidates[0].token_id
    reseeded = dbg.set_generation_settings(GenerationSettings(top_k=1, seed=4))
    assert reseeded.generation.steps == ()  # another seed names another run


def test_bad_prompt_keeps_the_old_one(dbg: Debugger) -> None:
    from gpt_tui.errors import GptTuiError

    dbg.set_prompt("ROMEO:")
    with pytest.raises(GptTuiError):
        dbg.set_prompt("")
    assert dbg.state().prompt == "ROMEO:"


def test_two_quick_moves_from_two_threads(dbg: Debugger) -> None:
    """Two moves requested at once run one after the other; both snapshots are true and
    their ids order them."""
    barrier = threading.Barrier(2)

    def move() -> DebugState:
        barrier.wait(WAIT)
        return dbg.step("into")

    (t1, a), (t2, b) = in_thread(move), in_thread(move)
    t1.join(WAIT)
    t2.join(WAIT)
    first, second = sorted([a[0], b[0]], key=lambda s: s.event.index)
    assert (first.event.index, second.event.index) == (0, 1)
    assert first.move != second.move


def test_new_prompt_while_paused_reruns_the_pass_on_it(dbg: Debugger) -> None:
    dbg.set_breakpoints({"transformer.h.1"})
    old = dbg.step("continue")
    new = dbg.set_prompt("JULIET: hi")
    assert new.status == "paused" and new.event.name == old.event.name == "transformer.h.1"
    assert new.stepping.token_ids == tuple(dbg.session.encode("JULIET: hi"))
    assert new.event.shape[1] == len("JULIET: hi") != old.event.shape[1]


def test_a_breakpoint_no_probe_reaches_says_so(dbg: Debugger) -> None:
    state = dbg.toggle_breakpoint("transformer.drop")
    assert "transformer.drop: no probe there" in state.message and "leaf probes" in state.message
    assert dbg.toggle_breakpoint("transformer.h.0.mlp").message.startswith("transformer.drop")
    dbg.set_breakpoints({"transformer.h.0.mlp"})
    assert dbg.state().message == ""


def test_generate_reports_progress_after_each_token(dbg: Debugger) -> None:
    seen: list[DebugState] = []
    final = dbg.generate(4, progress=seen.append)
    assert [len(s.generation.steps) for s in seen] == [1, 2, 3]
    assert [s.message for s in seen] == [f"generating {i} of 4" for i in (1, 2, 3)]
    assert len(final.generation.steps) == 4 and final.generation.lens is not None
    assert all(
        s.generation.steps == final.generation.steps[: len(s.generation.steps)] for s in seen
    )


def test_run_passes_names_the_stops_a_whole_run_does_not_make(dbg: Debugger) -> None:
    assert dbg.state().run_passes == {}
    state = dbg.set_watch(True)
    assert state.run_passes == {"watch": "the NaN/Inf watch"}
    dbg.toggle_breakpoint("transformer.h.0.mlp")
    state = dbg.toggle_breakpoint("transformer.h.1.mlp")
    assert state.run_passes == {"breakpoints": "the 2 breakpoints", "watch": "the NaN/Inf watch"}
    state = dbg.run()
    assert state.status != "paused" and state.run is not None  # r runs past them all
    assert dbg.step("continue").reason == "breakpoint"  # c stops at them
