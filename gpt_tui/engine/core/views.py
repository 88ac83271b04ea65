"""What the Debugger's snapshots are made of, computed from the session's live objects.

Each function reads a live object (the session, a stepper, a generation) once and
returns frozen data; none keeps a reference to what it read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ...errors import describe_error
from ...io.tokenizers import describe_tokenizer
from ..generation.sampling import token_label
from .debug_state import GenerationSettings, GenerationView, ModelInfo, RunResult

if TYPE_CHECKING:
    from ..generation.sampling import GenerationSession
    from .session import Session, Trace
    from .stepping import ForwardStepper

# Tried in order; the first the tokenizer can encode is the default prompt.
PROMPT_CANDIDATES = ("ROMEO:", "The meaning of life is", "Hello", "\n")


def default_prompt(session: Session) -> str:
    for text in PROMPT_CANDIDATES:
        try:
            if session.encode(text):
                return text
        except Exception:  # the tokenizer rejects these characters: try the next
            continue
    return session.decode([0])


def model_info(session: Session) -> ModelInfo:
    """What the status bar, tree, params and diagram panes show about the open model."""
    config = session.config

    def field(name: str, default: int = 0) -> int:
        value = getattr(config, name, default)
        return value if isinstance(value, int) else default

    n_head = field("n_head")
    return ModelInfo(
        name=session.name,
        family=session.family,
        source=session.source,
        device=str(session.device),
        dtype=str(session.dtype).removeprefix("torch."),
        summary=session.summary(),
        n_layer=field("n_layer"),
        n_head=n_head,
        n_kv_head=field("n_kv_head", n_head),
        n_embd=field("n_embd"),
        context_len=session.context_len,
        vocab_size=session.tokenizer.vocab_size,
        notes=tuple(session.notes),
        default_prompt=default_prompt(session),
        tokenizer=describe_tokenizer(session.tokenizer, session.info.get("tokenizer_source")),
    )


def run_from_trace(trace: Trace) -> RunResult:
    return RunResult(
        trace.prompt,
        trace.tokens,
        trace.records,
        trace.note,
        token_ids=trace.token_ids,
        next_tokens=trace.next_tokens,
        # Plain data: the patterns asked for, computed now (no live q/k/v, no cache).
        patterns={layer: trace.patterns[layer] for layer in trace.patterns},
    )


def stepped_run(
    stepper: ForwardStepper,
    session: Session,
    prompt: str,
    ids: Sequence[int],
    finished: bool = False,
) -> RunResult:
    """A stepped pass's records: while paused, every record so far ("in" rows too) with
    the paused one marked; once finished, the outputs, as a whole run records them."""
    records = tuple(stepper.probes.records)  # flushed at every pause and at the end
    tokens = tuple(token_label(session.tokenizer, i) for i in ids)
    if finished:
        outs = tuple(r for r in records if r.phase == "out")
        return RunResult(prompt, tokens, outs, token_ids=tuple(ids))
    event = stepper.current
    paused = next(
        (
            i
            for i in range(len(records) - 1, -1, -1)
            if event is not None
            and (records[i].name, records[i].phase) == (event.name, event.phase)
        ),
        None,
    )
    return RunResult(prompt, tokens, records, paused=paused, token_ids=tuple(ids))


def generation_view(
    session: Session,
    gen: GenerationSession | None,
    prompt: str,
    settings: GenerationSettings,
    peek: bool = True,
) -> GenerationView:
    """The generation so far, with the next token's candidates and logit lens; without
    `peek` (progress during N steps), the last step's candidates and no lens."""
    assert gen is not None
    pieces = tuple(session.decode([i]) for i in gen.ids[len(gen.prompt_ids) :])
    lens, lens_error = None, None
    if peek or not gen.steps:
        candidates, kept = gen.peek()
        try:
            lens = session.lens(gen.ids, k=1)  # the next token, as each layer reads it
        except Exception as err:  # e.g. a user's model the lens cannot decode
            lens_error = describe_error(err)
    else:
        last = gen.steps[-1]
        candidates, kept = last.candidates, last.kept
        lens_error = "the lens follows when the run stops"
    return GenerationView(
        prompt=prompt,
        pieces=pieces,
        steps=tuple(gen.steps),
        cache_fill=gen.cache_fill,
        cache_layers=gen.cache_layers(),
        settings=settings,
        next_candidates=candidates,
        next_kept=kept,
        lens=lens,
        lens_error=lens_error,
    )


def unpeeked_generation_view(
    session: Session,
    gen: GenerationSession,
    prompt: str,
    settings: GenerationSettings,
    why: str,
) -> GenerationView:
    """The generation as it is, without running the model: no candidates for the next
    token (`why` says when they come). True at once, e.g. right after the model changed."""
    return GenerationView(
        prompt=prompt,
        pieces=tuple(session.decode([i]) for i in gen.ids[len(gen.prompt_ids) :]),
        steps=tuple(gen.steps),
        cache_fill=gen.cache_fill,
        cache_layers=gen.cache_layers(),
        settings=settings,
        next_candidates=(),
        next_kept=0,
        lens_error=why,
    )
