"""The Debugger's generation part: sample tokens one at a time or N at once, force a
token; stepping into one token's forward and sampling is the Debugger's stepped pass,
which `to_sampling` starts. The Debugger holds one and runs its intents."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..core.debug_state import GenerationSettings, GenerationView
from ..core.frames import SAMPLING_FILE
from ..core.runner import MoveCancelled
from ..core.views import generation_view, unpeeked_generation_view
from .sampling import check_sampling_settings

if TYPE_CHECKING:
    from ..core.runner import MoveRunner
    from ..core.session import Session
    from ..core.stepping import ForwardStepper
    from .sampling import GenerationSession

# Where a stepped token pauses first: the sampling pipeline's entry (models/sampling.py).
SAMPLING_ENTRY = "sample_next"


class Generation:
    """The Debugger's generation part: it owns the sampling settings, the generation
    under way and its view. The Debugger passes in the prompt (and the runner, to stop
    between tokens); a token stepped at line level is the Debugger's stepped pass."""

    def __init__(self, session: Session, seed: int = 0) -> None:
        self._session = session
        self._settings = GenerationSettings(seed=seed)
        self._gen: GenerationSession | None = None
        self._view: GenerationView | None = None

    def view(self) -> GenerationView | None:
        return self._view

    @property
    def current(self) -> GenerationSession | None:
        """The generation under way (None before the first token or after a new prompt)."""
        return self._gen

    def forget(self) -> None:
        """The prompt changed: the generation made on the old one goes."""
        self._gen = self._view = None

    def ensure(self, prompt: str) -> GenerationSession:
        if self._gen is None:
            self.start(prompt)
        assert self._gen is not None
        return self._gen

    def start(self, prompt: str, settings: GenerationSettings | None = None) -> None:
        """Start afresh from `prompt` (a new seeded generator), with `settings` if given."""
        if settings is not None:
            check_sampling_settings(settings.temperature, settings.top_k, settings.top_p)
            self._settings = settings
        s = self._settings
        self._gen = self._session.generation(
            prompt, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, seed=s.seed
        )
        self.refresh(prompt)

    def set_settings(self, prompt: str, settings: GenerationSettings) -> bool:
        """New settings for the next steps; True if a new seed restarted the generation."""
        restart = settings.seed != self._settings.seed
        self._settings = settings
        gen = self._gen
        if gen is None or restart:
            self.start(prompt)
        else:
            gen.temperature, gen.top_k, gen.top_p = (
                settings.temperature,
                settings.top_k,
                settings.top_p,
            )
            self.refresh(prompt)
        return restart

    def generate(
        self,
        prompt: str,
        n: int,
        force_token: int | None,
        runner: MoveRunner,
        mid: int,
        progress: Callable[[str], None] | None,
    ) -> tuple[str, bool]:
        """`n` sampled steps (or one forced); the message and whether a cancel cut it."""
        gen = self.ensure(prompt)
        taken = 0
        try:
            if force_token is not None:
                gen.step(force_token=force_token)
            else:
                for taken in range(n):  # noqa: B007 (read after a cancel)
                    if runner.stop_requested(mid):
                        raise MoveCancelled
                    gen.step()
                    if progress is not None and taken < n - 1:
                        self.token_joined(prompt)
                        progress(f"generating {taken + 1} of {n}")
        except MoveCancelled:
            runner.clear_cancel()
            self.refresh(prompt)
            return f"generation cancelled after {taken} of {n} tokens", True
        self.refresh(prompt)
        return "", False

    def token_joined(self, prompt: str) -> None:
        """A token joined the generation: the view shows it at once, without a peek."""
        assert self._gen is not None
        self._view = generation_view(self._session, self._gen, prompt, self._settings, peek=False)

    def model_changed(self, prompt: str) -> None:
        """The KV cache describes the old model: it goes, and so do the candidates."""
        if self._gen is not None:
            self._gen.drop_cache()
            self._view = unpeeked_generation_view(
                self._session, self._gen, prompt, self._settings, "the model changed"
            )

    def refresh(self, prompt: str) -> None:
        """The generation's view: first what is true without running the model, then the
        next token's candidates and lens (a cancel there leaves the first)."""
        gen, settings = self._gen, self._settings
        assert gen is not None
        why = "cancelled before the next token's candidates"
        self._view = unpeeked_generation_view(self._session, gen, prompt, settings, why)
        self._view = generation_view(self._session, gen, prompt, settings)


def to_sampling(stepper: ForwardStepper) -> object:
    """A token's stepped pass runs to `sample_next`'s first line: for this pass only,
    unless a breakpoint of the user's is in the sampling code."""
    breakpoints = stepper.lines.breakpoints
    if not breakpoints.in_file(SAMPLING_FILE):
        stepper.set_line_breakpoints({*breakpoints.specs, SAMPLING_ENTRY})
    return stepper.continue_()
