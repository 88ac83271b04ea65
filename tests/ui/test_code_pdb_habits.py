"""The Code tab with a pdb user's habits: a breakpoint condition that raises stops and
says so on the pause line; `pp`, `whatis`, `where` and bare `display` in the expression
box; display numbers that stay fixed; a failed command titled in words."""

from __future__ import annotations

from test_code_pdb import SIZE, plain, submit
from ui_helpers import press, settle, tiny_app


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
        assert "its condition raised NameError" in app.state.stepper_line  # the status bar's


async def test_pdb_words_in_the_expression_box() -> None:
    app = tiny_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "7")
        await submit(pilot, "#code-break", "MLP.forward")
        await press(pilot, "escape", "C")
        for text in ("display x.shape", "display x.std()", "display x.dtype", "undisplay 1"):
            await submit(pilot, "#code-eval", text)
        shown = plain(pilot, "#code-displays")
        assert "2 x.std(): " in shown and "3 x.dtype: torch.float32" in shown  # kept numbers
        assert "1 x.std()" not in shown

        for text in ("pp x.shape", "whatis x", "where", "display", "n"):
            await submit(pilot, "#code-eval", text)
        got = {e.expr: e.error or e.value.repr for e in app.state.evaluations}
        assert got["pp x.shape"] == "torch.Size([1, 6, 32])"
        assert got["whatis x"] == "torch.Tensor (1, 6, 32) float32 cpu"
        assert got["where"].splitlines()[-1].endswith("MLP.forward (transformer.h.0.mlp)")
        assert got["display"].splitlines()[0].startswith("2 x.std(): ")
        assert got["n"].startswith("n is a pdb command not run here: type a Python expression")
        evals = plain(pilot, "#code-evals")  # the newest three, `where` a line per frame
        assert "> nanogpt.py:" in evals and "n is a pdb command" in evals
        assert "SyntaxError" not in evals and "NameError" not in evals
        assert app.state.status == "paused"


async def test_a_failed_break_at_command_is_titled_in_words() -> None:
    app = tiny_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "7")
        app.clear_notifications()
        await submit(pilot, "#code-break", "nanogpt.py:9999")
        (note,) = app._notifications
        assert note.title == "Breakpoint command failed" and "line_breakpoint" not in note.title
        assert "nanogpt.py has " in note.message and "lines" in note.message
