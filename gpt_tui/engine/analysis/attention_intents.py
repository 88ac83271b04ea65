"""The Debugger's attention part: the Attention tab's pattern of one layer on the prompt.
The Debugger holds one and passes in the prompt."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.debug_state import AttentionView
from .attention import head_summaries

if TYPE_CHECKING:
    from ..core.session import Session, Trace


class Attention:
    """The Debugger's attention part: it owns the shown pattern and the pass it is
    computed from; a new prompt or a changed model forgets both."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._view: AttentionView | None = None
        self._trace: Trace | None = None  # every layer's q/k/v, patterns on demand

    def view(self) -> AttentionView | None:
        return self._view

    def forget(self) -> None:
        self._view = self._trace = None

    def show(self, prompt: str, layer: int) -> None:
        """The recomputed pattern of `layer` on `prompt`."""
        # One pass keeps what every layer's pattern is computed from (O(L·T·d)); a layer
        # switch then computes one pattern instead of running the model again.
        if self._trace is None:
            self._trace = self._session.trace(prompt, attention_layers="all")
        pattern = self._trace.patterns[layer]
        heads = head_summaries(pattern)
        self._view = AttentionView(self._trace.prompt, self._trace.tokens, pattern, heads)
