"""The frozen snapshots the `Debugger` hands out: plain data, ready to render.

A pane or a CLI command renders one of these and never asks a live object. Every field
is detached CPU data (the attention weights are numpy arrays), so a snapshot can cross
threads and outlive the pass it describes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # annotations only: the UI imports this module before torch loads
    from ..analysis.attention import HeadSummary
    from ..analysis.attribution import Attribution
    from ..analysis.compare import Comparison
    from ..analysis.lens import LensResult
    from ..analysis.measures import MeasuresView
    from ..analysis.patching import PatchSweep
    from ..analysis.summary import ModelSummary
    from ..generation.sampling import Candidate, SamplingStep
    from ..training.health import Health
    from ..training.step import StepOptions, StepReport
    from .frames import Evaluation, FrameSnapshot
    from .line_breakpoints import BreakpointInfo
    from .tensors import TensorView
    from .trace import AttentionPattern, ProbeRecord, StepEvent

# idle: no stepped pass; paused: a stepped pass waits at `event`; finished / aborted:
# the stepped pass just ended that way.
StepStatus = Literal["idle", "paused", "finished", "aborted"]


@dataclass(frozen=True)
class ModelInfo:
    """What the status bar, tree, params and diagram panes show about the open model."""

    name: str
    family: str
    source: str
    device: str
    dtype: str
    summary: ModelSummary
    n_layer: int
    n_head: int
    n_kv_head: int
    n_embd: int
    context_len: int | None
    vocab_size: int
    notes: tuple[str, ...]
    default_prompt: str
    tokenizer: str = ""  # which tokenizer, its size, where from (for bytes: how to get BPE)


@dataclass(frozen=True)
class GenerationSettings:
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0


@dataclass(frozen=True)
class GenerationView:
    """The generation so far: the prompt, each generated token's text, the steps taken."""

    prompt: str
    pieces: tuple[str, ...]  # decoded text of each generated token, in order
    steps: tuple[SamplingStep, ...]  # every step taken since the last reset
    cache_fill: tuple[int, int] | None
    # Per layer: the KV cache's key shape, value shape and bytes (() without a cache).
    cache_layers: tuple[tuple[tuple[int, ...], tuple[int, ...], int], ...]
    settings: GenerationSettings  # what the next step uses
    next_candidates: tuple[Candidate, ...]  # what the model predicts for the next position
    next_kept: int  # tokens that survive top-k / top-p at the next position
    lens: LensResult | None = None  # the logit lens at the last position (the next token)
    lens_error: str | None = None  # why there is no lens (e.g. a model it cannot decode)

    @property
    def step(self) -> SamplingStep | None:
        """The last step taken, None right after a reset."""
        return self.steps[-1] if self.steps else None

    @property
    def text(self) -> str:
        return self.prompt + "".join(self.pieces)


@dataclass(frozen=True)
class RunResult:
    """A recorded forward pass, or the part of a stepped one done so far (`paused`)."""

    prompt: str
    tokens: tuple[str, ...]  # one printable label per input token
    records: tuple[ProbeRecord, ...]  # execution order; a stepped pass has "in" rows too
    note: str | None = None  # e.g. the prompt was cropped to the context
    paused: int | None = None  # index in `records` of the row the stepper is paused at
    token_ids: tuple[int, ...] = ()
    next_tokens: tuple[Candidate, ...] = ()  # most likely next tokens (a whole run only)
    patterns: dict[int, AttentionPattern] = field(default_factory=dict)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Output shape per probe name, plus `tokens` (the input ids' shape)."""
        out = {r.name: r.shape for r in self.records if r.phase == "out"}
        out["tokens"] = (1, len(self.tokens))
        return out


@dataclass(frozen=True)
class AttentionView:
    prompt: str
    tokens: tuple[str, ...]
    pattern: AttentionPattern
    heads: tuple[HeadSummary, ...] = ()  # per head: entropy, diagonal share, last query


@dataclass(frozen=True)
class CompareView:
    """What the Compare tab shows: one of a diff, a patching sweep, an attribution."""

    kind: Literal["diff", "patch", "attribute"]
    label: str  # what B was, or what was patched / attributed
    comparison: Comparison | None = None
    sweep: PatchSweep | None = None
    attribution: Attribution | None = None
    tokens: tuple[str, ...] = ()  # the prompt's token labels, for columns and positions
    notes: tuple[str, ...] = ()  # about the runs a sweep compared (a prompt cropped)


@dataclass(frozen=True)
class TrainingBatchRow:
    """One row of the batch inspector: the ids, their text, and the ignored targets.
    (io's `BatchRow` as the engine's own type: a snapshot holds only engine types, so a
    pane never reaches into io; `test_a_snapshot_is_plain_data` checks it.)"""

    offset: int | None
    input_ids: tuple[int, ...]
    target_ids: tuple[int, ...]
    input_text: tuple[str, ...]  # one printable piece per token, aligned with the ids
    target_text: tuple[str, ...]  # "·" where the target is ignored
    ignored: int  # targets equal to -1


@dataclass(frozen=True)
class TrainingBatch:
    """The batch a training step runs on, as the batch inspector shows it."""

    source: str
    rows: tuple[TrainingBatchRow, ...]
    block: int
    seed: int
    step: int

    @property
    def ignored_targets(self) -> int:
        return sum(r.ignored for r in self.rows)

    @property
    def tokens(self) -> int:
        return len(self.rows) * self.block


TrainPhase = Literal["batch", "forward", "loss", "backward", "optimizer", "done"]
PHASES: tuple[TrainPhase, ...] = ("batch", "forward", "loss", "backward", "optimizer", "done")


@dataclass(frozen=True)
class TrainingView:
    """The training debugger at one moment: the batch, the step so far, the health run."""

    batch: TrainingBatch | None
    options: StepOptions
    report: StepReport | None = None
    position: int = 0  # index in `timeline`
    timeline: tuple[tuple[TrainPhase, int], ...] = ()
    health: Health | None = None

    @property
    def loss(self) -> float | None:
        return self.report.loss if self.report is not None else None

    @property
    def phase(self) -> TrainPhase:
        return self.timeline[self.position][0] if self.timeline else "batch"

    @property
    def current_module(self) -> str | None:
        """The module the step is at: its forward output, or its backward."""
        if not self.timeline or self.report is None:
            return None
        phase, i = self.timeline[self.position]
        if phase == "forward":
            return self.forward_outputs[i].name
        if phase == "backward":
            return self.report.backward[i].name
        return None

    @property
    def forward_outputs(self) -> tuple:
        if self.report is None:
            return ()
        return tuple(
            r for r in self.report.forward if r.phase == "out" and r.kind not in ("resid",)
        )

    @property
    def phase_line(self) -> str:
        """`batch › forward › loss › [backward 3/10] › optimizer`: where the step is."""
        if self.report is None:
            return "batch ready · press a step key to run forward" if self.batch else "no batch"
        counts = {p: sum(1 for q, _ in self.timeline if q == p) for p in PHASES}
        parts = []
        for p in PHASES[:-1]:
            if p not in self.report.phases_run and p != "batch":
                parts.append(f"({p})")  # not run: stopped at the watchpoint
            elif p == self.phase:
                i = self.timeline[self.position][1]
                parts.append(f"[{p} {i + 1}/{counts[p]}]" if counts[p] > 1 else f"[{p}]")
            else:
                parts.append(p)
        return " › ".join(parts) + (" · done" if self.phase == "done" else "")


@dataclass(frozen=True)
class Display:
    """A `display` expression at this line pause, as pdb's: its value or one-line error,
    and whether that differs from the last line pause's (`previous`, shown as pdb's old)."""

    number: int  # from 1 in the order added, never reused, as breakpoints' (`undisplay N`)
    expr: str
    evaluation: Evaluation | None  # None: not at a line pause
    changed: bool = False
    previous: Evaluation | None = None  # the last line pause's, when it changed


@dataclass(frozen=True)
class LineView:
    """Line-level debugging: the line breakpoints, and what was read at this pause."""

    breakpoints: frozenset[str] = frozenset()  # the enabled `FILE:LINE` / `FUNCTION` ones
    evaluations: tuple[Evaluation, ...] = ()  # expressions evaluated at this pause
    tensor_view: TensorView | None = None  # the viewer's tensor at this pause
    table: tuple[BreakpointInfo, ...] = ()  # the breakpoints, numbered
    displays: tuple[Display, ...] = ()  # the display expressions, at this pause
    hit: BreakpointInfo | None = None  # the breakpoint this pause stopped at


@dataclass(frozen=True)
class Probes:
    """What the Debugger owns that a new stepped pass is set up with."""

    prompt: str
    breakpoints: frozenset[str]
    watch: bool
    leaves: bool


@dataclass(frozen=True)
class SteppedView:
    """What the snapshot shows of the stepped pass and the recorded runs; the pause's
    event, reason, records and frame are None unless the pass is paused."""

    status: StepStatus
    event: StepEvent | None
    reason: str | None
    events: tuple[StepEvent, ...]
    stepping: RunResult | None
    run: RunResult | None
    previous_run: RunResult | None
    frame: FrameSnapshot | None


@dataclass(frozen=True)
class DebugState:
    """The whole debugger at one moment, taken under its lock at the end of an intent.

    `move` is the id of the intent that produced it. `seq` numbers the snapshot when it
    is taken, under the Debugger's lock: a UI that receives snapshots out of order keeps
    the one with the highest `seq` (move ids are handed out when asked for, so two moves
    named in advance may run in either order).
    """

    move: int
    prompt: str
    status: StepStatus
    event: StepEvent | None  # the event the stepped pass is paused at
    reason: str | None  # why it stopped there: step, breakpoint or watch
    events: tuple[StepEvent, ...]  # every event of the stepped pass so far
    stepping: RunResult | None  # the stepped pass's records so far, while paused
    run: RunResult | None  # the last whole pass (a run, or a stepped pass that finished)
    previous_run: RunResult | None  # the whole pass before it, for the Stats diff
    message: str  # one line about what the intent did, for a status bar
    breakpoints: frozenset[str]
    watch_nonfinite: bool
    leaves: bool
    ablations: tuple[str, ...]  # descriptions of the active interventions
    ablated_modules: tuple[str, ...]  # modules carrying one
    generation: GenerationView | None
    attention: AttentionView | None
    cancelled: bool = False  # the intent was cancelled before it finished
    frame: FrameSnapshot | None = None  # the line the pass is paused at (None at a module)
    line_breakpoints: frozenset[str] = frozenset()  # the enabled ones (all: line_table)
    evaluations: tuple[Evaluation, ...] = ()  # expressions evaluated at this pause
    tensor_view: TensorView | None = None  # the viewer's tensor at this pause
    line_table: tuple[BreakpointInfo, ...] = ()  # the line breakpoints, numbered as pdb
    displays: tuple[Display, ...] = ()  # display expressions, re-evaluated at each line pause
    hit: BreakpointInfo | None = None  # the line breakpoint this pause stopped at
    training: TrainingView | None = None  # the training debugger (training/intents.py)
    compare: CompareView | None = None  # the last diff, patching sweep or attribution
    measures: MeasuresView | None = None  # numerics, memory and FLOPs (measures.py)
    seq: int = 0  # the snapshot's number, given under the lock when it was taken

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Output shape per probe name, from this snapshot alone: the last whole run's,
        with a paused pass's outputs so far over them (they are newer)."""
        shapes = self.run.shapes() if self.run is not None else {}
        if self.status == "paused":
            shapes.update({e.name: e.shape for e in self.events if e.phase == "out"})
        return shapes

    @property
    def run_passes(self) -> dict[str, str]:
        """The stops a whole recorded pass runs past and a stepped pass's continue makes,
        by kind: `{"breakpoints": "the 2 breakpoints", "watch": "the NaN/Inf watch"}`."""
        passes, n = {}, len(self.breakpoints)
        if n:
            passes["breakpoints"] = f"the {n} breakpoints" if n > 1 else "the breakpoint"
        if self.watch_nonfinite:
            passes["watch"] = "the NaN/Inf watch"
        return passes

    @property
    def paused_at(self) -> str | None:
        """The module the pass is paused at (at a line: the module running that line)."""
        if self.status != "paused":
            return None
        if self.frame is not None:
            return self.frame.module or (self.event.name if self.event else self.frame.where)
        return self.event.name if self.event else None

    @property
    def stepper_line(self) -> str:
        """Where the stepper is, in one line: `paused at transformer.h.1.mlp (in) #12 ·
        breakpoint`, `idle · pass finished after 40 events`, ..."""
        event, frame = self.event, self.frame
        if self.status == "paused" and frame is not None:
            text = f"paused at {frame.where} in {frame.function}"
            module = (frame.module or "").strip("()")  # the root is "(model)"; none in sampling
            text += f" ({module})" if module else ""
            if frame.reason != "breakpoint":
                return text
            if self.hit is not None and self.hit.error is not None:  # stopped anyway, as pdb
                kind = self.hit.error.partition(":")[0]
                return text + f" · breakpoint {self.hit.number}: its condition raised {kind}"
            # T stops at sampling's entry by itself: that stop is not a breakpoint of the user's.
            own = frame.function != "sample_next" or "sample_next" in self.line_breakpoints
            return text + (" · breakpoint" if own else " · sampling (T stops here)")
        if self.status == "paused" and event is not None:
            why = {"breakpoint": " · breakpoint", "watch": " · NaN/Inf appeared here"}
            text = f"paused at {event.name} ({event.phase}) #{event.index}"
            text += why.get(self.reason or "", "")
            return "non-finite: " + text if self.reason == "watch" else text
        if self.status == "finished":
            return f"idle · pass finished after {len(self.events)} events"
        if self.status == "aborted":
            return "idle · pass aborted"
        if self.run is not None:
            return f"idle · forward pass recorded {len(self.run.records)} probes"
        return "idle"


def assemble_state(
    move: int,
    message: str,
    cancelled: bool,
    probes: Probes,
    stepped: SteppedView,
    lines: LineView,
    interventions: tuple[str, ...],
    ablated_modules: tuple[str, ...],
    generation: GenerationView | None,
    attention: AttentionView | None,
    training: TrainingView | None,
    compare: CompareView | None,
    measures: MeasuresView | None,
    seq: int,
) -> DebugState:
    """The snapshot, from what the Debugger owns and its parts' views."""
    return DebugState(
        move=move,
        prompt=probes.prompt,
        status=stepped.status,
        event=stepped.event,
        reason=stepped.reason,
        events=stepped.events,
        stepping=stepped.stepping,
        run=stepped.run,
        previous_run=stepped.previous_run,
        message=message,
        breakpoints=probes.breakpoints,
        watch_nonfinite=probes.watch,
        leaves=probes.leaves,
        ablations=interventions,
        ablated_modules=ablated_modules,
        generation=generation,
        attention=attention,
        cancelled=cancelled,
        frame=stepped.frame,
        line_breakpoints=lines.breakpoints,
        evaluations=lines.evaluations,
        tensor_view=lines.tensor_view,
        line_table=lines.table,
        displays=lines.displays,
        hit=lines.hit,
        training=training,
        compare=compare,
        measures=measures,
        seq=seq,
    )
