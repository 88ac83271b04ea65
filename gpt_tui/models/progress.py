"""Progress of opening a model, reported phase by phase to whoever shows it.

The engine and the loaders call a `ProgressFn` with `OpenProgress` events; the CLI draws
them on stderr (a TTY only), the app in its loading screen. Phases come in this order,
each only when it happens: reading (the checkpoint file), building (the module tree, on
the meta device), initialising (random weights, in place) and moving to device (each
checkpoint tensor to its device and dtype).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

PHASES = ("reading", "building", "initialising", "moving to device")


@dataclass(frozen=True)
class OpenProgress:
    phase: str  # one of PHASES
    done: int
    total: int  # > 0
    unit: str = "steps"  # "bytes", "parameters" or "steps"

    @property
    def fraction(self) -> float:
        return min(self.done / self.total, 1.0)


ProgressFn = Callable[[OpenProgress], None]


def report(progress: ProgressFn | None, phase: str, done: int, total: int, unit: str) -> None:
    """Send one event if anyone listens (a zero total counts as one step, done)."""
    if progress is not None:
        progress(OpenProgress(phase, done if total else 1, total or 1, unit))
