"""The loading panel: which phase of opening the model is under way, and a bar.

`listener()` hands the engine a `ProgressFn` that is safe to call from the opening
thread: it posts a message to the panel (at most one per percent of a phase), and the
panel redraws on the UI thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Label, ProgressBar

from ... import formatting as fmt

if TYPE_CHECKING:
    from ...engine.core.session import OpenProgress, ProgressFn


def describe(event: OpenProgress) -> str:
    """`initialising: 12,345,678 / 124,439,808 parameters` and the like."""
    if event.unit == "bytes":
        amount = f"{fmt.nbytes(event.done)} / {fmt.nbytes(event.total)}"
    elif event.unit == "parameters":
        amount = f"{event.done:,} / {event.total:,} parameters"
    else:
        amount = ""
    return f"Opening the model: {event.phase}" + (f"  {amount}" if amount else "")


class LoadingPanel(Vertical):
    """Shown while the model opens; the app hides it once the model is open."""

    DEFAULT_CSS = """
    LoadingPanel { height: auto; padding: 1 2; }
    LoadingPanel > ProgressBar { margin-top: 1; }
    """

    @dataclass
    class Progressed(Message):
        event: OpenProgress

    def compose(self) -> ComposeResult:
        yield Label("Opening the model", id="loading-phase")
        yield ProgressBar(total=100, show_eta=False, id="loading-bar")
        yield Label("", id="loading-keys")

    def show_waiting(self, keys: list[str]) -> None:
        """The keys pressed so far, which run once the model is open."""
        shown = " ".join(keys[-12:])
        self.query_one("#loading-keys", Label).update(
            f"loading…, keys wait: {shown}\n(they run once the model is open; q leaves now)"
        )

    def listener(self) -> ProgressFn:
        """A ProgressFn for `Session.open`, callable from any thread."""
        last: dict[str, int] = {}

        def post(event: OpenProgress) -> None:
            percent = int(event.fraction * 100)
            if last.get(event.phase) != percent:
                last[event.phase] = percent
                self.post_message(self.Progressed(event))

        return post

    def on_loading_panel_progressed(self, message: Progressed) -> None:
        event = message.event
        self.query_one("#loading-phase", Label).update(describe(event))
        self.query_one("#loading-bar", ProgressBar).update(progress=event.fraction * 100)
