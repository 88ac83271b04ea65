"""Stepping into one token's generation: its forward and its sampling (logits, /temperature,
top-k/top-p, softmax, multinomial) pause at lines like the model's own code, and the token
joins the generation exactly as `generate` would have drawn it."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator

import pytest

from gpt_tui.engine.core.debug_state import DebugState, GenerationSettings
from gpt_tui.engine.core.session import ModelSpec, Session
from gpt_tui.engine.debugger import Debugger

SETTINGS = GenerationSettings(temperature=0.8, top_k=20, top_p=0.9, seed=7)


def open_debugger() -> Debugger:
    debugger = Debugger(Session.open(ModelSpec(config="tiny")))
    debugger.set_prompt("ROMEO:")
    debugger.reset_generation(SETTINGS)
    return debugger


@pytest.fixture
def dbg() -> Iterator[Debugger]:
    debugger = open_debugger()
    yield debugger
    debugger.close()


def tokens(state: DebugState) -> list[int]:
    assert state.generation is not None
    return [s.token_id for s in state.generation.steps]


def reference(n: int) -> list[int]:
    """The tokens a plain `generate` draws with the same settings."""
    other = open_debugger()
    try:
        return tokens(other.generate(n))
    finally:
        other.close()


def local(state: DebugState, name: str):
    assert state.frame is not None
    return next((v for v in state.frame.locals if v.name == name), None)


def run_lines_until(dbg: Debugger, state: DebugState, name: str) -> DebugState:
    """Next line until the paused frame has the local `name`."""
    for _ in range(20):
        if local(state, name) is not None:
            return state
        state = dbg.step_line("next")
    raise AssertionError(f"no local {name!r} appeared")


def test_a_token_pauses_in_sample_next_and_its_pipeline_is_readable(dbg: Debugger) -> None:
    vocab = dbg.session.model.config.vocab_size
    state = dbg.step_token()
    assert state.status == "paused" and state.frame is not None
    assert state.frame.function == "sample_next" and state.frame.file == "sampling.py"
    assert state.stepper_line.startswith("paused at sampling.py:")  # no module runs it
    assert state.stepper_line.endswith(" in sample_next · sampling (T stops here)")
    assert local(state, "logits").shape == (vocab,)
    assert local(state, "temperature").repr == "0.8"
    assert local(state, "top_k").repr == "20"
    state = run_lines_until(dbg, state, "probs")
    assert local(state, "filtered").inf >= vocab - 20  # top-k (and top-p) removed tokens
    state = dbg.evaluate("float(probs.sum())")
    assert abs(float(state.evaluations[-1].value.repr) - 1.0) < 1e-5
    state = dbg.evaluate("int((probs > 0).sum()) <= 20")
    assert state.evaluations[-1].value.repr == "True"
    state = dbg.view_tensor("probs.view(1, -1)")  # an expression, not only a local, opens
    assert state.tensor_view is not None and state.tensor_view.shape == (1, vocab)
    assert tokens(state) == []  # not taken yet
    state = dbg.step_line("continue")
    assert state.status == "finished" and state.frame is None
    assert tokens(state) == reference(1)
    assert state.message.startswith("sampled ")


def test_stepping_into_filter_logits_reaches_top_k_and_top_p(dbg: Debugger) -> None:
    state = dbg.step_token()
    for _ in range(10):
        state = dbg.step_line("into")
        if state.frame.function == "filter_logits":
            break
    assert state.frame.function == "filter_logits"
    assert [e.function for e in state.frame.stack][-2:] == ["sample_next", "filter_logits"]
    state = dbg.step_line("return")  # back in the caller, with what it returned
    assert state.frame.function == "sample_next"
    assert state.frame.returned.name == "filter_logits returned"
    assert state.frame.returned.shape == (dbg.session.model.config.vocab_size,)
    dbg.step_line("continue")


def test_later_tokens_use_the_warm_cache_and_still_match_generate(dbg: Debugger) -> None:
    dbg.generate(2)
    state = dbg.step_token()
    # The forward of this token computed one position: the KV cache is warm.
    assert state.events and state.events[-1].shape[1] == 1
    state = dbg.step_line("continue")
    dbg.generate(1)
    assert tokens(dbg.state()) == reference(4)


def test_an_aborted_token_leaves_the_generation_as_it_was(dbg: Debugger) -> None:
    dbg.generate(1)
    state = run_lines_until(dbg, dbg.step_token(), "token")  # the draw has happened
    assert tokens(state) == tokens(dbg.state())
    state = dbg.abort()
    assert state.status == "aborted" and len(tokens(state)) == 1
    assert not [t for t in threading.enumerate() if t.name == "gpt-tui-forward"]
    assert sys.gettrace() is None
    # The generator's draw and the KV cache were put back: the run goes on unchanged.
    assert tokens(dbg.generate(2)) == reference(3)


def test_a_module_breakpoint_stops_the_token_forward_before_the_sampling(dbg: Debugger) -> None:
    dbg.set_breakpoints(["transformer.h.0.mlp"])
    state = dbg.step_token()
    assert state.frame is None and state.event.name == "transformer.h.0.mlp"
    state = dbg.step("continue")
    assert state.frame is not None and state.frame.function == "sample_next"
    dbg.set_breakpoints([])
    assert tokens(dbg.step_line("continue")) == reference(1)


def test_generation_intents_unwind_a_paused_token_first(dbg: Debugger) -> None:
    dbg.step_token()
    state = dbg.generate(2)  # G while a token is paused: that token is unwound, then 2
    assert state.status == "aborted" and tokens(state) == reference(2)
    dbg.step_token()
    state = dbg.reset_generation()
    assert state.status == "aborted" and tokens(state) == []
    assert not [t for t in threading.enumerate() if t.name == "gpt-tui-forward"]
