"""The Code tab with a pdb user's habits: a breakpoint condition that raises stops and
says so on the pause line; `pp`, `whatis`, `where` and bare `display` in the expression
box; display numbers that stay fixed; a failed command titled in words."""

from __future__ import annotations

from textual.widgets import Input, Static
from ui_helpers import press, settle, tiny_app

SIZE = (120, 40)


async def submit(pilot, selector: str, text: str) -> None:
    box = pilot.app.query_one(selector, Input)
    box.focus()
    box.value = text
    await press(pilot, "enter")


def plain(pilot, selector: str) -> str:
    return str(pilot.app.query_one(selector, Static).render())


async def test_a_condition_that_raises_is_named_on_the_pause_line() -> None:
    app = tiny_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "7")
        await submit(pilot, "#code-break", "MLP.forward if nosuch > 1")
        await press(pilot, "escape", "C")
        assert app.state.frame.module == "transformer.h.0.mlp"
        error = "NameError: name 'nosuch' is not defined"
        assert f"error in its condition: {error}" in plain(pilot, "#code-where")
        assert f"error in breakpoint 1's condition: {error}" in app.state.message
