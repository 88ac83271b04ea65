"""The app's thin adapter to the engine: blocking calls, run only from thread workers.

Every method takes the engine lock (one engine call at a time), talks to the Session and
the engine modules, and returns frozen records of plain CPU data for the panes. Nothing
here touches a widget. Glue that belongs in `Session` lives here until it moves there.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and the engine load in the worker, not at app import
    from ..engine.sampling import Candidate, GenerationSession, SamplingStep
    from ..engine.session import ModelSpec, Session
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
    settings: GenerationSettings
    next_candidates: tuple[Candidate, ...]  # what the model predicts for the next position
    next_kept: int  # tokens that survive top-k / top-p at the next position

    @property
    def text(self) -> str:
        return self.prompt + "".join(self.pieces)


@dataclass(frozen=True)
class RunResult:
    """One recorded forward pass: every probe's output in execution order."""

    prompt: str
    tokens: tuple[str, ...]  # one printable label per input token
    records: tuple[ProbeRecord, ...]  # phase "out" only, in execution order

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Output shape per probe name, plus `tokens` (the input ids' shape)."""
        out = {r.name: r.shape for r in self.records}
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
    run: RunResult | None  # the finished pass, when status is "finished"


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
        self._lock = threading.Lock()
        self._generation: GenerationSession | None = None
        self._gen_key: tuple[str, GenerationSettings] | None = None
        self._default_seed = seed
        self._stepper: ForwardStepper | None = None
        self._ablations: dict[tuple[str, int | None], int] = {}
        self._interventions = None

    # -- model ---------------------------------------------------------------------------

    def info(self) -> ModelInfo:
        from ..engine.probes import find_probe_points
        from ..engine.summary import summarize

        with self._lock:
            s = self.session
            config = s.config
            # The tree marks what the probes see (blocks, attention, MLP, ...) by kind.
            kinds = {p.name: p.kind for p in find_probe_points(s.model) if not p.virtual}
            summary = summarize(s.model, s.family, kinds)

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
                summary=summary,
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
        with self._lock:
            self._close_stepper()
            if self._interventions is not None:
                self._interventions.clear()
            self.session.close()

    # -- forward passes --------------------------------------------------------------------

    def _ids(self, prompt: str):
        import torch

        ids = self.session.encode(prompt)
        if not ids:
            raise ValueError("the prompt is empty: type at least one token")
        ctx = self.session.context_len
        ids = ids[-ctx:] if ctx else ids
        return torch.tensor([ids], dtype=torch.long, device=self.session.device)

    def _labels(self, idx) -> tuple[str, ...]:
        from ..engine.sampling import token_label

        return tuple(token_label(self.session.tokenizer, int(i)) for i in idx[0].tolist())

    def run(self, prompt: str) -> RunResult:
        """A whole recorded forward pass on the prompt (breakpoints do not apply)."""
        from ..engine.probes import Probes

        with self._lock:
            idx = self._ids(prompt)
            with Probes(self.session.model) as probes:
                probes.run(idx)
                probes.flush()
                records = probes.records
            outs = tuple(r for r in records if r.phase == "out")
            return RunResult(prompt, self._labels(idx), outs)

    def attention(self, prompt: str, layer: int) -> AttentionView:
        """The recomputed attention pattern of `layer` on the prompt."""
        from ..engine.probes import Probes

        with self._lock:
            idx = self._ids(prompt)
            with Probes(self.session.model, attention_layers=[layer]) as probes:
                probes.run(idx)
                pattern = probes.pattern(layer)
            return AttentionView(prompt, self._labels(idx), pattern)

    # -- stepping ------------------------------------------------------------------------

    def step(self, how: str, prompt: str, breakpoints: frozenset[str], watch: bool) -> StepState:
        """Advance the stepped pass (`into`, `over`, `out`, `continue`), starting one if
        none is under way; breakpoints and the watchpoint apply from this request on."""
        from ..engine.stepping import ForwardStepper

        with self._lock:
            stepper = self._stepper
            if stepper is None:
                stepper = ForwardStepper(self.session.model, self._ids(prompt))
                self._stepper = stepper
            stepper.breakpoints = sorted(breakpoints)
            stepper.watch_nonfinite = watch
            move = {
                "into": stepper.step_into,
                "over": stepper.step_over,
                "out": stepper.step_out,
                "continue": stepper.continue_,
            }[how]
            try:
                event = move()
            except BaseException:
                self._close_stepper()
                raise
            events = tuple(stepper.events)
            if event is None:
                run = RunResult(
                    prompt,
                    self._labels(stepper.idx),
                    tuple(r for r in stepper.probes.records if r.phase == "out"),
                )
                self._close_stepper()
                return StepState("finished", None, None, events, run)
            return StepState("paused", event, stepper.reason, events, None)

    def abort(self) -> StepState:
        with self._lock:
            events = tuple(self._stepper.events) if self._stepper else ()
            self._close_stepper()
            return StepState("aborted", None, None, events, None)

    def _close_stepper(self) -> None:
        if self._stepper is not None:
            self._stepper.close()
            self._stepper = None

    # -- interventions -------------------------------------------------------------------

    def toggle_ablation(self, module: str, kind: str, head: int | None) -> tuple[str, ...]:
        """Ablate the attention head / MLP at `module`, or undo it; the active list."""
        from ..engine.interventions import HeadScale, Interventions, OutputScale

        with self._lock:
            if self._interventions is None:
                self._interventions = Interventions(self.session.model)
            key = (module, head if kind == "attn" else None)
            if key in self._ablations:
                self._interventions.remove(self._ablations.pop(key))
            else:
                spec = HeadScale(module, head or 0) if kind == "attn" else OutputScale(module)
                self._ablations[key] = self._interventions.add(spec)
            if self._generation is not None:
                self._generation.drop_cache()  # cached keys/values describe the old model
            return tuple(spec.description for spec in self._interventions.active)

    # -- training view -------------------------------------------------------------------

    def train_view(self, prompt: str) -> TrainView:
        from ..engine.train_view import train_view

        with self._lock:
            return train_view(self.session.model, self.session.encode(prompt))

    # -- generation ----------------------------------------------------------------------

    def _view(self) -> GenerationView:
        gen = self._generation
        assert gen is not None and self._gen_key is not None
        prompt, settings = self._gen_key
        pieces = tuple(self.session.decode([i]) for i in gen.ids[len(gen.prompt_ids) :])
        steps = gen.steps
        candidates, kept = self._peek(gen)
        return GenerationView(
            prompt=prompt,
            pieces=pieces,
            step=steps[-1] if steps else None,
            cache_fill=gen.cache_fill,
            settings=settings,
            next_candidates=candidates,
            next_kept=kept,
        )

    def _peek(self, gen: GenerationSession) -> tuple[tuple[Candidate, ...], int]:
        """The next position's top candidates, without drawing from the seeded generator.

        One full forward over the context window; the generation's own KV cache is left
        alone, so the next real step is unaffected.
        """
        import torch

        from ..engine.sampling import (
            TOP_CANDIDATES,
            Candidate,
            last_position_logits,
            token_label,
        )
        from ..models.sampling import filter_logits

        window = gen.ids[-gen.context_len :] if gen.context_len else gen.ids
        idx = torch.tensor([window], dtype=torch.long, device=gen.device)
        with torch.inference_mode():
            logits = last_position_logits(self.session.model(idx)).float().cpu()
        scaled = logits if gen.temperature == 0 else logits / gen.temperature
        filtered = filter_logits(scaled, gen.top_k, gen.top_p)
        probs = torch.softmax(filtered, dim=-1)
        kept = int(torch.isfinite(filtered).sum())
        top = torch.topk(filtered, min(TOP_CANDIDATES, kept)).indices.tolist()
        raw, p = logits.tolist(), probs.tolist()
        tok = self.session.tokenizer
        candidates = tuple(Candidate(i, token_label(tok, i), raw[i], p[i]) for i in top)
        return candidates, kept

    def reset_generation(self, prompt: str, settings: GenerationSettings) -> GenerationView:
        """Start generating from `prompt` with `settings` (a fresh seeded generator)."""
        from ..engine.sampling import GenerationSession

        with self._lock:
            ids = self.session.encode(prompt)
            self._generation = GenerationSession(
                self.session.model,
                self.session.tokenizer,
                ids,
                temperature=settings.temperature,
                top_k=settings.top_k,
                top_p=settings.top_p,
                seed=settings.seed,
                context_len=self.session.context_len,
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


def describe_error(err: BaseException) -> str:
    """One line for a failure the user should see, without a traceback."""
    text = str(err).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


__all__ = [
    "Driver",
    "GenerationSettings",
    "GenerationView",
    "ModelInfo",
    "OpenError",
    "describe_error",
    "open_driver",
]
