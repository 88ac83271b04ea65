"""The app's opening of the model (in a daemon thread), the screen when it fails, and the
layout rule that gives the focused side the room."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from textual import events
from textual.widgets import Static

from ..errors import describe_error
from .messages import SessionFailed, SessionOpened
from .tabs import TABS
from .widgets.loading import LoadingPanel
from .widgets.module_tree import ModuleTree
from .widgets.status import StatusBar

if TYPE_CHECKING:
    from textual.app import App

    from ..engine.core.session import ModelSpec, ProgressFn, Session
    from ..engine.debugger import Debugger

    GptTuiApp = App[int]

# Below this width a focused tab takes the whole width (the tree comes back with escape);
# wider, the tree shrinks to a rail of names beside it.
NARROW_WIDTH = 100

# Where the tree went, said at the right end of the tab strip while it is hidden.
TREE_HINT = "Esc: modules"
TAB_STRIP = sum(len(tab.label) + 2 for tab in TABS)  # each label has a cell either side


class TreeHint(Static):
    """The line that says how to bring the hidden tree back; a click on it does."""

    def __init__(self) -> None:
        super().__init__(TREE_HINT, id="tree-hint")

    async def on_click(self, event: events.Click) -> None:
        event.stop()
        await self.app.run_action("focus_tree")


def open_debugger(
    spec: ModelSpec,
    session: Session | None,
    setup: Callable[[Debugger], object] | None,
    progress: ProgressFn,
) -> SessionOpened | SessionFailed:
    """Run in a daemon thread: the Debugger on the open session (or on `spec` opened),
    `setup` applied; the message saying how it went."""
    from ..engine.core.session import Session as OpenedSession
    from ..engine.debugger import Debugger
    from ..errors import GptTuiError

    try:
        debugger = Debugger(session or OpenedSession.open(spec, progress), seed=spec.seed)
        if setup is not None:
            setup(debugger)
    except GptTuiError as err:
        return SessionFailed(describe_error(err))
    return SessionOpened(debugger, debugger.info(), debugger.state())


def show_open_error(app: GptTuiApp, error: str) -> None:
    """The model could not be opened: say why in place of the tabs; q still quits."""
    app.open_error = error
    app.query_one(LoadingPanel).display = False
    app.query_one("#tree").loading = False
    app.query_one("#tabs").loading = False
    app.query_one(StatusBar).loading_text = "no model"
    box = app.query_one("#message", Static)
    box.update(
        f"[b red]Could not open the model[/]\n\n{error}\n\n"
        "[dim]Quit with q and start again with other model arguments "
        "(gpt-tui --help).[/]"
    )
    box.display = True
    app.query_one("#tabs").display = False
    app.query_one(ModuleTree).focus()


def update_layout(app: GptTuiApp, width: int | None = None) -> None:
    """A tab with the focus gets the width its columns need: the tree becomes a rail
    of names (or, below NARROW_WIDTH columns, steps aside) until it has the focus.
    `width`: the terminal's, when it has just changed (default: the app's)."""
    focused = app.focused
    if focused is None or focused.screen is not app.screen:
        return
    body = app.query_one("#body")
    right = app.query_one("#right")
    if focused in right.walk_children() or focused is right:
        body.add_class("-tabs-focused")
    elif focused in app.query_one("#left").walk_children():
        body.remove_class("-tabs-focused")
    width = width or app.size.width
    body.set_class(width < NARROW_WIDTH, "-narrow")
    # Over the tab strip's empty end, so it takes no width from the tabs (and only there).
    hint = app.query_one(TreeHint)
    left = width - len(TREE_HINT) - 1
    hint.set_class(left <= TAB_STRIP, "-no-room")
    hint.styles.offset = (max(0, left), 0)
