"""The command palette provider: every engine key and every tab, with its description."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from .keys import KEY_BINDINGS, KEY_TITLES
from .tabs import TABS
from .widgets.help import key_name


def palette_commands() -> list[tuple[str, str, str]]:
    """(title, help, action) for everything the palette offers, keys named as people read
    them (`Help (?)`, never `question_mark`)."""
    out = [
        (f"{KEY_TITLES.get(b.action, b.description)} ({key_name(b.key)})", b.tooltip, b.action)
        for b in KEY_BINDINGS
    ]
    out += [
        (
            f"Show tab: {tab.title} ({tab.key})",
            f"switch the right pane to {tab.title}",
            f"show_tab('{tab.id}')",
        )
        for tab in TABS
    ]
    return out


class GptTuiCommands(Provider):
    """Commands from the app's key bindings (with their keys) and one per tab."""

    async def discover(self) -> Hits:
        for title, help_text, action in palette_commands():
            yield DiscoveryHit(title, partial(self.app.run_action, action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, action in palette_commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(title),
                    partial(self.app.run_action, action),
                    text=title,
                    help=help_text,
                )
