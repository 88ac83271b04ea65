"""Messages the engine workers post to the app. Each carries frozen, plain data only.

Widget intents (a node selected, a candidate forced, a setting changed) are messages
nested in the widget that posts them; these are the replies from the engine side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:
    from ..engine.train_view import TrainView
    from .driver import AttentionView, Driver, GenerationView, ModelInfo, RunResult, StepState


@dataclass
class SessionOpened(Message):
    """The model is built; the driver is the app's handle for later worker calls."""

    driver: Driver
    info: ModelInfo


@dataclass
class SessionFailed(Message):
    """Opening the model failed; `error` is one readable line."""

    error: str


@dataclass
class GenerationUpdated(Message):
    view: GenerationView


@dataclass
class TrainUpdated(Message):
    """The training view of `prompt`."""

    prompt: str
    view: TrainView


@dataclass
class RunUpdated(Message):
    run: RunResult


@dataclass
class StepUpdated(Message):
    state: StepState


@dataclass
class AttentionUpdated(Message):
    view: AttentionView


@dataclass
class AblationsUpdated(Message):
    """The interventions now active, as the descriptions the engine gives them, and the
    module paths they act on."""

    active: tuple[str, ...]
    modules: tuple[str, ...] = ()
