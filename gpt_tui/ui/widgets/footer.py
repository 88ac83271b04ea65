"""The footer: the keys that apply now, the most important first, and only whole keys.

Textual's footer lists the focused pane's keys before the app's and lets the command
palette key (docked right) cover whatever runs under it. At 80 columns that hid the
stepping keys. This footer ranks the keys by the app's order (`rank`, a list of actions),
then the pane's keys, then the palette key, and leaves out the keys that do not fit; the
help screen (?) lists them all.
"""

from __future__ import annotations

from collections.abc import Sequence

from textual import events
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

GAP = 1  # a compact footer's margin after each key


def key_width(key: FooterKey) -> int:
    """Cells a compact key takes: `k Description` and its margin (the palette: its border)."""
    text = len(key.key_display) + (1 + len(key.description) if key.description else 0)
    return text + (1 if key.has_class("-command-palette") else GAP)


class KeyFooter(Footer):
    """A compact footer showing the highest-ranked keys that fit in its width."""

    def __init__(self, rank: Sequence[str], **kwargs) -> None:
        super().__init__(compact=True, **kwargs)
        self.rank = {action: i for i, action in enumerate(rank)}
        self._width = 0

    def compose(self):
        keys = [item for item in super().compose() if isinstance(item, FooterKey)]
        last = len(self.rank)

        def order(key: FooterKey) -> int:
            if key.has_class("-command-palette"):
                return last + 1
            return self.rank.get(key.action, last)

        keys.sort(key=order)  # stable: the pane's keys keep their own order
        room = self.size.width or 10_000  # not laid out yet: all, until the next resize
        shown = set()
        for key in keys:
            if key_width(key) <= room:
                room -= key_width(key)
                shown.add(id(key))
        # The palette key docks right; the others keep their ranked order.
        yield from (key for key in keys if id(key) in shown)

    def on_resize(self, event: events.Resize) -> None:
        if event.size.width != self._width:
            self._width = event.size.width
            self.call_after_refresh(self.recompose)
