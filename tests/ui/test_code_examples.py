"""The Code tab's examples are the open model's own: the function the break-at box and
the not-paused text suggest is one the model has, and breaking at it stops there."""

from __future__ import annotations

from textual.widgets import Input, Static
from ui_helpers import press, settle, tiny_app


async def test_the_suggested_function_exists_and_stops_the_pass(arch) -> None:
    app = tiny_app(arch)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await press(pilot, "7")
        hint = app.query_one("#code-break", Input).placeholder
        example, function = hint.split(" · ")[0].removeprefix("break at: ").split(", ")
        assert function in str(app.query_one("#code-where", Static).render())
        box = app.query_one("#code-break", Input)
        box.focus()
        box.value = function
        await press(pilot, "enter")
        assert app.state.line_breakpoints == {function}  # it matched the model's code
        await press(pilot, "escape", "C")
        frame = app.state.frame
        assert frame is not None and frame.reason == "breakpoint"
        assert frame.function == function and frame.file == example.split(":")[0]
        assert any(s.number == int(example.split(":")[1]) for s in frame.source)
