"""The Debugger's comparison intents: diff the open run against a run B, patch from the
prompt into a corrupted one, attribute a logit. Each result is the snapshot's `compare`.

B is the open model and prompt with changes (`BSpec`): another prompt, dtype, checkpoint,
model file (on A's checkpoint unless B names its own), or KV-cached decoding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch.nn as nn

from ...errors import GptTuiError, describe_error
from ...io.compute_dtype import own_compute_dtype
from ..core.debug_state import CompareView
from ..core.model_access import crop_to_context
from ..core.model_copy import dtype_copy
from .attribution import attribute
from .compare import CompareError, Run, compare
from .patching import Patcher, PatchError, What, one_token

if TYPE_CHECKING:
    from ..core.runner import MoveRunner
    from ..core.session import ModelSpec, Session
    from ..generation.sampling import GenerationSession


@dataclass(frozen=True)
class BSpec:
    """Run B: the open run with these changes (None / False: as A)."""

    prompt: str | None = None
    dtype: str | None = None
    checkpoint: str | None = None
    model_file: str | None = None
    kv_cache: bool = False
    device: str | None = None
    overrides: tuple[str, ...] = ()  # `--set KEY=VALUE` for B's config

    @property
    def opens(self) -> bool:
        """B is opened afresh (its own weights, code, device or config), not A's model."""
        return bool(self.checkpoint or self.model_file or self.device or self.overrides)

    @property
    def label(self) -> str:
        parts = [
            f"prompt {self.prompt!r}" if self.prompt is not None else "",
            self.dtype or "",
            f"checkpoint {Path(self.checkpoint).name}" if self.checkpoint else "",
            f"model file {Path(self.model_file).name}" if self.model_file else "",
            "KV cache" if self.kv_cache else "",
            f"on {self.device}" if self.device else "",
            " ".join(self.overrides),
        ]
        return ", ".join(p for p in parts if p) or "the same run"


def a_checkpoint(session: Session) -> Path:
    """The checkpoint the open model came from, for a B that runs it in another file."""
    from ..core.session import samples_dir

    kind, _, where = session.source.partition(" ")
    if kind == "checkpoint":
        return Path(where)
    if kind == "sample":
        return samples_dir() / where
    raise CompareError(
        "B's model file needs weights: A is a random init, so give B a checkpoint too"
    )


class Comparison:
    """The Debugger's comparison part: it owns the last diff, sweep or attribution. The
    Debugger passes in what it owns (the prompt, the runner's cancel checks)."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._view: CompareView | None = None

    def view(self) -> CompareView | None:
        return self._view

    def _open_b(self, b: BSpec, check: Callable[[], None]) -> tuple[Session | None, nn.Module]:
        """B's session (None when B is A's model) and its model; `check` runs between
        the tensors of a dtype copy."""
        from ..core.session import Session

        a = self._session
        try:
            if b.opens:
                opened = Session.open(b_model_spec(a, b))
                return opened, opened.model
            if b.dtype:
                from ..core.session import resolve_dtype

                return None, dtype_copy(a.model, resolve_dtype(b.dtype), check)
        except (GptTuiError, FileNotFoundError) as err:
            raise CompareError(f"run B cannot be opened: {describe_error(err)}") from None
        return None, a.model

    def diff(self, prompt: str, b: BSpec, leaves: bool, runner: MoveRunner, mid: int) -> str:
        """Diff `prompt`'s run against run B, probe by probe; the message to show."""
        a = self._session
        ids_a, crop_a = a.prompt_ids(prompt)
        opened, model_b = self._open_b(b, runner.check(mid))
        try:
            source = opened or a
            ids_b, crop_b = source.prompt_ids(b.prompt if b.prompt is not None else prompt)
            crops = _crop_notes(crop_a, crop_b)
            own = model_b is not a.model  # A's blocks check already
            # B is A's model copied in b.dtype: a nanochat gpt.py runs it in its own dtype
            dtype = next(model_b.parameters()).dtype if own and opened is None else None
            with (
                runner.cancellable_model(model_b) if own else nullcontext(),
                own_compute_dtype(model_b, dtype) if dtype is not None else nullcontext(),
                _cropped(crops),
            ):
                result = compare(
                    Run(a.model, ids_a, tokens=_labels(a, ids_a)),
                    Run(
                        model_b,
                        ids_b,
                        kv_cache=b.kv_cache,
                        label="B",
                        tokens=_labels(source, ids_b),
                    ),
                    leaves=leaves,
                )
        finally:
            if opened is not None:
                opened.close()
        result = dataclasses.replace(result, notes=(*crops, *result.notes))
        self._view = CompareView("diff", b.label, comparison=result)
        first = result.first_divergence
        return first.message if first else "no divergence"

    def patch(self, prompt: str, corrupted: str, answer: str, wrong: str, what: What) -> str:
        """Patch `prompt`'s run (clean) into `corrupted`, for every layer and position."""
        s = self._session
        clean, crop_clean = s.prompt_ids(prompt)
        bad, crop_bad = s.prompt_ids(corrupted)
        crops = _crop_notes(crop_clean, crop_bad, ("the clean run", "the corrupted run"))
        ids = [
            one_token(s.tokenizer, s.vocab_size, t, w)
            for t, w in ((answer, "answer"), (wrong, "wrong"))
        ]
        with _cropped(crops):
            sweep = Patcher(s.model, clean, bad, *ids, whats=[what]).sweep(what)
        label = f"{what}: {prompt!r} into {corrupted!r}"
        tokens = _labels(s, clean)
        self._view = CompareView("patch", label, sweep=sweep, tokens=tokens, notes=crops)
        return "; ".join((f"patched {what} at {len(sweep.values)} layers", *crops))

    def attribute(
        self,
        prompt: str,
        answer: str | int,
        wrong: str | int | None,
        position: int,
        generation: GenerationSession | None,
    ) -> str:
        """Direct logit attribution on `prompt`, or on `generation`'s text when given."""
        s = self._session
        gen = generation
        if gen is not None:  # what the next step's forward sees, without a cache
            ids, crop = crop_to_context(gen.ids, gen.context_len)[0], None
        else:
            ids, crop = s.prompt_ids(prompt)
        a = _token_id(s, answer, "answer")
        w = None if wrong is None or wrong == "" else _token_id(s, wrong, "wrong")
        result = attribute(s.model, ids, a, w, position)
        if crop:  # as trace and generate say it: the positions are the cropped prompt's
            result = dataclasses.replace(result, notes=(crop, *result.notes))
        label = f"logit({_name(s, answer)})" + (
            f" - logit({_name(s, wrong)})" if w is not None else ""
        )
        if gen is not None:
            label = f"next token: {label}"
        self._view = CompareView("attribute", label, attribution=result, tokens=_labels(s, ids))
        return f"{label}: {result.total:.4g}"


def b_model_spec(a: Session, b: BSpec) -> ModelSpec:
    """What B opens: A's own spec with B's changes (the CLI's --b-* flags). A model file
    without a checkpoint runs A's weights, wherever they came from (a sample too)."""
    from ..core.session import ModelSpec

    base = a.spec or ModelSpec(device=str(a.device), dtype=str(a.dtype).removeprefix("torch."))
    changes: dict[str, object] = {}
    if b.checkpoint or b.model_file:
        checkpoint = b.checkpoint or (None if base.checkpoint else str(a_checkpoint(a)))
        if checkpoint is not None:
            changes.update(checkpoint=checkpoint, config=None, sample=None)
    if b.model_file:
        changes.update(model_file=b.model_file, model_class=None, config_class=None)
    if b.dtype:
        changes.update(dtype=b.dtype)
    if b.device:
        changes.update(device=b.device)
    if b.overrides:
        changes.update(overrides=[*base.overrides, *b.overrides])
    return dataclasses.replace(base, **changes)


def _crop_notes(
    a: str | None, b: str | None, runs: tuple[str, str] = ("A", "B")
) -> tuple[str, ...]:
    """The runs' crop notes (as trace and generate give them): once when they crop alike."""
    if a == b:
        return (a,) if a else ()
    return tuple(f"{run}'s {note}" for run, note in zip(runs, (a, b), strict=True) if note)


@contextmanager
def _cropped(crops: tuple[str, ...]) -> Iterator[None]:
    """A comparison's error says what the crop changed: two prompts, one a prefix of the
    other, may no longer be after their first tokens are cropped."""
    try:
        yield
    except (CompareError, PatchError) as err:
        if not crops:
            raise
        raise type(err)(f"{err} ({'; '.join(crops)})") from None


def _token_id(session: Session, token: str | int, what: str) -> int:
    if isinstance(token, str):
        return one_token(session.tokenizer, session.vocab_size, token, what)
    if not 0 <= token < session.vocab_size:
        raise CompareError(f"{what} token id {token} is outside the model's vocabulary")
    return token


def _name(session: Session, token: str | int) -> str:
    from ..generation.sampling import token_label

    return repr(token if isinstance(token, str) else token_label(session.tokenizer, token))


def _labels(session: Session, ids: list[int]) -> tuple[str, ...]:
    from ..generation.sampling import token_label

    return tuple(token_label(session.tokenizer, i) for i in ids)
