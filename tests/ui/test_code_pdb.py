"""The Code tab's pdb commands (issue 21): `display EXPR` / `undisplay` in the expression
box, shown at each line pause with what changed; `tbreak SPEC`, `ignore N COUNT`, `clear N`,
`disable N`, `enable N` and `condition N [EXPR]` in the break-at box, with the breakpoints'
numbers and hits on screen."""

from __future__ import annotations

from textual.widgets import Input, Static
from ui_helpers import press, settle, tiny_app

from gpt_tui.ui.widgets.code_pane import SourceView
from gpt_tui.ui.widgets.tensor_viewer import number

SIZE = (120, 40)


async def submit(pilot, selector: str, text: str) -> None:
    box = pilot.app.query_one(selector, Input)
    box.focus()
    box.value = text
    await press(pilot, "enter")


def plain(pilot, selector: str) -> str:
    return str(pilot.app.query_one(selector, Static).render())


async def test_display_expressions_are_shown_at_each_pause_with_what_changed() -> None:
    app = tiny_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "7")
        await submit(pilot, "#code-break", "MLP.forward")
        await submit(pilot, "#code-eval", "display x.shape")
        await submit(pilot, "#code-eval", "display x.abs().max()")
        assert [d.expr for d in app.state.displays] == ["x.shape", "x.abs().max()"]
        shown = app.query_one("#code-displays", Static)
        assert shown.display and "(at the next pause at a line)" in plain(pilot, "#code-displays")

        await press(pilot, "escape", "C")
        assert app.state.frame.module == "transformer.h.0.mlp"
        text = plain(pilot, "#code-displays")
        assert "1 x.shape: torch.Size([1, 6, 32])" in text
        peak = app.state.displays[1].evaluation.value
        assert f"2 x.abs().max(): tensor({number(peak.max)}) float32" in text  # not a repr
        assert "[old:" not in text
        assert "line breakpoints: 1 break MLP.forward · hit 1" in text

        await press(pilot, "escape", "C")  # block 1's MLP: another input
        assert app.state.frame.module == "transformer.h.1.mlp"
        assert app.state.displays[1].changed and not app.state.displays[0].changed
        text = plain(pilot, "#code-displays")
        assert text.count("[old:") == 1 and "hit 2" in text

        await submit(pilot, "#code-eval", "undisplay 1")
        assert [d.expr for d in app.state.displays] == ["x.abs().max()"]
        await submit(pilot, "#code-eval", "undisplay")
        assert app.state.displays == ()
        assert "x.abs" not in plain(pilot, "#code-displays")
        assert app.state.status == "paused"  # the box's commands never reach the app's keys


async def test_tbreak_ignore_and_clear_in_the_break_at_box() -> None:
    app = tiny_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "7")
        box = app.query_one("#code-break", Input)
        assert "tbreak SPEC" in box.placeholder and "ignore N COUNT" in box.placeholder
        await submit(pilot, "#code-break", "tbreak MLP.forward")
        await submit(pilot, "#code-break", "Block.forward")
        await submit(pilot, "#code-break", "ignore 2 1")
        table = app.state.line_table
        assert [(b.number, b.spec, b.temporary, b.ignore) for b in table] == [
            (1, "MLP.forward", True, 0),
            (2, "Block.forward", False, 1),
        ]
        listed = plain(pilot, "#code-displays")
        assert "1 tbreak MLP.forward · 2 break Block.forward · ignore next 1" in listed

        await press(pilot, "escape", "C")  # block 0's Block.forward is ignored: the MLP
        assert app.state.frame.function == "MLP.forward"
        assert "breakpoint 1, hit 1, deleted (tbreak)" in plain(pilot, "#code-where")
        assert [b.number for b in app.state.line_table] == [2]
        await press(pilot, "escape", "C")
        assert app.state.frame.module == "transformer.h.1"
        assert "breakpoint 2" not in plain(pilot, "#code-where")  # one left: listed below
        assert "line breakpoints: 2 break Block.forward · hit 2" in plain(pilot, "#code-displays")

        await submit(pilot, "#code-break", "clear 2")
        assert app.state.line_table == ()
        await submit(pilot, "#code-break", "ignore two 1")  # a one-line note, nothing sent
        assert app.state.line_table == () and app.state.status == "paused"


async def test_disable_enable_and_condition_in_the_break_at_box() -> None:
    app = tiny_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "7")
        second = id(app.debugger.session.model.transformer.h[1].mlp)
        await submit(pilot, "#code-break", "MLP.forward")
        await submit(pilot, "#code-break", "Block.forward")
        await submit(pilot, "#code-break", "disable 2")
        await submit(pilot, "#code-break", f"condition 1 id(self) == {second}")
        listed = plain(pilot, "#code-displays")
        assert f"1 break MLP.forward if id(self) == {second}" in listed
        assert "2 break Block.forward · disabled" in listed

        await press(pilot, "escape", "C")  # Block.forward is off; block 0's MLP fails the test
        state = app.state
        assert state.frame.module == "transformer.h.1.mlp" and state.hit.number == 1
        await submit(pilot, "#code-break", "condition 1")
        await submit(pilot, "#code-break", "enable 2")
        assert [(b.number, b.spec, b.hits, b.enabled) for b in app.state.line_table] == [
            (1, "MLP.forward", 2, True),
            (2, "Block.forward", 0, True),
        ]
        assert "disabled" not in plain(pilot, "#code-displays")

        frame = app.state.frame  # a breakpoint at the current line, disabled: a hollow mark
        await submit(pilot, "#code-break", f"{frame.file}:{frame.line}")
        await submit(pilot, "#code-break", "disable 3")
        source = app.query_one(SourceView)
        row = next(i for i, line in enumerate(frame.source) if line.current)
        assert str(source.get_row_at(row)[0]) == "→○"
        await submit(pilot, "#code-break", "enable 3")
        assert str(source.get_row_at(row)[0]) == "→●"
        source.focus()
        source.move_cursor(row=0)  # the def line: b there fails, and the box stays empty
        app.clear_notifications()
        await press(pilot, "b")
        (note,) = app._notifications
        assert "runs no code" in note.message
        assert app.query_one("#code-break", Input).value == ""

        box = app.query_one("#code-break", Input)
        before = app.state.line_table
        app.clear_notifications()
        await submit(pilot, "#code-break", "disable two")  # caught here: nothing sent
        assert box.value == "disable two" and app.state.line_table == before
        (note,) = app._notifications
        assert note.message == "disable takes breakpoint numbers: disable 1 2"
        box.value = ""
        app.clear_notifications()
        await submit(pilot, "#code-break", "condition 9 i == 2")  # the engine's one line
        (note,) = app._notifications
        assert note.severity == "error"
        assert note.message == "no line breakpoint number 9 (numbers: 1, 2, 3)"
        assert box.value == "condition 9 i == 2"  # back in the box, to be fixed
        box.value = ""
        app.clear_notifications()
        await submit(pilot, "#code-break", "condition 1 i ==")
        (note,) = app._notifications
        assert "not a Python expression" in note.message and "\n" not in note.message
        assert app.state.line_table == before and app.state.status == "paused"
