"""What a new user's first session tripped on: tables refilled in place painted squashed,
one-letter keys acting on the wrong widget, q losing a paused pass, the hidden tree, and r
passing breakpoints by without a word."""

from __future__ import annotations

import pytest
from test_app import footer_keys
from textual import events
from textual.widgets import Input, Tabs
from ui_helpers import press, select, settle, tiny_app

from gpt_tui.ui.widgets.compare import ComparePanel
from gpt_tui.ui.widgets.param_table import ParamTable

SIZES = [(80, 24), (120, 40)]


def on_screen(app) -> str:
    """The screen as painted: what the terminal shows."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


@pytest.mark.parametrize("size", SIZES)
async def test_a_params_refill_never_paints_squashed(size: tuple[int, int]) -> None:
    """A paint between the table's refill and its next idle must already give each column
    its width: nothing repaints the table after (its size did not change). Before, the
    columns stayed as narrow as their labels ("transf")."""
    app = tiny_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await press(pilot, "2")
        table = app.query_one(ParamTable)
        for by_size in (True, False, True):
            table.by_size = by_size  # as t does: the table is refilled at once
            on_screen(app)  # a paint before the table idles
            await settle(pilot)
            lines = on_screen(app).splitlines()
            header = next(line for line in lines if " params " in line and " share " in line)
            assert header.index(" params ") >= len(" h.0.attn.c_attn.weight"), header
            assert any(" h.0.attn.c_attn.weight " in line for line in lines), by_size


@pytest.mark.parametrize("size", SIZES)
async def test_a_diff_refill_never_paints_squashed(size: tuple[int, int]) -> None:
    app = tiny_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await press(pilot, "8")
        panel = app.query_one(ComparePanel)
        panel.query_one("#compare-b-dtype").value = "bfloat16"
        await pilot.click("#compare-diff")
        await settle(pilot)
        view = app.state.compare
        assert view is not None and view.comparison is not None
        for _ in range(2):
            panel.view = view  # as a snapshot does: the table is refilled at once
            on_screen(app)  # a paint before the table idles
            await settle(pilot)
            lines = on_screen(app).splitlines()
            header = next(line for line in lines if "max |Δ|" in line)
            assert header.index("max |Δ|") > len(" transformer.h.0.resid_pre"), header
            assert any(" transformer.h.0.resid_pre " in line for line in lines)


async def test_q_with_a_paused_pass_asks_once_and_a_second_q_quits() -> None:
    app = tiny_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await press(pilot, "s")  # a pass paused at its first module
        assert app.paused_at is not None
        await press(pilot, "q")
        assert app.is_running  # before, the app closed here and the pass was lost
        asked = [n.message for n in app._notifications if n.title == "quit?"]
        assert asked == [
            f"a pass is paused at {app.paused_at}: q again to quit, any other key stays"
        ]
        await press(pilot, "j", "q")  # another key in between: asked again, still here
        assert app.is_running and app.paused_at is not None
        await press(pilot, "q")
    assert app.return_code == 0


async def test_qq_arriving_together_asks_once_and_the_next_q_quits() -> None:
    """A pasted `qq` (or q held down): the second q was typed before the question was on
    screen, so it neither quits nor asks again; a q pressed after it quits."""
    app = tiny_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await press(pilot, "s")
        assert app.paused_at is not None
        for _ in range(3):  # in the app's queue at once, as a terminal read delivers them
            app.post_message(events.Key("q", "q"))
        await settle(pilot)
        assert app.is_running and app.paused_at is not None
        asked = [n.message for n in app._notifications if n.title == "quit?"]
        assert asked == [
            f"a pass is paused at {app.paused_at}: q again to quit, any other key stays"
        ]
        await press(pilot, "q")
    assert app.return_code == 0


async def test_ctrl_q_asks_the_same_way() -> None:
    app = tiny_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await press(pilot, "s", "ctrl+q")
        assert app.is_running
        asked = [n.message for n in app._notifications if n.title == "quit?"]
        assert asked and asked[0].endswith(": ctrl+q again to quit, any other key stays")
        await press(pilot, "ctrl+q")
    assert app.return_code == 0


async def test_q_with_nothing_to_lose_quits_at_once() -> None:
    app = tiny_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await press(pilot, "r")  # a whole pass: nothing paused
        await press(pilot, "q")
    assert app.return_code == 0


@pytest.mark.parametrize(
    ("tab", "box"),
    [("7", "#code-break"), ("8", "#compare-b-prompt"), ("9", "#cost-batch"), ("1", "#prompt")],
)
async def test_e_puts_the_keys_in_the_tabs_text_box(tab: str, box: str) -> None:
    """From the tab strip, `e` and then what the box's example says: the text lands in the
    box, and no one-letter key acts (before, q quit and U, T stepped)."""
    app = tiny_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await press(pilot, tab)
        app.query_one(Tabs).focus()  # where a Tab count may land
        await press(pilot, "e")
        focused = app.focused
        assert isinstance(focused, Input) and focused.id == box.lstrip("#")
        focused.value = ""
        await press(pilot, *"JULIET")
        assert focused.value == "JULIET" and app.is_running
        assert app.state.status == "idle" and app.state.run is None  # nothing stepped
        app.query_one(Tabs).focus()
        await settle(pilot)
        assert "e" in footer_keys(app)  # said where the keys are


async def test_e_in_the_code_tab_goes_where_to_break_then_to_the_expression() -> None:
    """Not paused at a line, the Code tab's useful box is where to break; paused, it is
    the expression box."""
    from test_code_pane import kernel_line

    app = tiny_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await press(pilot, "7", "e")
        assert app.focused is not None and app.focused.id == "code-break"
        await press(pilot, *f"nanogpt.py:{kernel_line()}", "enter", "escape", "C")
        assert app.state.frame is not None and app.state.frame.line == kernel_line()
        await press(pilot, "e")
        assert app.focused is not None and app.focused.id == "code-eval"


def _arriving_together(app, *keys: str) -> None:
    """Keys posted before any is handled: how a paste, or a fast typist over SSH, reaches
    the app (Pilot's press waits between keys, and hid the bug)."""
    from textual import events
    from textual.keys import _character_to_key

    for key in keys:
        char = "/" if key == "slash" else key
        app.post_message(events.Key(_character_to_key(char), char))


@pytest.mark.parametrize(
    ("first", "box"), [("e", "code-eval"), ("p", "prompt"), ("slash", "tree-filter")]
)
async def test_keys_right_behind_the_one_that_opens_a_box_go_into_it(first: str, box: str) -> None:
    """Paused at a line, `e` then `x.std()` at once: before, the focus moved only after
    the queued keys were handled, so `x` aborted the pause and `s` started a new pass."""
    from test_code_pane import kernel_line

    app = tiny_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await press(pilot, "7", "e", *f"nanogpt.py:{kernel_line()}", "enter", "escape", "C")
        assert app.state.frame is not None and app.state.frame.line == kernel_line()
        if first != "slash":
            await press(pilot, "escape")  # the focus off any box
        else:
            await press(pilot, "1", "escape")  # the tree shows (and has the focus)
        _arriving_together(app, first, *"x.std()")
        await settle(pilot)
        assert app.focused is not None and app.focused.id == box
        assert app.focused.value.endswith("x.std()")
        assert app.state.frame is not None and app.state.frame.line == kernel_line()


async def test_r_says_once_that_it_passes_the_breakpoints_by() -> None:
    app = tiny_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await press(pilot, "r")  # no breakpoint: nothing to say
        await press(pilot, "escape")
        select(app, "transformer.h.1.mlp")
        await press(pilot, "b", "r", "r")
        said = [n.message for n in app._notifications if n.message.startswith("r runs")]
        assert said == ["r runs the whole pass, past the breakpoint; c stops at it"]
        assert app.state.status != "paused"  # r still runs the whole pass
        await press(pilot, "c")
        assert app.paused_at == "transformer.h.1.mlp"


async def test_r_says_once_that_it_runs_past_the_nan_watch() -> None:
    app = tiny_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await press(pilot, "w", "r", "r")
        said = [n.message for n in app._notifications if n.message.startswith("r runs")]
        assert said == ["r runs the whole pass, past the NaN/Inf watch; c stops at it"]
        assert app.state.watch_nonfinite and app.state.status != "paused"
        await press(pilot, "escape")
        select(app, "transformer.h.1.mlp")
        await press(pilot, "b", "r")  # a breakpoint too: said once more, for both
        said = [n.message for n in app._notifications if n.message.startswith("r runs")]
        assert said[1:] == [
            "r runs the whole pass, past the breakpoint and the NaN/Inf watch; c stops at them"
        ]


@pytest.mark.parametrize("size", SIZES)
async def test_the_hidden_tree_says_how_to_come_back(size: tuple[int, int]) -> None:
    """At 80 columns the first screen has no tree: the tab strip's end says Esc brings
    it back, and says nothing once the tree is there (or always there, at 120)."""
    app = tiny_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        tabs_line = on_screen(app).splitlines()[2]
        narrow = size[0] < 100
        assert ("Esc: modules" in tabs_line) is narrow, tabs_line
        assert " Stats  Params  Attn  Generate  Diagram  Train  Code  Diff  Cost " in tabs_line
        if narrow:
            assert not app.query_one("#left").display
            await pilot.click("#tree-hint")  # the hint itself brings the tree back
            await settle(pilot)
            assert app.query_one("#left").display and "Esc: modules" not in on_screen(app)
            await press(pilot, "1")  # the tab again: the tree steps aside, the hint is back
            assert "Esc: modules" in on_screen(app).splitlines()[2]


async def test_a_resized_terminal_lays_out_for_its_new_width() -> None:
    """The layout followed the width only at the next focus change: widened from 80 to
    110 columns the tree stayed hidden, and the hint stayed where 80 columns put it."""
    app = tiny_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.resize_terminal(110, 24)
        await settle(pilot)
        assert app.query_one("#left").display  # a rail of names beside the focused tab
        assert "Esc: modules" not in on_screen(app)
        await pilot.resize_terminal(90, 24)
        await settle(pilot)
        assert not app.query_one("#left").display
        assert on_screen(app).splitlines()[2].endswith(" Esc: modules ")  # at its right end


async def test_keys_typed_behind_a_boxs_enter_act_after_it() -> None:
    """A breakpoint typed, then Enter, Esc and C at once (a paste, or SSH delivering them
    together): before, C's pass started before the box's breakpoint was set and ran by."""
    from test_code_pane import kernel_line

    app = tiny_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await press(pilot, "7", "e", *f"nanogpt.py:{kernel_line()}")
        for key, char in (("enter", "\r"), ("escape", "\x1b"), ("C", "C")):
            app.post_message(events.Key(key, char))  # in the app's queue at once
        await settle(pilot)
        assert app.state.frame is not None and app.state.frame.line == kernel_line()


async def test_a_run_with_nan_rows_says_what_their_moments_are() -> None:
    """A row holding Inf showed a finite max with nothing to say it left the Inf out."""
    from gpt_tui.engine.analysis.interventions import Interventions, inject_nonfinite
    from gpt_tui.engine.core.trace import FINITE_ONLY

    app = tiny_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await press(pilot, "r", "1")
        note = app.query_one("#stats-finite")
        assert not note.display
        Interventions(app.debugger.session.model).add(inject_nonfinite("transformer.h.0.mlp"))
        await press(pilot, "r")
        assert note.display and FINITE_ONLY in str(note.render())


@pytest.mark.parametrize("size", SIZES)
async def test_an_esc_pressed_as_the_first_frame_shows_brings_the_tree(size, monkeypatch) -> None:
    """The start-up focus was deferred: an Esc arriving while the app laid out its first
    screen was handled first, then the shown tab took the focus and hid the tree again
    (a flaky tmux test). The Esc is posted from inside that window: the tab's mount."""
    from gpt_tui.ui.tab_views import TabViews

    mount = TabViews.mount
    posted: list[str] = []

    async def mount_then_esc(self, tab: str) -> None:
        await mount(self, tab)
        if not posted:
            posted.append(tab)
            self._app.post_message(events.Key("escape", "\x1b"))

    monkeypatch.setattr(TabViews, "mount", mount_then_esc)
    app = tiny_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        assert posted
        assert app.focused is app.query_one("#tree") and app.query_one("#left").display
        assert "Esc: modules" not in on_screen(app)
