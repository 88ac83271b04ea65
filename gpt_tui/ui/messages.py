"""Messages the engine workers post to the app. Each carries frozen, plain data only.

A pane that wants a Debugger intent run posts `IntentRequested` (the app starts it in a
worker and renders the snapshot it returns); the other messages are the engine side's
replies. Widget events that need the app's own logic (a candidate forced with the settings
typed so far) stay nested in the widget that posts them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from textual.message import Message

if TYPE_CHECKING:
    from ..engine.core.debug_state import DebugState, ModelInfo
    from ..engine.debugger import Debugger


@dataclass
class IntentRequested(Message):
    """Run `Debugger.<method>(*args, **kwargs)` in the worker named `worker` (one worker
    name runs one intent at a time; a newer one of that name replaces a waiting one)."""

    worker: str
    method: str
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    progress: bool = False  # pass the app's progress callback (a snapshot per token)


@dataclass
class SessionOpened(Message):
    """The model is built; the debugger is the app's handle for later intents."""

    debugger: Debugger
    info: ModelInfo
    state: DebugState


@dataclass
class SessionFailed(Message):
    """Opening the model failed; `error` is one readable line."""

    error: str


@dataclass
class StateUpdated(Message):
    """An intent finished: the debugger's snapshot after it, and the intent's name."""

    state: DebugState
    name: str = ""


@dataclass
class IntentFailed(Message, bubble=False):
    """The intent a pane asked for (`worker`, as in `IntentRequested`) raised; `error` is
    one readable line. Sent to every mounted tab so the pane that asked can say why."""

    worker: str
    error: str
