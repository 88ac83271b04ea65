"""The Debugger composes its parts (issue 20): each part owns its fields, declared once in
its own class, and the Debugger holds the part, never a copy of its fields."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest

from gpt_tui.engine.analysis.attention_intents import Attention
from gpt_tui.engine.analysis.compare_intents import Comparison
from gpt_tui.engine.analysis.intervention_intents import Interventions
from gpt_tui.engine.core.line_intents import Lines
from gpt_tui.engine.core.session import ModelSpec, Session
from gpt_tui.engine.core.stepped_pass import SteppedPass
from gpt_tui.engine.debugger import Debugger
from gpt_tui.engine.generation.intents import Generation
from gpt_tui.engine.training.intents import Training

PARTS = [Comparison, Training, Lines, Generation, SteppedPass, Attention, Interventions]


@pytest.fixture(scope="module")
def dbg():
    debugger = Debugger(Session.open(ModelSpec(config="tiny")))
    yield debugger
    debugger.close(wait=True)


@pytest.mark.parametrize("part", PARTS, ids=lambda p: p.__name__)
def test_a_part_is_held_not_inherited(dbg: Debugger, part: type) -> None:
    assert not issubclass(Debugger, part)
    held = [v for v in vars(dbg).values() if isinstance(v, part)]
    assert len(held) == 1, f"the Debugger holds one {part.__name__}"
    own = set(vars(held[0]))
    assert own, f"{part.__name__} owns its fields"
    assert not own & set(vars(dbg)) - {"_session"}, "a part's fields live in the part only"
    assert not any(hasattr(Debugger, name) for name in own - {"_session"})


@pytest.mark.parametrize("part", PARTS, ids=lambda p: p.__name__)
def test_a_part_never_reaches_back_to_the_debugger(dbg: Debugger, part: type) -> None:
    held = next(v for v in vars(dbg).values() if isinstance(v, part))
    assert not any(isinstance(v, Debugger) for v in vars(held).values())
    tree = ast.parse(Path(inspect.getfile(part)).read_text())
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [m for m in imported if m.split(".")[-1] == "debugger"]


def test_the_debugger_inherits_nothing() -> None:
    assert Debugger.__bases__ == (object,), "no mixins: the Debugger holds its parts"


def test_each_part_s_view_is_frozen_and_is_what_the_snapshot_shows(dbg: Debugger) -> None:
    dbg.generate(1)
    dbg.set_batch(batch=1, block=8)
    state = dbg.attribute_logit(" ", generation=True)
    views = {part: next(v for v in vars(dbg).values() if isinstance(v, part)) for part in PARTS}
    shown = {
        Comparison: (views[Comparison].view(), state.compare),
        Generation: (views[Generation].view(), state.generation),
        Training: (views[Training].view(state.prompt), state.training),
    }
    for part, (view, in_state) in shown.items():
        assert view is not None and view is in_state, part.__name__
        assert dataclasses.fields(view) and type(view).__dataclass_params__.frozen
    lines = views[Lines].view()
    assert type(lines).__dataclass_params__.frozen
    assert lines.breakpoints == state.line_breakpoints and lines.evaluations == state.evaluations


def test_the_stepped_pass_s_view_is_frozen_and_is_what_the_snapshot_shows(dbg: Debugger) -> None:
    stepped = next(v for v in vars(dbg).values() if isinstance(v, SteppedPass))
    dbg.run()
    state = dbg.step("into")
    view = stepped.view()
    assert type(view).__dataclass_params__.frozen and state.status == view.status == "paused"
    assert view.event is state.event and view.events is state.events
    assert view.stepping is state.stepping and view.run is state.run
    assert (view.reason, view.frame) == (state.reason, state.frame)
    ended = dbg.abort()
    after = stepped.view()
    assert stepped.stepper is None and after.status == ended.status == "aborted"
    assert after.event is None and after.stepping is None and after.run is ended.run


def test_the_attention_part_s_view_is_what_the_snapshot_shows(dbg: Debugger) -> None:
    attention = next(v for v in vars(dbg).values() if isinstance(v, Attention))
    state = dbg.attention(0)
    view = attention.view()
    assert view is not None and view is state.attention
    assert type(view).__dataclass_params__.frozen and view.prompt == state.prompt
