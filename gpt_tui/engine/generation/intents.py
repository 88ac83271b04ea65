"""The Debugger's generation intents: sample tokens one at a time or N at once, force a
token, and step into one token's forward and sampling at line level.

A mixin of `Debugger` (debugger.py), which owns the state these methods read and write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ...errors import GptTuiError
from ..core.debug_state import DebugState, GenerationSettings, GenerationView, StepStatus
from ..core.frames import SAMPLING_FILE
from ..core.runner import MoveCancelled, MoveRunner, cancellable
from ..core.views import generation_view, unpeeked_generation_view
from .sampling import check_sampling_settings

if TYPE_CHECKING:
    from ..core.session import Session
    from ..core.stepping import ForwardStepper
    from .sampling import GenerationSession

# Where a stepped token pauses first: the sampling pipeline's entry (models/sampling.py).
SAMPLING_ENTRY = "sample_next"


class GenerationIntents:
    """Generation, as Debugger intents."""

    session: Session
    runner: MoveRunner
    _stepper: ForwardStepper | None
    _prompt: str
    _settings: GenerationSettings
    _generation: GenerationSession | None
    _generation_view: GenerationView | None
    _token_pass: bool  # the stepped pass is one token's generation, not the prompt's forward
    _snapshot: Callable[..., DebugState]
    _advance: Callable[..., DebugState]
    _end_stepper: Callable[[StepStatus], None]

    @cancellable
    def reset_generation(
        self, settings: GenerationSettings | None = None, *, move: int | None = None
    ) -> DebugState:
        """Start generating from the prompt afresh (a new seeded generator)."""

        def body(mid: int) -> DebugState:
            self._end_token_pass()
            if settings is not None:
                check_sampling_settings(settings.temperature, settings.top_k, settings.top_p)
                self._settings = settings
            self._start_generation()
            return self._snapshot(mid, "generation restarted from the prompt")

        return self.runner.intent(move, body, "generation")

    @cancellable
    def set_generation_settings(
        self, settings: GenerationSettings, *, move: int | None = None
    ) -> DebugState:
        """Sampling settings for the next steps; the text so far stays and the next
        token's candidates are re-peeked. A new seed restarts (it names another run)."""

        def body(mid: int) -> DebugState:
            check_sampling_settings(settings.temperature, settings.top_k, settings.top_p)
            self._end_token_pass()
            restart = settings.seed != self._settings.seed
            self._settings = settings
            gen = self._generation
            if gen is None or restart:
                self._start_generation()
            else:
                gen.temperature, gen.top_k, gen.top_p = (
                    settings.temperature,
                    settings.top_k,
                    settings.top_p,
                )
                self._refresh_generation()
            return self._snapshot(mid, "new seed: restarted" if restart else "")

        return self.runner.intent(move, body, "generation")

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

        def body(mid: int) -> DebugState:
            self._end_token_pass()
            if self._generation is None:
                self._start_generation()
            gen = self._generation
            assert gen is not None
            taken = 0
            try:
                if force_token is not None:
                    gen.step(force_token=force_token)
                else:
                    for taken in range(n):  # noqa: B007 (read after a cancel)
                        if self.runner.stop_requested(mid):
                            raise MoveCancelled
                        gen.step()
                        if progress is not None and taken < n - 1:
                            self._generation_view = generation_view(
                                self.session, gen, self._prompt, self._settings, peek=False
                            )
                            progress(self._snapshot(mid, f"generating {taken + 1} of {n}"))
            except MoveCancelled:
                self.runner.clear_cancel()
                self._refresh_generation()
                message = f"generation cancelled after {taken} of {n} tokens"
                return self._snapshot(mid, message, cancelled=True)
            self._refresh_generation()
            return self._snapshot(mid)

        return self.runner.intent(move, body, "generation")

    @cancellable
    def step_token(self, *, move: int | None = None) -> DebugState:
        """Step into the next token: its forward and its sampling run as a stepped pass
        that stops at `sample_next`'s first line, or sooner at a module or line breakpoint
        (only at the user's own when one is in the sampling code). Line and module moves
        go on from there; when the pass finishes, its token joins the generation. Aborted,
        it leaves the generation as it was."""

        def body(mid: int) -> DebugState:
            self._end_token_pass()
            if self._generation is None:
                self._start_generation()
            self._end_stepper("idle")  # a paused pass on the prompt gives way
            self._token_pass = True
            return self._advance(mid, self._to_sampling)

        return self.runner.intent(move, body, "token step")

    @staticmethod
    def _to_sampling(stepper: ForwardStepper) -> object:
        # For this pass only, unless a breakpoint of the user's is in the sampling code.
        breakpoints = stepper.lines.breakpoints
        if not breakpoints.in_file(SAMPLING_FILE):
            stepper.set_line_breakpoints({*breakpoints.specs, SAMPLING_ENTRY})
        return stepper.continue_()

    def _end_token_pass(self) -> None:
        """A paused token step ends (unwound) before the generation changes under it."""
        if self._token_pass and self._stepper is not None:
            self._end_stepper("aborted")

    def _start_generation(self) -> None:
        s = self._settings
        self._generation = self.session.generation(
            self._prompt, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, seed=s.seed
        )
        self._refresh_generation()

    def _refresh_generation(self) -> None:
        """The generation's view: first what is true without running the model, then the
        next token's candidates and lens (a cancel there leaves the first)."""
        gen, prompt, settings = self._generation, self._prompt, self._settings
        assert gen is not None
        why = "cancelled before the next token's candidates"
        self._generation_view = unpeeked_generation_view(self.session, gen, prompt, settings, why)
        self._generation_view = generation_view(self.session, gen, prompt, settings)
