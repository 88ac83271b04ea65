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
from .health import HealthStep, train_health
from .step import StepOptions, StepReport, train_step

if TYPE_CHECKING:
    from collections.abc import Callable

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


class Training:
    """The Debugger's training part: it owns the batch, its source and shape, and the
    step and health run on it. The Debugger passes in what it owns (the prompt, the NaN
    watch, the runner's cancel check); each method returns the message to show."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._source: BatchSource | None = None
        self._shape = (4, 64)  # batch, block
        self._seed = 0
        self._made_from: str | None = None  # the prompt the batch was made from
        self._batch: Batch | None = None
        self._interventions: tuple[str, ...] = ()  # those the view was made under
        self._view: TrainingView | None = None

    def view(self, prompt: str) -> TrainingView | None:
        """The view for a snapshot: None once stale, so that a pane asks for a new one."""
        return None if self._view is None or self._stale(prompt) else self._view

    # -- the batch -----------------------------------------------------------------------

    def set_batch(
        self,
        prompt: str,
        data: str | BatchSource | None,
        batch: int,
        block: int,
        seed: int,
        meta: str | None,
        split: str,
        options: StepOptions | None,
    ) -> str:
        session = self._session
        context = session.context_len
        block_ = min(block, context) if context else block
        source = None
        if isinstance(data, BatchSource):
            source = data
        elif data is not None:
            decode, vocab = session.decode_token, session.vocab_size
            source = open_source(data, session.encode, decode, meta, split, vocab)
        self._source, self._shape, self._seed = source, (batch, block_), seed
        self._make_batch(prompt, options)
        assert self._batch is not None
        note = f" (--block cropped to the context {context})" if block_ < block else ""
        return f"batch from {self._batch.source}{note}"

    def set_options(self, prompt: str, options: StepOptions) -> str:
        view = self._view or self._make_batch(prompt, options)
        self._view = TrainingView(view.batch, options)
        return "training options set; the step starts again"

    def _make_batch(self, prompt: str, options: StepOptions | None = None) -> TrainingView:
        rows, block = self._shape
        if self._source is None:
            ids, _ = self._session.prompt_ids(prompt)
            batch = make_prompt_batch(ids, block)
            self._made_from = prompt
            decode = self._session.decode_token
        else:
            batch = self._source.get_batch(rows, block, self._seed)
            decode = self._source.decode
        check_vocab(batch, self._session.vocab_size)
        self._batch = batch
        self._interventions = self._interventions_now()
        opts = options or (self._view.options if self._view else StepOptions())
        self._view = TrainingView(_plain(batch_view(batch, decode, self._seed)), opts)
        return self._view

    def _interventions_now(self) -> tuple[str, ...]:
        return tuple(spec.description for spec in self._session.interventions.active)

    def _stale(self, prompt: str) -> bool:
        """A batch from an older prompt, or a step taken before the interventions changed."""
        return (self._source is None and self._made_from != prompt) or (
            self._interventions != self._interventions_now()
        )

    def _current(self, prompt: str) -> TrainingView:
        if self._view is None or self._stale(prompt):
            return self._make_batch(prompt)
        return self._view

    # -- the step ------------------------------------------------------------------------

    def step(self, prompt: str, how: str, watch: bool, check: Callable[[], None]) -> str:
        """One move on the step's timeline, computing the step first if needed."""
        view = self._current(prompt)
        if view.report is None or view.phase == "done":
            assert self._batch is not None
            opts = _watched(view.options, watch)
            report = train_step(self._session.model, self._batch, opts, check)
            view = replace(view, options=opts)
            view = replace(view, report=report, position=0, timeline=timeline(report))
            if how != "continue":
                self._view = view
                return _step_message(view)
        view = replace(view, position=_next_position(view, how))
        self._view = view
        return _step_message(view)

    def reset(self, prompt: str) -> str:
        view = self._current(prompt)
        self._view = TrainingView(view.batch, view.options)
        return "training step reset"

    # -- health ----------------------------------------------------------------------------

    def health(
        self,
        prompt: str,
        n: int,
        watch: bool,
        check: Callable[[], None],
        progress: Callable[[HealthStep], None] | None,
    ) -> str:
        view = self._current(prompt)
        rows, block = self._shape
        source, seed, vocab = self._source, self._seed, self._session.vocab_size
        prompt_batch = self._batch

        def batches(step: int) -> Batch:
            if source is None:
                assert prompt_batch is not None
                return prompt_batch
            batch = source.get_batch(rows, block, seed, step)
            check_vocab(batch, vocab)
            return batch

        opts = _watched(view.options, watch)
        health = train_health(self._session.model, batches, n, opts, check, progress)
        self._view = replace(view, health=health)
        where = health.stopped
        message = f"health: {len(health.steps)} steps"
        if where is not None:
            step = health.stopped_step
            message += f"; non-finite at step {step}: {where.text}"
        return message


def _watched(options: StepOptions, watch: bool) -> StepOptions:
    """The Debugger's NaN watch (the app's `w`) watches the training step too."""
    return replace(options, watch_nan=True) if watch else options


def _next_position(view: TrainingView, how: str) -> int:
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


def _step_message(view: TrainingView) -> str:
    report = view.report
    assert report is not None
    if report.first_nonfinite is not None and view.options.watch_nan:
        hit = report.first_nonfinite
        if watch_position(report, view.timeline) == view.position:
            return f"non-finite: {hit.text}"
    module = view.current_module
    return view.phase_line + (f" · {module}" if module else "")


def _plain(view: BatchView) -> TrainingBatch:
    """io's batch inspector data as the engine's own view type."""
    rows = tuple(
        TrainingBatchRow(
            r.offset, r.input_ids, r.target_ids, r.input_text, r.target_text, r.ignored
        )
        for r in view.rows
    )
    return TrainingBatch(view.source, rows, view.block, view.seed, view.step)


__all__ = ["TRAIN_MOVES", "Training", "TrainingView", "TrainPhase"]
