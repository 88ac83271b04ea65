"""The tabs' side of the app: which tabs are built, what each is fed from a snapshot, and
the views (DebugState fields computed on demand) they have asked the engine for.

A view is asked for once while it is missing from the snapshot; a view whose intent
failed is shown failed once and asked again only by a key (the tab's, or a new prompt).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.widget import Widget
from textual.widgets import Input, TabbedContent, TabPane

from .intents import Intents
from .messages import IntentFailed
from .tabs import TAB_BY_ID, TabContext

if TYPE_CHECKING:
    from textual.app import App

    from ..engine.analysis.init_rules import ModelFacts
    from ..engine.core.debug_state import DebugState, ModelInfo
    from ..engine.core.session import ModelSpec
    from ..engine.debugger import Debugger

    class GptTuiApp(App[int]):  # what the tabs read of the app (the app imports us)
        spec: ModelSpec
        debugger: Debugger | None
        info: ModelInfo | None
        state: DebugState | None
        facts: ModelFacts | None


# The text box `e` goes to in each tab that has one (the others: the prompt bar). The
# Code tab has two: where to break until a pass is paused at a line, then the expression.
TEXT_BOXES = {"code": "#code-eval", "compare": "#compare-b-prompt", "cost": "#cost-batch"}
CODE_BREAK_BOX = "#code-break"


class TabViews:
    def __init__(self, app: GptTuiApp, intents: Intents) -> None:
        self._app = app
        self._intents = intents
        self.mounted: set[str] = set()
        self._wanted: set[str] = set()  # views asked for and not yet in a snapshot
        self._failed: set[str] = set()  # views whose fetch failed: asked again only by a key

    def pane(self, tab: str) -> Widget:
        """The widget a mounted tab built."""
        return self._app.query_one(f"#{tab}", TabPane).children[0]

    def context(self) -> TabContext:
        app = self._app
        assert app.info is not None
        shapes = app.state.shapes() if app.state is not None else {}
        return TabContext(app.info, app.state, shapes, app.spec.seed, app.facts)

    async def mount(self, tab: str) -> None:
        """Tabs are built the first time they are shown, and fed what is known."""
        if tab in self.mounted or self._app.info is None:
            return
        self.mounted.add(tab)
        await self._app.query_one(f"#{tab}", TabPane).mount(TAB_BY_ID[tab].make(self.context()))
        self.feed(tab)

    async def show(self, tab: str) -> None:
        """Switch to `tab` and put the focus in it; a key asks again for a failed view."""
        self._failed.discard(TAB_BY_ID[tab].view or "")
        await self.mount(tab)
        self._app.query_one(TabbedContent).active = tab
        # At once, as Esc leaves it: the keys typed next act in the tab.
        widget = self._app.query_one(f"#{tab}", TabPane).query_one(TAB_BY_ID[tab].focus)
        self._app.screen.set_focus(widget)

    def text_box(self, tab: str) -> Input | None:
        """The tab's own text box, None if it has none (or is not built)."""
        selector = TEXT_BOXES.get(tab)
        if selector is None or tab not in self.mounted:
            return None
        state = self._app.state
        if tab == "code" and (state is None or state.frame is None):
            selector = CODE_BREAK_BOX
        return self._app.query_one(f"#{tab}", TabPane).query_one(selector, Input)

    def feed(self, tab: str) -> None:
        TAB_BY_ID[tab].feed(self.pane(tab), self.context())

    def feed_all(self) -> None:
        for tab in self.mounted:
            self.feed(tab)

    def render(self, state: DebugState) -> None:
        """Every mounted tab fed the snapshot; the shown tab's view asked for if missing."""
        self._wanted = {view for view in self._wanted if getattr(state, view) is None}
        self.feed_all()
        self.fetch(self._app.query_one(TabbedContent).active)

    def fetch(self, tab: str) -> None:
        """Start the intent that computes what the tab shows, if the snapshot lacks it."""
        app, spec = self._app, TAB_BY_ID[tab]
        view = spec.view
        if app.debugger is None or app.state is None or view is None:
            return
        if view in self._wanted or view in self._failed:
            return
        if getattr(app.state, view) is not None or tab not in self.mounted:
            return
        request = spec.request(self.pane(tab))
        if request is not None:
            self._wanted.add(view)
            method, args = request
            self._intents.call(view, method, *args)

    def failed(self, worker: str, error: str) -> None:
        """An intent failed: the pane that asked ends its "working…" line, and a view it
        was fetching is not asked for again by itself."""
        for tab in self.mounted:
            self.pane(tab).post_message(IntentFailed(worker, error))
        self._failed |= self._wanted & {worker}
        self._wanted.clear()

    def ask_again(self, view: str) -> None:
        """A pane asked for `view` itself: it may be fetched again."""
        self._failed.discard(view)

    def forget(self) -> None:
        """A new prompt: every view is asked for afresh."""
        self._wanted.clear()
        self._failed.clear()
