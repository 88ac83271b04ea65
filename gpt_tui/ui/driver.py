"""The app's thin adapter to the Session: blocking calls, run only from thread workers.

Everything here is a call of the plain Python API (`gpt_tui.engine.session.Session`), so a
pane never shows what the CLI could not compute. The driver adds what an interactive app
needs on top: the engine lock (one engine call at a time), the open stepper and
generation between key presses, and frozen view records for the panes. Nothing here
touches a widget.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import describe_error

if TYPE_CHECKING:  # torch and the engine load in the worker, not at app import
    from ..engine.lens import LensResult
    from ..engine.sampling import Candidate, GenerationSession, SamplingStep
    from ..engine.session import ModelSpec, Session, Trace
    from ..engine.stepping import ForwardStepper
    from ..engine.summary import ModelSummary
    from ..engine.trace import AttentionPattern, ProbeRecord, StepEvent
    from ..engine.train_view import TrainView

# Tried in order; the first the tokenizer can encode is the default prompt.
PROMPT_CANDIDATES = ("ROMEO:", "The meaning of life is", "Hello", "\n")


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


@dataclass(frozen=True)
class GenerationSettings:
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0


@dataclass(frozen=True)
class GenerationView:
    """The generation so far: the prompt, each generated token's text, the last step."""

    prompt: str
    pieces: tuple[str, ...]  # decoded text of each generated token, in order
    step: SamplingStep | None  # the last step taken, None right after a reset
    cache_fill: tuple[int, int] | None
    cache_layers: tuple[tuple[tuple[int, ...], tuple[int, ...], int], ...]  # K, V shape, bytes
    settings: GenerationSettings
    next_candidates: tuple[Candidate, ...]  # what the model predicts for the next position
    next_kept: int  # tokens that survive top-k / top-p at the next position
    lens: LensResult | None = None  # the logit lens at the last position (the next token)
    lens_error: str | None = None  # why there is no lens (e.g. a model it cannot decode)

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
    token_ids: tuple[int, ...] = ()  # the input ids, one per token

    @classmethod
    def from_trace(cls, trace: Trace) -> RunResult:
        return cls(trace.prompt, trace.tokens, trace.records, trace.note, token_ids=trace.token_ids)

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


@dataclass(frozen=True)
class StepState:
    """Where the stepped forward pass is: paused at `event`, finished, or aborted."""

    status: str  # "paused", "finished" or "aborted"
    event: StepEvent | None  # the event paused at
    reason: str | None  # step, breakpoint or watch
    events: tuple[StepEvent, ...]  # every event so far, in order
    run: RunResult | None  # finished: the whole pass; paused: the records so far


class OpenError(Exception):
    """Opening the model failed for a reason the user can fix; the message is one line."""


def open_driver(spec: ModelSpec) -> Driver:
    """Open the model the spec names. User errors become `OpenError` with their message."""
    from ..engine.session import Session, SessionError
    from ..io.checkpoints import CheckpointError
    from ..io.tokenizers import TokenizerError
    from ..models.config import ConfigError

    try:
        session = Session.open(spec)
    except (SessionError, ConfigError, CheckpointError, TokenizerError) as err:
        raise OpenError(str(err)) from None
    return Driver(session, seed=spec.seed)


class Driver:
    """One open session and the engine objects the app drives (generation, stepper)."""

    def __init__(self, session: Session, seed: int = 0) -> None:
        self.session = session
        self._lock = threading.Lock()  # one engine call at a time
        self._generation: GenerationSession | None = None
        self._gen_key: tuple[str, GenerationSettings] | None = None
        self._default_seed = seed
        self._stepper: ForwardStepper | None = None
        self._step_prompt = ""
        self._step_tokens: tuple[str, ...] = ()
        self._ablations: dict[tuple[str, int | None], int] = {}
        # Aborting a running move: taken without the engine lock (see `request_abort`).
        self._abort_lock = threading.Lock()
        self._moving: ForwardStepper | None = None  # the stepper inside a move right now
        # Also probe (and stop at) every Linear, norm and activation: finer NaN hunting.
        self.leaf_probes = False

    # -- model ---------------------------------------------------------------------------

    def info(self) -> ModelInfo:
        with self._lock:
            s = self.session
            config = s.config

            def field(name: str, default: int = 0) -> int:
                value = getattr(config, name, default)
                return value if isinstance(value, int) else default

            n_head = field("n_head")
            return ModelInfo(
                name=s.name,
                family=s.family,
                source=s.source,
                device=str(s.device),
                dtype=str(s.dtype).removeprefix("torch."),
                summary=s.summary(),
                n_layer=field("n_layer"),
                n_head=n_head,
                n_kv_head=field("n_kv_head", n_head),
                n_embd=field("n_embd"),
                context_len=s.context_len,
                vocab_size=s.tokenizer.vocab_size,
                notes=tuple(s.notes),
                default_prompt=self._default_prompt(),
            )

    def _default_prompt(self) -> str:
        for text in PROMPT_CANDIDATES:
            try:
                if self.session.encode(text):
                    return text
            except Exception:  # the tokenizer rejects these characters: try the next
                continue
        return self.session.decode([0])

    def memory(self) -> dict[str, int]:
        # Read-only and cheap; deliberately not behind the engine lock.
        return self.session.memory()

    def close(self) -> None:
        self.request_abort()  # a running continue stops at its next module
        with self._lock:
            self._close_stepper()
            self.session.close()  # steppers, interventions: every hook the session added

    # -- forward passes --------------------------------------------------------------------

    def run(self, prompt: str) -> RunResult:
        """A whole recorded forward pass on the prompt (breakpoints do not apply)."""
        with self._lock:
            return RunResult.from_trace(self.session.trace(prompt, leaves=self.leaf_probes))

    def attention(self, prompt: str, layer: int) -> AttentionView:
        """The recomputed attention pattern of `layer` on the prompt."""
        with self._lock:
            trace = self.session.trace(prompt, attention_layers=[layer])
            return AttentionView(trace.prompt, trace.tokens, trace.patterns[layer])

    # -- stepping ------------------------------------------------------------------------

    def step(self, how: str, prompt: str, breakpoints: frozenset[str], watch: bool) -> StepState:
        """Advance the stepped pass (`into`, `over`, `out`, `continue`), starting one if
        none is under way; breakpoints and the watchpoint apply from this request on.
        `request_abort` from another thread ends the move early, as "aborted"."""
        with self._lock:
            stepper = self._stepper or self._new_stepper(prompt)
            stepper.breakpoints = sorted(breakpoints)
            stepper.watch_nonfinite = watch
            move = {
                "into": stepper.step_into,
                "over": stepper.step_over,
                "out": stepper.step_out,
                "continue": stepper.continue_,
            }[how]
            with self._abort_lock:
                self._moving = stepper
            try:
                event = move()
            except BaseException:
                self._close_stepper()
                raise
            finally:
                with self._abort_lock:
                    self._moving = None
            if stepper.aborted:  # `request_abort` unwound the pass mid-move
                return self._abort_locked()
            return self._state(stepper, event)

    @property
    def pass_open(self) -> bool:
        """A stepped pass is under way (paused). Read without the lock: for the app to
        bring its display in line after an engine call failed."""
        return self._stepper is not None

    def request_abort(self) -> bool:
        """Stop a move that is running now (a long `continue`); call from any thread.

        Does not wait for the engine lock: the pass unwinds at its next probe and `step`
        returns the "aborted" state. False when no move is running (abort the paused
        pass instead).
        """
        with self._abort_lock:
            stepper = self._moving
            if stepper is None:
                return False
            stepper.request_abort()
            return True

    def abort(self) -> StepState:
        with self._lock:
            return self._abort_locked()

    def set_leaf_probes(self, on: bool) -> StepState | None:
        """Probe leaves (Linear, norms, activations) from the next pass on. A paused pass
        was probed the other way, so it ends: its "aborted" state, or None if none was."""
        with self._lock:
            self.leaf_probes = on
            return self._abort_locked() if self._stepper is not None else None

    def current_step(self) -> StepState | None:
        """The paused pass's state, None when no pass is under way."""
        with self._lock:
            stepper = self._stepper
            if stepper is None or stepper.current is None:
                return None
            return self._state(stepper, stepper.current)

    def _new_stepper(self, prompt: str) -> ForwardStepper:
        from ..engine.sampling import token_label

        ids, _ = self.session.prompt_ids(prompt)
        self._stepper = stepper = self.session.stepper(ids, leaves=self.leaf_probes)
        self._step_prompt = prompt
        self._step_tokens = tuple(token_label(self.session.tokenizer, i) for i in ids)
        return stepper

    def _state(
        self,
        stepper: ForwardStepper,
        event: StepEvent | None,
    ) -> StepState:
        events = tuple(stepper.events)
        records = tuple(stepper.probes.records)  # flushed at every pause and at the end
        if event is None:
            outs = tuple(r for r in records if r.phase == "out")
            run = RunResult(self._step_prompt, self._step_tokens, outs)
            self._close_stepper()
            return StepState("finished", None, None, events, run)
        paused = next(
            (
                i
                for i in range(len(records) - 1, -1, -1)
                if records[i].name == event.name and records[i].phase == event.phase
            ),
            None,
        )
        so_far = RunResult(self._step_prompt, self._step_tokens, records, paused=paused)
        return StepState("paused", event, stepper.reason, events, so_far)

    def _abort_locked(self) -> StepState:
        events = tuple(self._stepper.events) if self._stepper else ()
        self._close_stepper()
        return StepState("aborted", None, None, events, None)

    def _close_stepper(self) -> None:
        if self._stepper is not None:
            self.session.release(self._stepper)
            self._stepper = None

    def _rerun_stepper(self) -> None:
        """Recreate the paused pass and step it to the same event.

        Interventions hook module outputs; probes only see a replaced output if their
        hooks come after the intervention's, so a stepper made before an ablation changed
        would show the old values.
        """
        old = self._stepper
        if old is None:
            return
        target = old.current.index if old.current is not None else -1
        breakpoints, watch = list(old.breakpoints), old.watch_nonfinite
        self._close_stepper()
        stepper = self._new_stepper(self._step_prompt)
        event = None
        while target >= 0 and (event is None or event.index < target):
            event = stepper.step_into()
            if event is None:  # cannot happen for the same model; leave nothing half-done
                self._close_stepper()
                return
        stepper.breakpoints, stepper.watch_nonfinite = breakpoints, watch

    # -- interventions -------------------------------------------------------------------

    def toggle_ablation(self, module: str, kind: str, head: int | None) -> tuple[str, ...]:
        """Ablate the attention head / MLP at `module`, or undo it; the active list.
        A paused pass is re-run to where it was, with the new interventions."""
        from ..engine.interventions import HeadScale, OutputScale

        with self._lock:
            interventions = self.session.interventions
            key = (module, head if kind == "attn" else None)
            if key in self._ablations:
                interventions.remove(self._ablations.pop(key))
            else:
                spec = HeadScale(module, head or 0) if kind == "attn" else OutputScale(module)
                self._ablations[key] = interventions.add(spec)
            if self._generation is not None:
                self._generation.drop_cache()  # cached keys/values describe the old model
            self._rerun_stepper()
            return tuple(spec.description for spec in interventions.active)

    @property
    def ablated_modules(self) -> tuple[str, ...]:
        """The modules with an ablation on them (an MLP, or an attention with a head)."""
        return tuple(sorted({path for path, _ in self._ablations}))

    # -- training view -------------------------------------------------------------------

    def train_view(self, prompt: str) -> TrainView:
        with self._lock:
            return self.session.train_view(prompt)

    # -- generation ----------------------------------------------------------------------

    def _view(self) -> GenerationView:
        gen = self._generation
        assert gen is not None and self._gen_key is not None
        prompt, settings = self._gen_key
        pieces = tuple(self.session.decode([i]) for i in gen.ids[len(gen.prompt_ids) :])
        steps = gen.steps
        candidates, kept = gen.peek()
        lens, lens_error = None, None
        try:
            lens = self.session.lens(gen.ids, k=1)  # the next token, as each layer reads it
        except Exception as err:  # e.g. a user's model the lens cannot decode
            lens_error = describe_error(err)
        return GenerationView(
            prompt=prompt,
            pieces=pieces,
            step=steps[-1] if steps else None,
            cache_fill=gen.cache_fill,
            cache_layers=gen.cache_layers(),
            settings=settings,
            next_candidates=candidates,
            next_kept=kept,
            lens=lens,
            lens_error=lens_error,
        )

    def generation_view(self) -> GenerationView | None:
        """The open generation seen again: its next-token candidates and lens recomputed
        (after interventions changed), None when nothing is being generated."""
        with self._lock:
            return self._view() if self._generation is not None else None

    def reset_generation(self, prompt: str, settings: GenerationSettings) -> GenerationView:
        """Start generating from `prompt` with `settings` (a fresh seeded generator)."""
        with self._lock:
            self._generation = self.session.generation(
                prompt,
                temperature=settings.temperature,
                top_k=settings.top_k,
                top_p=settings.top_p,
                seed=settings.seed,
            )
            self._gen_key = (prompt, settings)
            return self._view()

    def generate(
        self,
        prompt: str,
        settings: GenerationSettings,
        n: int = 1,
        force_token: int | None = None,
    ) -> GenerationView:
        """Take `n` steps (or one forced step). A new prompt or new settings start over."""
        if self._gen_key != (prompt, settings):
            self.reset_generation(prompt, settings)
        with self._lock:
            gen = self._generation
            assert gen is not None
            if force_token is not None:
                gen.step(force_token=force_token)
            else:
                gen.run(n)
            return self._view()


__all__ = [
    "Driver",
    "GenerationSettings",
    "GenerationView",
    "ModelInfo",
    "OpenError",
    "describe_error",
    "open_driver",
]
