"""The Code pane's expression results: the newest always in view, the older above it."""

from __future__ import annotations

from rich.text import Text
from textual.geometry import Size
from textual.widgets import Static

from ...engine.core.frames import Evaluation

MAX_EVALS = 3  # the newest evaluations shown


def evaluation_text(ev: Evaluation) -> Text:
    text = Text()
    text.append(f"{ev.expr} → ", style="bold")
    if ev.error is not None:
        text.append(ev.error, style="red")
    elif ev.value is not None:
        text.append(ev.value.repr)
    return text


class EvaluationLines(Static):
    """The newest evaluations, oldest first, in the rows the pane can spare: the newest
    always shows (its head when it alone is taller), the older fill the rows left above
    it, and one cut short ends in `…`."""

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.evaluations: tuple[Evaluation, ...] = ()

    def show(self, evaluations: tuple[Evaluation, ...]) -> None:
        self.evaluations = evaluations[-MAX_EVALS:]
        self.display = bool(evaluations)
        self.refresh(layout=True)

    def rows(self) -> int:
        """3 rows at 24 lines, more on a taller screen."""
        return max(3, (self.app.size.height - 16) // 3)

    def fitted(self, width: int) -> Text:
        width, room, shown = max(width, 10), self.rows(), []
        for ev in reversed(self.evaluations):
            if room <= 0:
                break
            lines = list(evaluation_text(ev).wrap(self.app.console, width))
            if len(lines) > room:
                lines = lines[:room]
                lines[-1].rstrip()
                lines[-1] = lines[-1][: width - 1]
                lines[-1].append("…", style="dim")
            shown[:0] = lines
            room -= len(lines)
        return Text("\n").join(shown)

    def render(self) -> Text:
        return self.fitted(self.content_size.width or self.app.size.width)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self.fitted(width).split("\n")) if self.evaluations else 0
