"""Messages the engine workers post to the app. Each carries frozen, plain data only.

Widget intents (a node selected, a candidate forced, a setting changed) are messages
nested in the widget that posts them; these are the replies from the engine side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:
    from ..engine.debug_state import DebugState, ModelInfo
    from ..engine.debugger import Debugger


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
