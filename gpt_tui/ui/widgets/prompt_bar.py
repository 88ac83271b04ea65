"""The prompt at the bottom: one line, where \\n, \\t and \\\\ stand for a newline, a tab
and a backslash, and \\xNN for a control character (as the status line writes it). Enter
asks for the typed prompt; leaving the box without Enter shows the prompt in use again, so
the box never claims a prompt the runs do not read."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Input, Label

from ...formatting import escape_prompt, unescape_prompt


class PromptBar(Horizontal):
    prompt: reactive[str] = reactive("")  # the prompt the runs read

    @dataclass
    class Submitted(Message):
        text: str  # the prompt meant, escapes resolved

    def compose(self) -> ComposeResult:
        yield Label("prompt ›", id="prompt-label")
        # Enabled once a model is open, so that keys never land in it before.
        yield Input(
            id="prompt",
            compact=True,
            placeholder="the text the model reads (\\n for a newline)",
            disabled=True,
            select_on_focus=False,  # the first key edits the prompt, never wipes it
        )

    @property
    def box(self) -> Input:
        return self.query_one("#prompt", Input)

    def enable(self) -> None:
        self.box.disabled = False

    def edit(self) -> None:
        box = self.box
        self.screen.set_focus(box)  # at once: the keys queued behind the one that asked go in
        box.cursor_position = len(box.value)

    def watch_prompt(self, prompt: str) -> None:
        if self.is_mounted and not self.box.has_focus:
            self.box.value = escape_prompt(prompt)

    @on(Input.Submitted, "#prompt")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.Submitted(unescape_prompt(event.value)))

    @on(Input.Blurred, "#prompt")
    def _left(self) -> None:
        self.box.value = escape_prompt(self.prompt)
