"""The Code tab: a line breakpoint set in the app, line stepping, locals, expressions and
the tensor viewer, checked against what the engine reports."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input, Static
from ui_helpers import press, settle, tiny_app

import gpt_tui.models.nanogpt as nanogpt_module
from gpt_tui.engine.core.frames import FrameSnapshot, SourceLine
from gpt_tui.ui.widgets.code_pane import SourceView, VariablesTable, breakpoint_lines
from gpt_tui.ui.widgets.tensor_viewer import TensorViewer, number

SIZE = (120, 40)
MARKER = "y = F.scaled_dot_product_attention("


def kernel_line() -> int:
    """The line of nanogpt.py's attention kernel call."""
    lines = Path(nanogpt_module.__file__).read_text().splitlines()
    return next(i for i, text in enumerate(lines, 1) if MARKER in text)


def test_breakpoint_lines_match_the_file_by_suffix_and_the_function_by_name() -> None:
    source = tuple(SourceLine(n, "x", n == 12) for n in (10, 11, 12))
    frame = FrameSnapshot(
        "nanogpt.py", "/m/models/nanogpt.py", 12, "CausalSelfAttention.forward", None,
        "step", (), source, (),
    )  # fmt: skip
    specs = frozenset({"nanogpt.py:11", "models/nanogpt.py:12", "nanochat.py:10", "gpt.py:10"})
    assert breakpoint_lines(specs, frame) == {11, 12}
    for spec in ("forward", "CausalSelfAttention.forward"):
        assert breakpoint_lines(frozenset({spec}), frame) == {10}
    assert breakpoint_lines(frozenset({"Attention.forward", "norm"}), frame) == set()


async def submit(pilot, selector: str, text: str) -> None:
    box = pilot.app.query_one(selector, Input)
    box.focus()
    box.value = text
    await press(pilot, "enter")


def plain(widget: Static) -> str:
    return str(widget.render())


async def test_break_step_evaluate_and_view_in_the_code_tab() -> None:
    line = kernel_line()
    lines = Path(nanogpt_module.__file__).read_text().splitlines()
    after = next(i for i, text in enumerate(lines, 1) if "y = y.transpose(1, 2)" in text)
    app = tiny_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "7")
        where = app.query_one("#code-where", Static)
        assert "Not paused at a line" in plain(where)
        await submit(pilot, "#code-break", f"nanogpt.py:{line}")
        assert app.state.line_breakpoints == {f"nanogpt.py:{line}"}
        shown = plain(app.query_one("#code-displays", Static))
        assert f"line breakpoints: 1 break nanogpt.py:{line}" in shown

        await press(pilot, "escape", "C")
        state = app.state
        frame = state.frame
        assert state.status == "paused" and frame is not None and frame.line == line
        assert frame.where in plain(where) and frame.stack_line in plain(where)
        info = app.info
        hs = info.n_embd // info.n_head
        table = app.query_one(VariablesTable)
        rows = {table.get_row_at(i)[0]: table.get_row_at(i) for i in range(table.row_count)}
        engine = {v.name: v for v in frame.locals}
        for name in ("q", "k", "v"):
            assert engine[name].shape == (1, info.n_head, 6, hs)  # "ROMEO:" is 6 chars
            assert rows[name][1] == str(engine[name].shape).replace(",)", ")")
        source = app.query_one(SourceView)
        current = source.get_row_at(source.cursor_row)
        assert str(current[0]) == "→●" and str(current[1]) == str(line)

        await press(pilot, "N")  # one press past the call's argument lines
        assert app.state.frame.line == after
        assert str(source.get_row_at(source.cursor_row)[0]).startswith("→")

        await submit(pilot, "#code-eval", "q.shape")
        assert app.state.evaluations[-1].value.repr == f"torch.Size([1, {info.n_head}, 6, {hs}])"
        await submit(pilot, "#code-eval", "q.no_such_thing")
        failed = app.state.evaluations[-1]
        assert failed.value is None and failed.error.startswith("AttributeError")
        evals = plain(app.query_one("#code-evals", Static))
        assert "torch.Size" in evals and failed.error in evals
        assert app.state.status == "paused" and app.state.frame.line == after

        table.focus()
        table.move_cursor(row=list(rows).index("q"))
        await press(pilot, "enter")
        viewer = app.query_one(TensorViewer)
        assert viewer.display and not table.display
        assert app.state.tensor_view.shape == engine["q"].shape
        await press(pilot, "right_square_bracket")  # the next head
        assert app.state.tensor_view.fixed == (0, 1)
        await submit(pilot, "#code-eval", "q[0, 1, 2, 3].item()")
        value = float(app.state.evaluations[-1].value.repr)
        shown = str(viewer.render()).splitlines()
        row = next(r for r in shown if r.split()[0] == "2").split()
        assert row[1 + 3] == number(value)  # the label, then columns 0, 1, 2, 3

        await press(pilot, "escape", "x")
        assert app.state.status != "paused" and app.state.frame is None
        assert "Not paused at a line" in plain(where)


async def test_n_starts_a_pass_at_the_first_line_and_b_marks_the_cursor_line() -> None:
    """N from idle stops at GPT.forward's first line (the Stats tab, fed a pass with no
    records yet, keeps working); b in the source toggles a breakpoint at the cursor line."""
    app = tiny_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "N")
        frame = app.state.frame
        assert frame is not None and frame.function == "GPT.forward"
        source = app.query_one(SourceView)
        assert source.has_focus and app.query_one("#tabs").active == "code"
        await press(pilot, "down", "b")
        line = frame.source[source.cursor_row].number
        assert app.state.line_breakpoints == {f"nanogpt.py:{line}"}
        assert str(source.get_row_at(source.cursor_row)[0]) == " ●"
        await press(pilot, "b")
        assert app.state.line_breakpoints == frozenset()
        await press(pilot, "1")  # the Stats tab shows the paused pass
        await press(pilot, "escape", "x")
        assert app.state.status != "paused"


async def test_t_steps_into_a_tokens_sampling_and_v_views_an_expression() -> None:
    """T stops in sample_next with the logits as a local; `v EXPR` opens an expression's
    result in the viewer; C finishes the token, which joins the Generate tab's text."""
    app = tiny_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "T")
        frame = app.state.frame
        assert frame is not None and frame.function == "sample_next"
        assert app.query_one("#tabs").active == "code"
        assert "sampling.py" in plain(app.query_one("#code-where", Static))
        for _ in range(10):  # to the line after the softmax
            if "probs" in {v.name for v in app.state.frame.locals}:
                break
            await press(pilot, "N")
        assert app.state.frame.function == "sample_next"
        await submit(pilot, "#code-eval", "p float(probs.sum())")
        assert abs(float(app.state.evaluations[-1].value.repr) - 1) < 1e-5
        # The same pause shown again keeps the current line in sight.
        source = app.query_one(SourceView)
        top, height = source.scroll_y, source.scrollable_content_region.height
        assert top <= source.cursor_row < top + height
        await submit(pilot, "#code-eval", "v probs.view(5, -1)")
        viewer = app.query_one(TensorViewer)
        assert viewer.display and app.state.tensor_view.shape[0] == 5
        assert viewer.expr == "probs.view(5, -1)"
        await press(pilot, "escape", "C")
        state = app.state
        assert state.status == "finished" and state.frame is None
        assert state.generation is not None and len(state.generation.steps) == 1
        await press(pilot, "4")  # the Generate tab shows the token taken
        shown = str(app.query_one("#gen-text", Static).render())
        assert shown.startswith(state.generation.prompt) and len(shown) > len("ROMEO:")


async def test_v_expr_keeps_the_focus_in_the_expression_box(arch: str) -> None:
    """`v EXPR` opens the viewer and leaves the keys in the box: the next expression typed
    is evaluated at the same pause, not read as app keys (x would abort, n step)."""
    line = kernel_line() if arch == "nanogpt" else None
    app = tiny_app(arch)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await press(pilot, "7")
        await submit(pilot, "#code-break", f"nanogpt.py:{line}" if line else "norm")
        await press(pilot, "escape", "C")
        paused = app.state.frame
        assert app.state.status == "paused" and paused is not None
        box = app.query_one("#code-eval", Input)
        box.focus()
        await press(pilot, *"v x[0]", "enter")
        assert app.query_one(TensorViewer).display and box.has_focus
        await press(pilot, *"x.mean()", "enter")
        state = app.state
        assert state.status == "paused" and state.frame.where == paused.where
        assert state.evaluations[-1].expr == "x.mean()"
        assert state.evaluations[-1].value is not None
        viewer = app.query_one(TensorViewer)
        assert "shift+Tab: [ ] index" in str(viewer.render())  # its keys: one key away
        await press(pilot, "shift+tab")
        assert viewer.has_focus and "shift+Tab" not in str(viewer.render())


def visible(widget) -> str:
    """What a widget shows on screen, row by row (not what its content would be)."""
    strips = widget.render_lines(widget.outer_size.region)
    return "\n".join("".join(seg.text for seg in strip).rstrip() for strip in strips)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_the_newest_evaluation_is_on_screen_after_a_long_one(size) -> None:
    """A three-line reply (clear 1 is a pdb word the box does not run), then two short
    results: each short one shows the moment it comes, the long one cut short above."""
    app = tiny_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await press(pilot, "7")
        await submit(pilot, "#code-break", f"nanogpt.py:{kernel_line()}")
        await press(pilot, "escape", "C")
        assert app.state.status == "paused"
        evals = app.query_one("#code-evals")
        await submit(pilot, "#code-eval", "clear 1")
        assert "break-at box" in visible(evals)  # the end of its reply
        for expr in ("x.sum()", "x.mean()"):
            await submit(pilot, "#code-eval", expr)
            repr_ = app.state.evaluations[-1].value.repr
            assert f"{expr} → {repr_}" in visible(evals), visible(evals)
        assert "x.sum() →" in visible(evals)
        if size == (80, 24):  # clear 1's reply, cut short (at 120x40 all of it fits)
            assert visible(evals).splitlines()[0].endswith("…"), visible(evals)
