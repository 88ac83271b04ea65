"""Save the README screenshots with the app's own save_screenshot (120x40).

    python docs/make_screenshots.py CHECKPOINT   # e.g. sample_models/shakespeare-nanogpt

writes docs/inspector.svg (paused at a breakpoint inside block 1, stats) and
docs/attention.svg (layer 1 head 2: each character looks back to the last space).
"""

import asyncio
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent / "tests" / "ui"))
from ui_helpers import press, settle  # noqa: E402

from gpt_tui.engine.session import ModelSpec  # noqa: E402
from gpt_tui.ui.app import GptTuiApp  # noqa: E402
from gpt_tui.ui.widgets.module_tree import ModuleTree  # noqa: E402

CKPT = sys.argv[1]  # noqa: E402
PROMPT = "ROMEO: But soft, what light through yonder window breaks?"


async def shoot(name, steps):
    app = GptTuiApp(ModelSpec(checkpoint=CKPT), show_memory=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await press(pilot, "p")
        app.query_one("#prompt").value = PROMPT
        await press(pilot, "enter")
        await steps(app, pilot)
        await pilot.pause(0.3)
        app.clear_notifications()
        await pilot.pause(0.3)
        app.save_screenshot(f"{name}.svg", str(DOCS))


async def inspector(app, pilot):
    tree = app.query_one(ModuleTree)
    node = tree._path_nodes["transformer.h.1.mlp"]
    tree.move_cursor(node)
    app.selected_path = "transformer.h.1.mlp"
    await press(pilot, "r", "b", "c")


async def attention(app, pilot):
    await press(pilot, "3", "]", ".", ".")
    for _ in range(30):
        await pilot.press("down")
    for _ in range(29):
        await pilot.press("right")
    await settle(pilot)


asyncio.run(shoot("inspector", inspector))
asyncio.run(shoot("attention", attention))
