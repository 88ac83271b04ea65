"""The Debugger's interventions part: the ablations toggled from the app (a head, an
MLP) and any other intervention, installed on the session's model. The Debugger holds
one and brings every view up to date after a change."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..core.views import run_from_trace
from .interventions import HeadScale, InterventionSpec, OutputScale

if TYPE_CHECKING:
    from ..core.session import Session
    from ..core.stepped_pass import SteppedPass
    from ..generation.intents import Generation
    from .attention_intents import Attention


class Interventions:
    """It owns which ablation is which installed intervention, so a second toggle
    removes the one the first added."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._ids: dict[tuple[str, int | None], int] = {}  # (module, head) -> id

    def toggle_ablation(self, module: str, kind: str, head: int | None) -> None:
        """Ablate the attention head (`kind` "attn") or the output of `module`, or undo it."""
        interventions = self._session.interventions
        key = (module, head if kind == "attn" else None)
        if key in self._ids:
            interventions.remove(self._ids.pop(key))
        else:
            spec = HeadScale(module, head or 0) if kind == "attn" else OutputScale(module)
            self._ids[key] = interventions.add(spec)

    def add(self, spec: InterventionSpec) -> None:
        self._session.interventions.add(spec)

    def changed(
        self,
        prompt: str,
        leaves: bool,
        parts: tuple[Attention, SteppedPass, Generation],
        replay: Callable[[], None],
    ) -> str:
        """Bring every view up to date with the changed model (`replay`: the paused pass
        re-run to where it was); the message names what is active."""
        attention, stepped, generation = parts
        # What must follow the change goes with it, before anything a cancel can stop: no
        # view made with the old model survives, and the KV cache describes the old model.
        attention.forget()
        stale = stepped.drop_run()
        gen = generation.current
        generation.model_changed(prompt)
        # The views are recomputed after; a cancel leaves them absent, never stale.
        replay()
        if stale:
            stepped.rerecorded(run_from_trace(self._session.trace(prompt, leaves=leaves)))
        if gen is not None:
            generation.refresh(prompt)
        return "; ".join(self.descriptions()) or "none active"

    def descriptions(self) -> tuple[str, ...]:
        return tuple(spec.description for spec in self._session.interventions.active)

    def ablated_modules(self) -> tuple[str, ...]:
        return tuple(sorted({path for path, _ in self._ids}))
