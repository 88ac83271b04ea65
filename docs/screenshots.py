"""The documentation's screenshots, taken from the app itself with Textual's Pilot.

    python docs/screenshots.py            # rewrites docs/img/*.svg
    python docs/screenshots.py OUT_DIR    # writes them into OUT_DIR instead

Each shot opens the shipped sample model (shakespeare-nanogpt) at 120x40, presses the keys a
user would and saves the screen as SVG. tests/test_screenshots.py takes them again into a
temporary folder and fails when their text differs from the committed ones, so a change to
the app that changes a picture says so.
"""

from __future__ import annotations

import asyncio
import html
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import Input

from gpt_tui.engine.core.session import ModelSpec
from gpt_tui.ui.app import GptTuiApp

IMG = Path(__file__).resolve().parent / "img"
SIZE = (120, 40)
PROMPT = "ROMEO: But soft, what light through yonder window breaks?"


async def settle(pilot: Pilot) -> None:
    """Wait until every worker is done and every message it posted is handled."""
    for _ in range(3):  # a finished worker may have queued the next engine call
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()


async def press(pilot: Pilot, *keys: str) -> None:
    for key in keys:
        await pilot.press(key)
        await settle(pilot)


async def type_into(pilot: Pilot, selector: str, text: str, submit: bool = True) -> None:
    box = pilot.app.query_one(selector, Input)
    box.focus()
    box.value = text
    if submit:
        await press(pilot, "enter")


def select_module(app: GptTuiApp, path: str) -> None:
    """Put the tree cursor on a module, as the arrow keys would."""
    from gpt_tui.ui.widgets.module_tree import ModuleTree

    tree = app.query_one(ModuleTree)
    node = tree._path_nodes[path]
    tree.move_cursor(node)
    app.selected_path = path


async def inspector(pilot: Pilot) -> None:
    """Stats, paused at a breakpoint on block 1's MLP."""
    select_module(pilot.app, "transformer.h.1.mlp")
    await press(pilot, "r", "b", "c")


async def attention(pilot: Pilot) -> None:
    """Layer 1, head 2: each character looks back along the previous ones."""
    await press(pilot, "3", "]", ".", ".")


def kernel_line() -> int:
    from gpt_tui.models import nanogpt

    lines = Path(nanogpt.__file__).read_text().splitlines()
    return next(i for i, t in enumerate(lines, 1) if "y = F.scaled_dot_product_attention(" in t)


async def code(pilot: Pilot) -> None:
    """The Code tab paused at nanoGPT's attention kernel call, with q.shape evaluated."""
    await press(pilot, "7")
    await type_into(pilot, "#code-break", f"nanogpt.py:{kernel_line()}")
    await press(pilot, "escape", "C")
    await type_into(pilot, "#code-eval", "q.shape")


async def patch(pilot: Pilot) -> None:
    """The Diff tab: ROMEO patched into JULIE, where ':' (against 'T') is carried."""
    await press(pilot, "8")
    await type_into(pilot, "#compare-b-prompt", "JULIE", submit=False)
    await type_into(pilot, "#compare-answer", ":", submit=False)
    await type_into(pilot, "#compare-wrong", "T", submit=False)
    await pilot.click("#compare-patch")
    await settle(pilot)


async def generate(pilot: Pilot) -> None:
    """The Generate tab after three tokens."""
    await press(pilot, "4", "g", "g", "g")


async def train(pilot: Pilot) -> None:
    """The Train tab: one step on the prompt, laid open."""
    await press(pilot, "6")


SHOTS: dict[str, tuple[str, Callable[[Pilot], Awaitable[None]]]] = {
    "inspector": (PROMPT, inspector),
    "attention": (PROMPT, attention),
    "code": (PROMPT, code),
    "generate": ("ROMEO:", generate),
    "patch": ("ROMEO", patch),
    "train": (PROMPT, train),
}


async def shoot(name: str) -> str:
    """One screenshot as SVG text."""
    prompt, steps = SHOTS[name]
    app = GptTuiApp(ModelSpec(sample="shakespeare-nanogpt", device="cpu"), show_memory=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "p")
        await type_into(pilot, "#prompt", prompt)
        await steps(pilot)
        app.clear_notifications()
        await settle(pilot)
        return app.export_screenshot(title=f"gpt-tui: {name}")


def svg_text(svg: str) -> list[str]:
    """The screen's text, one string per line of the terminal (fonts and colours left out)."""
    rows: dict[str, list[str]] = {}
    for y, text in re.findall(r'<text [^>]*?y="([\d.]+)"[^>]*>(.*?)</text>', svg, re.S):
        rows.setdefault(y, []).append(html.unescape(re.sub(r"<[^>]+>", "", text)))
    return ["".join(parts).rstrip() for _, parts in sorted(rows.items(), key=lambda r: float(r[0]))]


def main(out: Path = IMG) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in SHOTS:
        path = out / f"{name}.svg"
        path.write_text(asyncio.run(shoot(name)), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in main(Path(sys.argv[1]) if len(sys.argv) > 1 else IMG):
        print(path)
