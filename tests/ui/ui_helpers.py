"""Helpers shared by the app's pilot and snapshot tests."""

from __future__ import annotations

from textual.pilot import Pilot

from gpt_tui.engine.core.session import ModelSpec
from gpt_tui.ui.app import GptTuiApp


def tiny_app(arch: str | None = None, **spec) -> GptTuiApp:
    """The app on the tiny preset, with the (run-to-run varying) memory figure hidden."""
    return GptTuiApp(ModelSpec(config="tiny", arch=arch, **spec), show_memory=False)


async def settle(pilot: Pilot) -> None:
    """Wait until every worker is done and every message they posted is handled."""
    app = pilot.app
    for _ in range(3):  # a finished worker may have queued the next engine call
        await app.workers.wait_for_complete()
        await pilot.pause()


async def press(pilot: Pilot, *keys: str) -> None:
    """Press keys one at a time, letting the engine finish after each."""
    for key in keys:
        await pilot.press(key)
        await settle(pilot)


def select(app: GptTuiApp, path: str) -> None:
    """Put the tree cursor on a module, as arrow keys would."""
    from gpt_tui.ui.widgets.module_tree import ModuleTree

    tree = app.query_one(ModuleTree)
    node = tree._path_nodes[path]
    parent = node.parent
    while parent is not None:
        parent.expand()
        parent = parent.parent
    tree.move_cursor(node)
    app.selected_path = path
