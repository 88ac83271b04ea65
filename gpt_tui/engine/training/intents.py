"""The Debugger's training intents: a batch, a training step stepped phase by phase, health.

A step is computed whole the first time it is asked for (cancellable at the next module:
the Debugger's block pre-hooks stop the forward, the backward hooks stop backward), then
the same step keys walk its timeline: the batch, each module's forward output, the loss,
each module's backward in the order autograd ran it, the optimizer. `continue` runs to the
first non-finite value when the NaN watch is on, else to the end.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from ...io.batches import Batch, BatchSource, BatchView, batch_view, check_vocab, open_source
from ...io.batches import prompt_batch as make_prompt_batch
from ..core.debug_state import TrainingBatch, TrainingBatchRow, TrainingView, TrainPhase
from ..core.runner import MoveRunner, cancellable
from .health import HealthStep, train_health
from .step import StepOptions, StepReport, train_step

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..core.debug_state import DebugState
    from ..core.session import Session

TRAIN_MOVES = ("into", "over", "out", "continue")


def timeline(report: StepReport) -> tuple[tuple[TrainPhase, int], ...]:
    forward = [r for r in report.forward if r.phase == "out" and r.kind != "resid"]
    steps: list[tuple[TrainPhase, int]] = [("batch", 0)]
    steps += [("forward", i) for i in range(len(forward))]
    steps.append(("loss", 0))
    steps += [("backward", i) for i in range(len(report.backward))]
    if "optimizer" in report.phases_run:
        steps.append(("optimizer", 0))
    return (*steps, ("done", 0))


def watch_position(report: StepReport, steps: tuple[tuple[TrainPhase, int], ...]) -> int | None:
    """Where the first non-finite value is on the timeline."""
    hit = report.first_nonfinite
    if hit is None:
        return None
    forward = [r for r in report.forward if r.phase == "out" and r.kind != "resid"]
    for k, (phase, i) in enumerate(steps):
        if phase != hit.phase:
            continue
        if phase == "forward" and forward[i].name != hit.where:
            continue
        if phase == "backward" and report.backward[i].name != hit.where:
            continue
        return k
    return None


class TrainingIntents:
    """Mixed into `Debugger`: uses its `runner`, `_snapshot`, `session` and `_prompt`."""

    session: Session
    _prompt: str
    _watch: bool
    runner: MoveRunner
    _snapshot: Callable[..., DebugState]

    def _init_training(self) -> None:
        self._train_source: BatchSource | None = None
        self._train_shape = (4, 64)  # batch, block
        self._train_seed = 0
        self._train_prompt: str | None = None  # the prompt the batch was made from
        self._train_batch: Batch | None = None
        self._train_interventions: tuple[str, ...] = ()  # those the view was made under
        self._training: TrainingView | None = None

    # -- the batch -----------------------------------------------------------------------

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

        def body(mid: int) -> DebugState:
            session = self.session
            context = session.context_len
            block_ = min(block, context) if context else block
            source = None
            if isinstance(data, BatchSource):
                source = data
            elif data is not None:
                decode, vocab = session.decode_token, session.vocab_size
                source = open_source(data, session.encode, decode, meta, split, vocab)
            self._train_source, self._train_shape, self._train_seed = source, (batch, block_), seed
            self._make_batch(options)
            note = f" (--block cropped to the context {context})" if block_ < block else ""
            return self._snapshot(mid, f"batch from {self._train_batch.source}{note}")

        return self.runner.intent(move, body, "batch")

    def set_training_options(self, options: StepOptions, *, move: int | None = None) -> DebugState:
        def body(mid: int) -> DebugState:
            view = self._training or self._make_batch(options)
            self._training = TrainingView(view.batch, options)
            return self._snapshot(mid, "training options set; the step starts again")

        return self.runner.intent(move, body, "training options")

    def _make_batch(self, options: StepOptions | None = None) -> TrainingView:
        rows, block = self._train_shape
        if self._train_source is None:
            ids, _ = self.session.prompt_ids(self._prompt)
            batch = make_prompt_batch(ids, block)
            self._train_prompt = self._prompt
            decode = self.session.decode_token
        else:
            batch = self._train_source.get_batch(rows, block, self._train_seed)
            decode = self._train_source.decode
        check_vocab(batch, self.session.vocab_size)
        self._train_batch = batch
        self._train_interventions = self._interventions_now()
        opts = options or (self._training.options if self._training else StepOptions())
        self._training = TrainingView(_plain(batch_view(batch, decode, self._train_seed)), opts)
        return self._training

    def _interventions_now(self) -> tuple[str, ...]:
        return tuple(spec.description for spec in self.session.interventions.active)

    def _training_stale(self) -> bool:
        """A batch from an older prompt, or a step taken before the interventions changed."""
        return (self._train_source is None and self._train_prompt != self._prompt) or (
            self._train_interventions != self._interventions_now()
        )

    def _training_state(self) -> TrainingView | None:
        """The view for a snapshot: None once stale, so that a pane asks for a new one."""
        return None if self._training is None or self._training_stale() else self._training

    def _current_training(self) -> TrainingView:
        if self._training is None or self._training_stale():
            return self._make_batch()
        return self._training

    # -- the step ------------------------------------------------------------------------

    @cancellable
    def train_step(self, how: str = "into", *, move: int | None = None) -> DebugState:
        """Walk the training step: `into` the next event, `over`/`out` to the next phase,
        `continue` to the first non-finite value (with the watch) or the end. The step is
        computed at the first move; the weights are back unless the options keep them."""
        if how not in TRAIN_MOVES:
            raise ValueError(f"unknown move {how!r}: one of {', '.join(TRAIN_MOVES)}")

        def body(mid: int) -> DebugState:
            view = self._current_training()
            if view.report is None or view.phase == "done":
                assert self._train_batch is not None
                opts = self._watched(view.options)
                model, batch = self.session.model, self._train_batch
                report = train_step(model, batch, opts, self.runner.check(mid))
                view = replace(view, options=opts)
                view = replace(view, report=report, position=0, timeline=timeline(report))
                if how != "continue":
                    self._training = view
                    return self._snapshot(mid, self._step_message(view))
            view = replace(view, position=self._next_position(view, how))
            self._training = view
            return self._snapshot(mid, self._step_message(view))

        return self.runner.intent(move, body, "training step")

    def _watched(self, options: StepOptions) -> StepOptions:
        """The Debugger's NaN watch (the app's `w`) watches the training step too."""
        return replace(options, watch_nan=True) if self._watch else options

    def _next_position(self, view: TrainingView, how: str) -> int:
        steps, at = view.timeline, view.position
        last = len(steps) - 1
        if how == "into":
            return min(at + 1, last)
        if how in ("over", "out"):
            phase = steps[at][0]
            return next((k for k in range(at + 1, last + 1) if steps[k][0] != phase), last)
        assert view.report is not None
        hit = watch_position(view.report, steps) if view.options.watch_nan else None
        return hit if hit is not None and hit > at else last

    def _step_message(self, view: TrainingView) -> str:
        report = view.report
        assert report is not None
        if report.first_nonfinite is not None and view.options.watch_nan:
            hit = report.first_nonfinite
            if watch_position(report, view.timeline) == view.position:
                return f"non-finite: {hit.phase} at {hit.where}"
        module = view.current_module
        return view.phase_line + (f" · {module}" if module else "")

    def train_reset(self, *, move: int | None = None) -> DebugState:
        """Forget the step (and health run); the batch stays."""

        def body(mid: int) -> DebugState:
            view = self._current_training()
            self._training = TrainingView(view.batch, view.options)
            return self._snapshot(mid, "training step reset")

        return self.runner.intent(move, body, "training reset")

    # -- health ----------------------------------------------------------------------------

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

        def body(mid: int) -> DebugState:
            view = self._current_training()
            rows, block = self._train_shape
            source, seed, vocab = self._train_source, self._train_seed, self.session.vocab_size

            def batches(step: int) -> Batch:
                if source is None:
                    assert self._train_batch is not None
                    return self._train_batch
                batch = source.get_batch(rows, block, seed, step)
                check_vocab(batch, vocab)
                return batch

            opts = self._watched(view.options)
            model = self.session.model
            health = train_health(model, batches, n, opts, self.runner.check(mid), progress)
            self._training = replace(view, health=health)
            where = health.stopped
            message = f"health: {len(health.steps)} steps"
            if where is not None:
                step = health.stopped_step
                message += f"; non-finite at step {step}: {where.phase} {where.where}"
            return self._snapshot(mid, message)

        return self.runner.intent(move, body, "training health")


def _plain(view: BatchView) -> TrainingBatch:
    """io's batch inspector data as the engine's own view type."""
    rows = tuple(
        TrainingBatchRow(
            r.offset, r.input_ids, r.target_ids, r.input_text, r.target_text, r.ignored
        )
        for r in view.rows
    )
    return TrainingBatch(view.source, rows, view.block, view.seed, view.step)


__all__ = ["TRAIN_MOVES", "TrainingView", "TrainPhase"]
