"""The Code tab's examples are the open model's own: the function the break-at box and
the not-paused text suggest is one the model has, and breaking at it stops there. A
scalar result shows its value; a `!statement` updates the Variables table at once."""

from __future__ import annotations

import re

from textual.widgets import Input, Static
from ui_helpers import press, settle, tiny_app

from gpt_tui.ui.widgets.code_pane import VariablesTable


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


async def test_a_scalar_shows_its_value_and_a_statement_updates_the_variables_at_once() -> None:
    app = tiny_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await press(pilot, "7")
        example = app.query_one("#code-break", Input).placeholder.split(" · ")[0]
        await submit(pilot, "#code-break", example.removeprefix("break at: ").split(", ")[0])
        await press(pilot, "escape", "C")
        assert app.state.frame is not None
        await submit(pilot, "#code-eval", "x.std()")
        shown = app.state.evaluations[-1].value
        evals = str(app.query_one("#code-evals", Static).render())
        assert re.search(r"x\.std\(\) → tensor\(\d\.\d+\) float32 cpu", evals), evals
        assert f"{shown.mean:.3g}" in evals

        table = app.query_one(VariablesTable)

        def x_row() -> tuple:
            rows = [table.get_row_at(i) for i in range(table.row_count)]
            return next(row for row in rows if row[0] == "x")

        assert x_row()[6] != "0"  # max
        await submit(pilot, "#code-eval", "!x = x * 0")
        assert app.state.status == "paused"
        assert (x_row()[5], x_row()[6]) == ("0", "0")  # min and max, before any move


async def submit(pilot, selector: str, text: str) -> None:
    box = pilot.app.query_one(selector, Input)
    box.focus()
    box.value = text
    await press(pilot, "enter")
    await settle(pilot)


async def test_a_line_without_code_is_refused_with_the_nearest_code_lines() -> None:
    app = tiny_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await press(pilot, "7")
        app.clear_notifications()
        await submit(pilot, "#code-break", "nanogpt.py:1")
        assert app.state.line_breakpoints == frozenset()
        (toast,) = [n for n in app._notifications if "nanogpt.py:1" in n.message]
        assert toast.severity == "error" and "\n" not in toast.message
        assert "runs no code" in toast.message and "nearest lines with code" in toast.message
