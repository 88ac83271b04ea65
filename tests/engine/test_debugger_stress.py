"""Random cancels racing every intent, for a bounded number of intents: every snapshot an
intent returns is checked against what the engine really holds, and none may differ.

The cancels come from forward hooks on every block, in whichever thread runs the block
(the intent's own, or a stepped pass's), at seeded-random points: no sleeps, and the same
seed gives the same schedule of intents.
"""

from __future__ import annotations

import random
import threading

import pytest
from test_debugger_truth import forward_threads

from gpt_tui.engine.core.debug_state import DebugState
from gpt_tui.engine.core.session import ModelSpec, Session
from gpt_tui.engine.debugger import Debugger

INTENTS = 120  # bounds the test's time (a few seconds on the tiny model)
PROMPTS = ("ROMEO:", "KING HENRY", "to be or")


class Canceller:
    """Cancels whatever move runs, at a random block call (probability `rate`)."""

    def __init__(self, dbg: Debugger, rng: random.Random, rate: float) -> None:
        self.dbg, self.rng, self.rate = dbg, rng, rate
        self.armed = False
        self.sent = 0
        self._lock = threading.Lock()  # hooks run in two threads
        blocks = dbg.session.model.transformer.h
        self.handles = [b.register_forward_pre_hook(self._hook) for b in blocks]

    def _hook(self, *_args) -> None:
        with self._lock:
            fire = self.armed and self.rng.random() < self.rate
        if fire and self.dbg.cancel():
            self.sent += 1

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def same_stats(a, b) -> bool:
    return [(r.name, r.shape) for r in a] == [(r.name, r.shape) for r in b] and all(
        x.stats == pytest.approx(y.stats, rel=1e-5, abs=1e-6) for x, y in zip(a, b, strict=True)
    )


def mismatches(dbg: Debugger, state: DebugState) -> list[str]:
    """Where the snapshot says something the engine does not hold."""
    bad = []
    stepper = dbg._pass.stepper
    live = forward_threads()
    if state.status == "paused":
        if stepper is None or stepper.finished or not live:
            bad.append("paused, but no live pass")
        elif state.event is not None and stepper.current is not state.event:
            bad.append("paused at another event than the pass")
    elif stepper is not None or live:
        bad.append(f"{state.status}, but a pass is open")
    if state.prompt != dbg._prompt:
        bad.append("another prompt")
    active = dbg.session.interventions.active
    if state.ablations != tuple(s.description for s in active):
        bad.append("other interventions")
    gen, view = dbg._generation.current, state.generation
    if view is not None:
        if gen is None or [s.token_id for s in view.steps] != [s.token_id for s in gen.steps]:
            bad.append("other generated tokens")
        elif view.next_candidates:
            truth = dbg.session.generation(gen.ids, view.settings.temperature, seed=0)
            expected = [(c.token_id, c.prob) for c in truth.peek()[0]]
            shown = [(c.token_id, c.prob) for c in view.next_candidates]
            if shown != pytest.approx(expected, rel=1e-5, abs=1e-6):
                bad.append("next-token candidates of another model")
    if state.run is not None:
        outs = [r for r in state.run.records if r.phase == "out"]
        fresh = dbg.session.trace(state.run.prompt).records
        if not same_stats(outs, fresh):
            bad.append("a run of another model")
    return bad


def one_intent(dbg: Debugger, rng: random.Random) -> DebugState:
    paused_at_line = dbg._pass.stepper is not None and dbg._pass.stepper.frame is not None
    choices = [
        lambda: dbg.step(rng.choice(["into", "into", "over", "out", "continue"])),
        lambda: dbg.step_line(rng.choice(["next", "into", "continue"])),
        lambda: dbg.run(),
        lambda: dbg.generate(rng.randint(1, 3)),
        lambda: dbg.step_token(),
        lambda: dbg.toggle_ablation(f"transformer.h.{rng.randint(0, 1)}.mlp", "mlp"),
        lambda: dbg.toggle_ablation("transformer.h.1.attn", "attn", rng.randint(0, 1)),
        lambda: dbg.set_prompt(rng.choice(PROMPTS)),
        lambda: dbg.attention(rng.randint(0, 1)),
        lambda: dbg.abort(),
    ]
    if paused_at_line:
        choices.append(
            lambda: dbg.evaluate("self.c_fc(x).shape" if rng.random() < 0.5 else "x.sum()")
        )
    return rng.choice(choices)()


@pytest.mark.parametrize("seed", [0, 1])
def test_random_cancels_never_leave_a_false_snapshot(seed: int) -> None:
    rng = random.Random(seed)
    dbg = Debugger(Session.open(ModelSpec(config="tiny")))
    canceller = Canceller(dbg, random.Random(seed + 100), rate=0.05)
    found: list[str] = []
    try:
        dbg.set_line_breakpoints(["MLP.forward"])
        for i in range(INTENTS):
            canceller.armed = True
            state = one_intent(dbg, rng)
            canceller.armed = False  # the checks below run the model too
            found += [f"intent {i} ({state.message!r}): {m}" for m in mismatches(dbg, state)]
    finally:
        canceller.remove()
        dbg.close(wait=True)
    assert canceller.sent > 5  # the cancels really raced the intents
    assert found == [], "\n".join(found)
