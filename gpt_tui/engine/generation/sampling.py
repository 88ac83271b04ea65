"""Generation laid open: one frozen `SamplingStep` per token.

The numbers come from the one sampling pipeline, `gpt_tui.models.sampling.sample_next`
(logits -> /temperature -> top-k -> top-p -> softmax -> token), and the loop mirrors
`gpt_tui.models.sampling.generate` step for step: the same context cropping, the same KV
cache refills, the same draws from the same seeded CPU generator. So what the generation
pane shows is exactly what `generate` would have produced.

Models loaded from a user's own file may have no `make_kv_cache` and may return logits
alone, `(logits, loss)`, or last-position logits; generation then recomputes the whole
context every step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from gpt_tui.models.sampling import SamplingResult, filter_logits, make_generator, sample_next

from ...errors import GptTuiError
from ..core.model_access import (
    crop_to_context,
    last_position_logits,
    model_context_len,
    model_device,
    usable_vocab_size,
)
from ..core.stats import to_host

TOP_CANDIDATES = 10


class Tokenizer(Protocol):
    """What the engine needs of a tokenizer (`token_str` is optional: see `token_label`)."""

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class GenerationError(GptTuiError, ValueError):
    """Generation cannot start or continue as asked; the message says why."""


class TokenOutOfRangeError(GenerationError):
    """A prompt or forced token id that the vocabulary does not have."""


@dataclass(frozen=True)
class Candidate:
    """One of the most likely next tokens."""

    token_id: int
    label: str
    logit: float  # raw last-position logit, before temperature
    prob: float  # probability after temperature and filtering (0 when filtered out)


@dataclass(frozen=True)
class SamplingStep:
    """Everything that went into choosing one token."""

    index: int  # 0 for the first generated token
    position: int  # where the chosen token lands in the whole sequence
    context_len: int  # tokens the model saw for this prediction (after cropping)
    computed: int  # positions this forward pass computed (1 with a warm KV cache)
    candidates: tuple[Candidate, ...]  # the top tokens that survived filtering, best first
    kept: int  # how many tokens survived top-k / top-p
    temperature: float
    top_k: int | None
    top_p: float | None
    greedy: bool  # temperature 0: argmax; probabilities then shown at temperature 1
    token_id: int
    token_label: str
    token_prob: float  # probability of the chosen token (0 if forced outside the filter)
    forced: bool  # chosen by the user, not sampled
    cache_fill: tuple[int, int] | None  # KV cache (used, max) after this step, None if no cache
    entropy: float  # of the filtered distribution, in nats
    note: str | None = None  # cropping, cache refills: anything the user should be told


def token_label(tokenizer: Tokenizer, token_id: int) -> str:
    """A printable one-token label: the tokenizer's `token_str`, else its escaped decode.

    Ids beyond the tokenizer's vocabulary (models pad theirs, e.g. 50304 for GPT-2's
    50257) get `<id>` instead of an error, because an untrained model may sample them.
    """
    if not 0 <= token_id < tokenizer.vocab_size:
        return f"<{token_id}>"
    token_str = getattr(tokenizer, "token_str", None)
    if token_str is not None:
        return token_str(token_id)
    return repr(tokenizer.decode([token_id]))[1:-1]


def decode_ids(tokenizer: Tokenizer, ids: Sequence[int]) -> str:
    """Decode ids to text, writing ids beyond the tokenizer's vocabulary as `<id>`.

    A model with a padded vocabulary can sample such ids; the text must still show.
    """
    parts: list[str] = []
    run: list[int] = []
    for i in ids:
        if 0 <= i < tokenizer.vocab_size:
            run.append(i)
            continue
        if run:
            parts.append(tokenizer.decode(run))
            run = []
        parts.append(f"<{i}>")
    if run:
        parts.append(tokenizer.decode(run))
    return "".join(parts)


def check_token_ids(ids: Sequence[int], vocab_size: int, what: str = "token id") -> None:
    """Raise `TokenOutOfRangeError` naming the first id outside 0..vocab_size-1."""
    for i in ids:
        if not 0 <= int(i) < vocab_size:
            raise TokenOutOfRangeError(
                f"{what} {int(i)} is out of range: the vocabulary has {vocab_size} tokens "
                f"(0-{vocab_size - 1})"
            )


def check_sampling_settings(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Reject settings the pipeline would otherwise ignore silently or divide by."""
    if not temperature >= 0:  # also catches NaN
        raise GenerationError(f"temperature={temperature}: must be >= 0 (0 is greedy)")
    if top_k is not None and top_k <= 0:
        raise GenerationError(f"top_k={top_k}: must be a positive number of tokens, or None")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise GenerationError(f"top_p={top_p}: must be in (0, 1], or None")


class GenerationSession:
    """Generate one token at a time and keep the record of each step.

    The loop is `gpt_tui.models.sampling.generate` unrolled: same cropping, same cache
    refills, same generator draws, hence exactly the same tokens for the same settings.
    A forced token does not draw from the generator, so a replay with the same forced
    tokens at the same steps gives the same run.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Tokenizer,
        prompt_ids: Sequence[int],
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        use_kv_cache: bool = True,
        context_len: int | None = None,
    ) -> None:
        check_sampling_settings(temperature, top_k, top_p)
        self.model = model
        self.tokenizer = tokenizer
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p
        self.seed = seed
        self.context_len = context_len or model_context_len(model)
        self.vocab_size = usable_vocab_size(model, tokenizer)
        self.device = model_device(model)
        # Our families build their own cache; a user's model without one recomputes.
        has_cache = use_kv_cache and hasattr(model, "make_kv_cache")
        self._cache = (
            model.make_kv_cache(batch_size=1, max_len=self.context_len) if has_cache else None
        )
        self.reset(prompt_ids)

    def reset(self, prompt_ids: Sequence[int] | None = None) -> None:
        """Start again from the prompt (a new one if given), with a fresh seeded generator."""
        if prompt_ids is not None:
            prompt = [int(i) for i in prompt_ids]
            if not prompt:
                raise GenerationError(
                    "the prompt is empty: generation needs at least one token to start from "
                    "(nanoGPT's sample.py starts from a newline)"
                )
            check_token_ids(prompt, self.vocab_size, "prompt token id")
            self.prompt_ids = prompt
        self._ids = list(self.prompt_ids)
        self._generator = make_generator(self.seed)
        if self._cache is not None:
            self._cache.reset()
        self._pending, self._note = crop_to_context(self._ids, self.context_len)
        self._steps: list[SamplingStep] = []

    @property
    def ids(self) -> list[int]:
        """Prompt and generated tokens so far."""
        return list(self._ids)

    @property
    def text(self) -> str:
        return decode_ids(self.tokenizer, self._ids)

    @property
    def steps(self) -> list[SamplingStep]:
        return list(self._steps)

    @property
    def pending(self) -> list[int]:
        """The ids the next step's forward computes (the new token with a warm cache)."""
        return list(self._pending)

    @property
    def cache_fill(self) -> tuple[int, int] | None:
        """(positions used, positions available) of the KV cache, None without a cache."""
        return None if self._cache is None else (self._cache.used, self._cache.max_len)

    def cache_layers(self) -> tuple[tuple[tuple[int, ...], tuple[int, ...], int], ...]:
        """Per layer: the KV cache's key shape, value shape and bytes, as allocated for all
        its positions (`cache_fill` says how many are used); () without our cache."""
        cache = self._cache
        if not isinstance(getattr(cache, "k", None), torch.Tensor):
            return ()
        return tuple(
            (tuple(k.shape), tuple(v.shape), k.nbytes + v.nbytes)
            for k, v in zip(cache.k, cache.v, strict=True)
        )

    def step(self, force_token: int | None = None) -> SamplingStep:
        """Predict the next token, sample it (or take `force_token`), append it; its record.

        A step that raises or is unwound (a stepped token aborted at a line of its
        sampling) leaves the run as it was: no token, the generator's state put back.
        """
        if force_token is not None:
            check_token_ids([force_token], self.vocab_size, "forced token id")
        generator_state, note = self._generator.get_state(), self._note
        try:
            return self._step(force_token)
        except BaseException:
            self._generator.set_state(generator_state)
            self._note = note
            self.drop_cache()  # the cache may hold this failed pass: recompute next time
            raise

    def _step(self, force_token: int | None) -> SamplingStep:
        note, self._note = self._note, None  # the prompt's crop note goes on the first step
        cache = self._cache
        if cache is not None and cache.used + len(self._pending) > cache.max_len:
            cache.reset()  # the sequence outgrew the context: refill from its last window
            self._pending, crop = crop_to_context(self._ids, self.context_len, what="sequence")
            note = _join(note, crop and f"{crop}; KV cache refilled")
        elif cache is None:
            self._pending, crop = crop_to_context(self._ids, self.context_len, what="sequence")
            if self._steps:
                note = _join(note, crop)
        computed = len(self._pending)
        idx = torch.tensor([self._pending], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            output = self.model(idx) if cache is None else self.model(idx, kv_cache=cache)
            # The step's one read: the last position's logits, and the stats of the probes
            # on this pass riding along; the rest runs on the host.
            (logits,) = to_host(last_position_logits(output).detach().float())
            if not torch.isfinite(logits).all():
                raise GenerationError(
                    f"the model's logits at position {len(self._ids) - 1} contain NaN or "
                    "Inf; run the forward with the NaN watchpoint to find the module"
                )
        generator = self._generator if force_token is None else _scratch_generator()
        result = sample_next(logits, self.temperature, self.top_k, self.top_p, generator)
        token = result.token if force_token is None else int(force_token)
        record = self._record(result, token, force_token is not None, computed, note)
        self._ids.append(token)
        self._pending = [token]
        self._steps.append(record)
        return record

    def peek(self) -> tuple[tuple[Candidate, ...], int]:
        """The next position's top candidates and how many tokens survive filtering,
        without drawing from the seeded generator or touching the KV cache.

        One full forward over the context window, so the next real step is unaffected.
        """
        idx = torch.tensor([self._window()], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            logits = last_position_logits(self.model(idx)).float().cpu()
        scaled = logits if self.temperature == 0 else logits / self.temperature
        filtered = filter_logits(scaled, self.top_k, self.top_p)
        probs = torch.softmax(filtered, dim=-1)
        kept = int(torch.isfinite(filtered).sum())
        top = torch.topk(filtered, min(TOP_CANDIDATES, kept)).indices.tolist()
        raw, p = logits.tolist(), probs.tolist()
        candidates = tuple(Candidate(i, token_label(self.tokenizer, i), raw[i], p[i]) for i in top)
        return candidates, kept

    def drop_cache(self) -> None:
        """Make the next step recompute the whole context, e.g. after interventions changed.

        Keys and values cached before an intervention was added or removed describe the
        old model; keeping them would mix the two.
        """
        if self._cache is not None:
            self._cache.reset()
        self._pending = self._window()

    def run(self, n: int) -> list[SamplingStep]:
        """Take `n` sampled steps; returns their records."""
        if n < 0:
            raise GenerationError(f"cannot generate {n} tokens: give a number >= 0")
        return [self.step() for _ in range(n)]

    def _window(self) -> list[int]:
        """The tokens the model may see: the last `context_len`, as nanoGPT crops."""
        return crop_to_context(self._ids, self.context_len)[0]

    def _record(
        self, result: SamplingResult, token: int, forced: bool, computed: int, note: str | None
    ) -> SamplingStep:
        probs = result.probs
        kept = int(torch.isfinite(result.filtered).sum())
        n_top = min(TOP_CANDIDATES, kept)
        top = torch.topk(result.filtered, n_top).indices
        # Only the rows shown leave the tensors (a vocabulary of 50k would cost ms a step).
        shown = top.tolist()
        raw, prob_list = result.logits[top].tolist(), probs[top].tolist()
        candidates = tuple(
            Candidate(i, token_label(self.tokenizer, i), logit, p)
            for i, logit, p in zip(shown, raw, prob_list, strict=True)
        )
        return SamplingStep(
            index=len(self._steps),
            position=len(self._ids),
            context_len=min(len(self._ids), self.context_len or len(self._ids)),
            computed=computed,
            candidates=candidates,
            kept=kept,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            greedy=result.greedy,
            token_id=token,
            token_label=token_label(self.tokenizer, token),
            token_prob=float(probs[token]),
            forced=forced,
            cache_fill=self.cache_fill,
            entropy=float(torch.special.entr(probs).sum()),
            note=note,
        )


def _join(a: str | None, b: str | None) -> str | None:
    return "; ".join(s for s in (a, b) if s) or None


def _scratch_generator() -> torch.Generator:
    # Forced steps still run the pipeline for the probabilities shown, but must leave the
    # seeded generator untouched; this one's draw is discarded.
    return make_generator(0)


def generate_steps(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    prompt: str | Sequence[int],
    n: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    use_kv_cache: bool = True,
) -> list[SamplingStep]:
    """Generate `n` tokens from a prompt (text or ids) and return the step log, for the CLI."""
    ids = tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
    session = GenerationSession(
        model, tokenizer, ids, temperature, top_k, top_p, seed, use_kv_cache
    )
    return session.run(n)
