"""`Debugger(session)`: the one stateful object that the app and the CLI drive.

It owns the prompt, leaf probes and the measures, and holds its parts, each owning its
own state and giving a `view()` of frozen data: `SteppedPass` (core/stepped_pass.py: also
the module breakpoints and the NaN watchpoint), `Generation` (generation/intents.py),
`Lines` (core/line_intents.py), `Training` (training/intents.py), `Comparison`
(analysis/compare_intents.py), `Attention` (analysis/attention_intents.py),
`Interventions` (analysis/intervention_intents.py). Each public method is one user
intent and returns a frozen `DebugState` taken under the lock; a part gets what the
Debugger owns (the prompt, the runner, other parts) as arguments, never the Debugger.

The concurrency contract (move ids, cancellation, close) is in core/runner.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ..errors import GptTuiError
from .analysis.attention_intents import Attention
from .analysis.compare_intents import BSpec, Comparison
from .analysis.intervention_intents import Interventions
from .analysis.measures import MeasuresView, measure
from .analysis.patching import What
from .core.debug_state import DebugState, GenerationSettings, ModelInfo, Probes, assemble_state
from .core.frames import LINE_MOVES
from .core.line_intents import Lines
from .core.runner import MoveRunner, cancellable
from .core.stepped_pass import MOVES, SteppedPass, module_move
from .core.views import default_prompt, model_info
from .generation.intents import Generation, to_sampling
from .generation.sampling import check_sampling_settings
from .training.intents import TRAIN_MOVES, Training

if TYPE_CHECKING:
    from ..io.batches import BatchSource
    from .analysis.interventions import InterventionSpec
    from .core.session import Session
    from .core.stepping import ForwardStepper
    from .training.health import HealthStep
    from .training.step import StepOptions


class Debugger:
    """Debugging intents on one open `Session`. Its `runner` (held, not inherited) runs
    every intent under one lock and is the only way in: see core/runner.py."""

    def __init__(self, session: Session, *, seed: int = 0) -> None:
        self.session = session
        self._pass = SteppedPass(session)  # the stepped pass a cancel must reach, the runs
        self.runner = MoveRunner(session, self._snapshot, lambda: self._pass.stepper)
        self._prompt = default_prompt(session)
        self._leaves = False
        self._ablations = Interventions(session)  # the ablations toggled, the others
        self._generation = Generation(session, seed)  # the settings and the text so far
        self._attention = Attention(session)  # the Attention tab's pattern
        self._lines = Lines(session)  # line breakpoints, expressions, the tensor viewer
        self._training = Training(session)  # the batch, the training step, health
        self._compare = Comparison(session)  # the Compare tab's diff, sweep or attribution
        self._measures: MeasuresView | None = None

    # -- the model -----------------------------------------------------------------------

    def new_move(self) -> int:
        """An id for the next intent, to name it in `cancel` before it starts."""
        return self.runner.new_move()

    def cancel(self, move: int | None = None) -> bool:
        """Stop `move` (any running move if None) if it is running now; never waits."""
        return self.runner.cancel(move)

    @property
    def closed(self) -> threading.Event:
        """Set once `close()`'s teardown is done (every hook gone)."""
        return self.runner.closed

    def info(self) -> ModelInfo:
        with self.runner.lock:
            return model_info(self.session)

    def memory(self) -> dict[str, int]:
        return self.session.memory()  # read-only and cheap: not behind the lock

    def state(self) -> DebugState:
        """The current snapshot, without doing anything."""
        with self.runner.lock:
            return self._snapshot(self.runner.last_move)

    # -- settings ------------------------------------------------------------------------

    @cancellable
    def set_prompt(self, prompt: str, *, move: int | None = None) -> DebugState:
        """The text every later pass reads. A prompt the tokenizer cannot encode raises
        a one-line error and the old prompt stays.
        The views made on the old prompt go; a paused pass re-runs on the new prompt to
        the same module event, as for leaf probes."""

        def body(mid: int) -> DebugState:
            self.session.prompt_ids(prompt)  # raises for an empty or unencodable prompt
            if prompt != self._prompt:
                self._prompt = prompt
                self._attention.forget()
                self._generation.forget()
                self._replay_paused(mid)
            return self._snapshot(mid, f"prompt {prompt!r}")

        return self.runner.intent(move, body, "prompt")

    def set_breakpoints(self, globs: Iterable[str], *, move: int | None = None) -> DebugState:
        with self.runner.moving(move) as mid:
            return self._snapshot(mid, self._pass.set_breakpoints(globs, self._leaves))

    def toggle_breakpoint(self, name: str, *, move: int | None = None) -> DebugState:
        return self.set_breakpoints(self._pass.breakpoints ^ {name}, move=move)

    def set_watch(self, on: bool, *, move: int | None = None) -> DebugState:
        with self.runner.moving(move) as mid:
            self._pass.set_watch(on)
            return self._snapshot(mid)

    @cancellable
    def set_leaves(self, on: bool, *, move: int | None = None) -> DebugState:
        """Probe leaves (Linear, norms, activations) from now on. A paused pass is re-run
        with the new probes to the same module event (its parent's, if that was a leaf)."""
        with self.runner.moving(move) as mid:
            self._leaves = on
            self._replay_paused(mid)
            return self._snapshot(mid, f"leaf probes {'on' if on else 'off'}")

    # -- forward passes ------------------------------------------------------------------

    @cancellable
    def run(
        self, *, attention_layers: Iterable[int] | str = (), move: int | None = None
    ) -> DebugState:
        """A whole recorded forward pass on the prompt; a paused stepped pass gives way."""
        record = self._pass.record
        args = (self._prompt, attention_layers, self._leaves, self._lines)
        return self._intent(move, "forward pass", lambda _: record(*args))

    @cancellable
    def step(self, how: str, *, move: int | None = None) -> DebugState:
        """Advance the stepped pass (`into`, `over`, `out`, `continue`), starting one on
        the prompt if none is under way."""
        if how not in MOVES:
            raise ValueError(f"unknown move {how!r}: one of {', '.join(MOVES)}")
        return self.runner.intent(move, lambda mid: self._advance(mid, module_move(how)), "step")

    def _advance(self, mid: int, advance: Callable[[ForwardStepper], object]) -> DebugState:
        """One move of the stepped pass (started on the prompt if none is under way)."""
        args = (self.runner, self._probes(), advance, self._lines, self._generation)
        return self._snapshot(mid, self._pass.advance(mid, *args))

    def abort(self, *, move: int | None = None) -> DebugState:
        """End the paused stepped pass (nothing to do if none is under way)."""
        with self.runner.moving(move) as mid:
            return self._snapshot(mid, self._pass.abort(self._lines))

    @property
    def _at(self) -> ForwardStepper | None:
        """The pass under way, for the line part (None if none is)."""
        return self._pass.stepper

    def _probes(self) -> Probes:
        return Probes(self._prompt, self._pass.breakpoints, self._pass.watch, self._leaves)

    def _replay_paused(self, mid: int) -> None:
        self._pass.replay(mid, self.runner, self._probes(), self._lines)

    # -- interventions -------------------------------------------------------------------

    @cancellable
    def toggle_ablation(
        self, module: str, kind: str, head: int | None = None, *, move: int | None = None
    ) -> DebugState:
        """Ablate the attention head / MLP at `module`, or undo it. Every view is brought up
        to date: the paused pass re-run, the last run re-recorded, candidates re-peeked."""

        def act(mid: int) -> str:
            self._ablations.toggle_ablation(module, kind, head)
            return self._interventions_changed(mid)

        return self._intent(move, "ablation", act)

    @cancellable
    def add_intervention(self, spec: InterventionSpec, *, move: int | None = None) -> DebugState:
        """Any intervention (e.g. `inject_nonfinite(module)` to try the NaN watchpoint);
        it stays for the session. The views are brought up to date as for an ablation."""

        def act(mid: int) -> str:
            self._ablations.add(spec)
            return self._interventions_changed(mid)

        return self._intent(move, "intervention", act)

    def _interventions_changed(self, mid: int) -> str:
        parts = (self._attention, self._pass, self._generation)
        replay = lambda: self._replay_paused(mid)  # noqa: E731
        return self._ablations.changed(self._prompt, self._leaves, parts, replay)

    # -- views ---------------------------------------------------------------------------

    @cancellable
    def attention(self, layer: int, *, move: int | None = None) -> DebugState:
        """The recomputed attention pattern of `layer` on the prompt."""
        return self._intent(move, "attention", lambda _: self._attention.show(self._prompt, layer))

    @cancellable
    def measure(self, kind: str, *args: object, move: int | None = None) -> DebugState:
        """The Cost tab's numerics (dtype) or memory and FLOPs (batch, block); measures.py."""

        def act(mid: int) -> None:
            self._measures = measure(
                self.session, self._prompt, self._measures, kind, *args, runner=self.runner, mid=mid
            )

        return self._intent(move, kind, act)

    # -- generation (generation/intents.py) -----------------------------------------------

    @cancellable
    def reset_generation(
        self, settings: GenerationSettings | None = None, *, move: int | None = None
    ) -> DebugState:
        """Start generating from the prompt afresh (a new seeded generator)."""

        def act(mid: int) -> str:
            self._pass.end_token_pass(self._lines)
            self._generation.start(self._prompt, settings)
            return "generation restarted from the prompt"

        return self._intent(move, "generation", act)

    @cancellable
    def set_generation_settings(
        self, settings: GenerationSettings, *, move: int | None = None
    ) -> DebugState:
        """Sampling settings for the next steps; the text so far stays and the next
        token's candidates are re-peeked. A new seed restarts (it names another run)."""

        def act(mid: int) -> str:
            check_sampling_settings(settings.temperature, settings.top_k, settings.top_p)
            self._pass.end_token_pass(self._lines)
            restart = self._generation.set_settings(self._prompt, settings)
            return "new seed: restarted" if restart else ""

        return self._intent(move, "generation", act)

    @cancellable
    def generate(
        self,
        n: int = 1,
        *,
        force_token: int | None = None,
        progress: Callable[[DebugState], None] | None = None,
        move: int | None = None,
    ) -> DebugState:
        """Take `n` sampled steps (or one forced step); cancellable between and within
        steps, keeping the tokens taken so far. `progress` gets a snapshot after each
        token (its candidates are the step's own; the lens waits for the end)."""
        if n < 1:
            raise GptTuiError(f"cannot generate {n} tokens: give a number >= 1")

        def act(mid: int) -> tuple[str, bool]:
            self._pass.end_token_pass(self._lines)
            each = None if progress is None else lambda m: progress(self._snapshot(mid, m))
            return self._generation.generate(self._prompt, n, force_token, self.runner, mid, each)

        return self._intent(move, "generation", act)

    @cancellable
    def step_token(self, *, move: int | None = None) -> DebugState:
        """Step into the next token: its forward and sampling run as a stepped pass that
        stops at `sample_next`'s first line, or sooner at a module or line breakpoint of
        the user's. When the pass finishes its token joins the generation; aborted, not."""

        def body(mid: int) -> DebugState:
            self._pass.end_token_pass(self._lines)
            self._generation.ensure(self._prompt)
            self._pass.start_token(self._lines)  # a paused pass on the prompt gives way
            return self._advance(mid, to_sampling)

        return self.runner.intent(move, body, "token step")

    # -- lines (line_intents.py): pdb's break, tbreak, ignore, clear, disable, display, p

    def set_line_breakpoints(self, specs: Iterable[str], *, move: int | None = None) -> DebugState:
        """pdb-style `FILE:LINE` / `FUNCTION` breakpoints (with ` if COND`) in the model's own
        code, numbered as pdb does (one kept keeps its number and counts). One that matches
        nothing raises `BreakpointError` and the old set stays."""
        return self._intent(move, "line", lambda _: self._lines.set_breakpoints(specs, self._at))

    def toggle_line_breakpoint(self, spec: str, *, move: int | None = None) -> DebugState:
        return self.set_line_breakpoints(self._lines.breakpoints ^ {spec}, move=move)

    def add_line_breakpoint(
        self, spec: str, *, temporary: bool = False, move: int | None = None
    ) -> DebugState:
        """pdb's `break SPEC`, or its `tbreak SPEC` (`temporary`: removed at its first stop)."""
        add = self._lines.add_breakpoint
        return self._intent(move, "line", lambda _: add(spec, temporary, self._at))

    def ignore_line_breakpoint(
        self, number: int, count: int, *, move: int | None = None
    ) -> DebugState:
        """pdb's `ignore NUMBER COUNT`: the breakpoint's next `count` hits pass."""
        return self._intent(move, "line", lambda _: self._lines.ignore(number, count))

    def enable_line_breakpoints(
        self, numbers: Iterable[int], on: bool = True, *, move: int | None = None
    ) -> DebugState:
        """pdb's `enable N...`, or `disable N...` (`on=False`: kept, but never stops)."""
        return self._intent(move, "line", lambda _: self._lines.enable(numbers, on, self._at))

    def condition_line_breakpoint(
        self, number: int, expr: str | None = None, *, move: int | None = None
    ) -> DebugState:
        """pdb's `condition N [EXPR]`: set, replaced or (no EXPR) removed; number kept."""
        act = self._lines.condition
        return self._intent(move, "line", lambda _: act(number, expr, self._at))

    @cancellable
    def display(self, expr: str, *, move: int | None = None) -> DebugState:
        """pdb's `display EXPR`: evaluated at every line pause (now too, if paused at one),
        shown with whether it changed since the last."""
        return self._intent(move, "display", lambda _: self._lines.display(expr, self._at))

    def undisplay(self, which: str | int | None = None, *, move: int | None = None) -> DebugState:
        """pdb's `undisplay [EXPR]`, or by number; without one, every display goes."""
        return self._intent(move, "line", lambda _: self._lines.undisplay(which))

    @cancellable
    def step_line(self, how: str, *, move: int | None = None) -> DebugState:
        """A line move (`next`, `into`, `return`, `continue`), starting a pass if needed."""
        if how not in LINE_MOVES:
            raise ValueError(f"unknown line move {how!r}: one of {', '.join(LINE_MOVES)}")
        return self.runner.intent(
            move, lambda mid: self._advance(mid, lambda s: s.step_line(how)), "step"
        )

    @cancellable
    def evaluate(self, expr: str, *, move: int | None = None) -> DebugState:
        """pdb's `p expr` in the paused frame, run in the forward thread. An error is one
        line in the evaluation (and the message); the pass stays paused."""
        return self._intent(move, "expression", lambda _: self._lines.evaluate(expr, self._at))

    @cancellable
    def view_tensor(
        self,
        expr: str,
        fixed: tuple[int, ...] = (),
        *,
        row_start: int = 0,
        col_start: int = 0,
        move: int | None = None,
    ) -> DebugState:
        """The tensor viewer's data for a local or an expression at the paused line."""
        args = (expr, fixed, row_start, col_start)
        return self._intent(move, "tensor view", lambda _: self._lines.view_tensor(*args, self._at))

    # -- training (training/intents.py) --------------------------------------------------

    def set_batch(
        self,
        data: str | BatchSource | None = None,
        *,
        batch: int = 4,
        block: int = 64,
        seed: int = 0,
        meta: str | None = None,
        split: str = "all",
        options: StepOptions | None = None,
        move: int | None = None,
    ) -> DebugState:
        """Where batches come from (a text file, a nanoGPT .bin, a `BatchSource` such as
        a `FixedBatch`, or None: the prompt) and their shape; a batch that names ids
        outside the vocabulary raises one line."""
        args = (data, batch, block, seed, meta, split, options)
        return self._intent(move, "batch", lambda _: self._training.set_batch(self._prompt, *args))

    def set_training_options(self, options: StepOptions, *, move: int | None = None) -> DebugState:
        set_options = self._training.set_options
        return self._intent(move, "training options", lambda _: set_options(self._prompt, options))

    @cancellable
    def train_step(self, how: str = "into", *, move: int | None = None) -> DebugState:
        """Walk the training step: `into` the next event, `over`/`out` to the next phase,
        `continue` to the first non-finite value (with the watch) or the end. The step is
        computed at the first move; the weights are back unless the options keep them."""
        if how not in TRAIN_MOVES:
            raise ValueError(f"unknown move {how!r}: one of {', '.join(TRAIN_MOVES)}")

        def act(mid: int) -> str:
            return self._training.step(self._prompt, how, self._pass.watch, self.runner.check(mid))

        return self._intent(move, "training step", act)

    def train_reset(self, *, move: int | None = None) -> DebugState:
        """Forget the step (and health run); the batch stays."""
        return self._intent(move, "training reset", lambda _: self._training.reset(self._prompt))

    @cancellable
    def train_health(
        self,
        n: int = 20,
        *,
        progress: Callable[[HealthStep], None] | None = None,
        move: int | None = None,
    ) -> DebugState:
        """`n` steps on fresh seeded batches (the prompt's one batch if no data); stops at
        the first non-finite value. Cancellable between and within steps."""

        def act(mid: int) -> str:
            check = self.runner.check(mid)
            return self._training.health(self._prompt, n, self._pass.watch, check, progress)

        return self._intent(move, "training health", act)

    # -- comparisons (compare_intents.py) -------------------------------------------------

    @cancellable
    def compare_runs(
        self, b: BSpec, leaves: bool = False, *, move: int | None = None
    ) -> DebugState:
        """Diff the open prompt's run against run B, probe by probe."""
        args = (self._prompt, b, leaves, self.runner)
        return self._intent(move, "diff", lambda mid: self._compare.diff(*args, mid))

    @cancellable
    def patch_runs(
        self,
        corrupted: str,
        answer: str,
        wrong: str,
        what: What = "resid_pre",
        *,
        move: int | None = None,
    ) -> DebugState:
        """Patch the open prompt's run (clean) into `corrupted`, for every layer and
        position (or head)."""
        args = (self._prompt, corrupted, answer, wrong, what)
        return self._intent(move, "patch", lambda _: self._compare.patch(*args))

    @cancellable
    def attribute_logit(
        self,
        answer: str | int,
        wrong: str | int | None = None,
        position: int = -1,
        *,
        generation: bool = False,
        move: int | None = None,
    ) -> DebugState:
        """Direct logit attribution of `answer` (minus `wrong`) at `position` of the prompt,
        or with `generation` of the text generated so far (-1: the next token's logits).
        A token is its text, or its id as an int."""

        def act(mid: int) -> str:
            gen = self._generation.current if generation else None
            return self._compare.attribute(self._prompt, answer, wrong, position, gen)

        return self._intent(move, "attribute", act)

    # -- snapshot and end ----------------------------------------------------------------

    def _intent(
        self, move: int | None, what: str, act: Callable[[int], str | tuple[str, bool] | None]
    ) -> DebugState:
        """`act(mid)` as one intent; it gives the message (and whether it was cut short)."""

        def body(mid: int) -> DebugState:
            done = act(mid) or ""
            message, cut = done if isinstance(done, tuple) else (done, False)
            return self._snapshot(mid, message, cancelled=cut)

        return self.runner.intent(move, body, what)

    def _snapshot(self, mid: int, message: str = "", cancelled: bool = False) -> DebugState:
        return assemble_state(
            mid,
            message,
            cancelled,
            self._probes(),
            self._pass.view(),
            self._lines.view(),
            self._ablations.descriptions(),
            self._ablations.ablated_modules(),
            self._generation.view(),
            self._attention.view(),
            self._training.view(self._prompt),
            self._compare.view(),
            self._measures,
            seq=self.runner.seq(),  # under the lock: the newest snapshot has the highest
        )

    def close(self, *, wait: bool = False) -> bool:
        """Stop everything and remove every hook, without waiting for the running intent
        unless `wait` (for a model that must be put back, as inspect does); see
        core/runner.py. True if torn down before returning; `closed` is set when done."""
        return self.runner.close(self._teardown, wait)

    def _teardown(self) -> None:
        if self.closed.is_set():
            return
        self._pass.end("idle", self._lines)
        self.runner.remove_hooks()
        self.session.close()
        self.closed.set()


__all__ = ["Debugger", "DebugState", "GenerationSettings", "MOVES"]
