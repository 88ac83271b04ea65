"""The left pane: the module tree and its name filter (opened with `/`)."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, Static

from .module_tree import ModuleTree


class ModulePane(Vertical):
    def compose(self) -> ComposeResult:
        # Disabled and hidden until `/` opens it, so that no key ever types into it unseen.
        yield Input(placeholder="filter modules…", id="tree-filter", compact=True, disabled=True)
        yield Static("", id="tree-no-match")
        yield ModuleTree(id="tree")

    def on_mount(self) -> None:
        self.query_one("#tree-filter").display = False
        self.query_one("#tree-no-match").display = False

    @property
    def tree(self) -> ModuleTree:
        return self.query_one(ModuleTree)

    def open_filter(self) -> None:
        box = self.query_one("#tree-filter", Input)
        box.disabled = False
        box.display = True
        self.screen.set_focus(box)  # at once: the keys queued behind `/` go in

    def close_empty_filter(self) -> None:
        """Leaving the filter with nothing typed in it hides it again."""
        box = self.query_one("#tree-filter", Input)
        if box.has_focus and not box.value:
            box.display = False
            box.disabled = True

    @on(Input.Changed, "#tree-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.tree.name_filter = event.value
        note = self.query_one("#tree-no-match", Static)
        note.display = self.tree.match_count() == 0
        if note.display:
            note.update(f"no module path contains {event.value.strip()!r} (/ to change the filter)")

    @on(Input.Submitted, "#tree-filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.tree.select_first_match()  # Enter lands on the first match
        self.tree.focus()
