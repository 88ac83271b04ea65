"""The command palette provider: every engine key and every tab, with its description."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from .app import GptTuiApp


class GptTuiCommands(Provider):
    """Commands from the app's key bindings (with their keys) and one per tab."""

    def _commands(self) -> list[tuple[str, str, str]]:
        """(title, help, action) for everything the palette offers."""
        app: GptTuiApp = self.app  # type: ignore[assignment]
        out = [
            (
                f"{app.KEY_TITLES.get(b.action, b.description)} ({b.key_display or b.key})",
                b.tooltip,
                b.action,
            )
            for b in app.KEY_BINDINGS
        ]
        out += [
            (f"Show tab: {title}", f"switch the right pane to {title}", f"show_tab('{tab}')")
            for tab, title in app.TABS
        ]
        return out

    async def discover(self) -> Hits:
        for title, help_text, action in self._commands():
            yield DiscoveryHit(title, partial(self.app.run_action, action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, action in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(title),
                    partial(self.app.run_action, action),
                    text=title,
                    help=help_text,
                )
