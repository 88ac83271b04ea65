"""Issue 21's small defects, seen as a new user sees them: the break-at example names the
family's own file, T's stop says what it is, a filter that matches nothing says so, the
probs viewer opens at the top token and g goes to an index, the Train tab says its mode,
its sparklines stay on screen at 80x24, and a --model-file nanochat model shows its KV
shapes. Each is checked against what the engine reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from textual.widgets import Input, Static
from ui_helpers import press, settle, tiny_app

from gpt_tui.io.model_file import load_model_file
from gpt_tui.ui.widgets.status import StatusBar
from gpt_tui.ui.widgets.tensor_viewer import TensorViewer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "user_models"


def plain(widget: Static) -> str:
    return str(widget.render())


async def test_the_break_at_example_is_the_attention_call_in_the_familys_file(arch) -> None:
    app = tiny_app(arch)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await press(pilot, "7")
        hint = app.query_one("#code-break", Input).placeholder
        example = hint.split(" · ")[0].removeprefix("break at: ").split(", ")[0]
        file, line = example.split(":")
        assert file == f"{arch}.py"
        source = Path(__file__).resolve().parents[2] / "gpt_tui" / "models" / file
        assert "scaled_dot_product_attention(" in source.read_text().splitlines()[int(line) - 1]
        assert example in plain(app.query_one("#code-where", Static))


async def test_t_stops_at_sampling_and_says_so_not_breakpoint() -> None:
    app = tiny_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await press(pilot, "T")
        assert app.state.frame.function == "sample_next"
        stepper = app.query_one(StatusBar).stepper
        assert "sampling (T stops here)" in stepper and "breakpoint" not in stepper


async def test_a_filter_that_matches_nothing_says_so() -> None:
    app = tiny_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        note = app.query_one("#tree-no-match", Static)
        await press(pilot, "slash", "z", "z", "q")
        assert note.display and "'zzq'" in plain(note)
        await press(pilot, "backspace", "backspace", "backspace", "m", "l", "p")
        assert not note.display


async def test_the_probs_viewer_opens_at_the_top_token_and_g_goes_to_an_index() -> None:
    app = tiny_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await press(pilot, "T")
        for _ in range(10):
            if "probs" in {v.name for v in app.state.frame.locals}:
                break
            await press(pilot, "N")
        box = app.query_one("#code-eval", Input)
        box.focus()
        box.value = "v probs"
        await press(pilot, "enter")
        viewer = app.query_one(TensorViewer)
        values = app.state.tensor_view.values
        top = int(np.argmax(values[0]))
        shown = str(viewer.render()).splitlines()[2].split()  # the column numbers
        assert str(top) in shown and values[0, top] == values.max()
        viewer.focus()
        await press(pilot, "g")
        assert box.has_focus and box.value == "g "
        far = 60 if top < 30 else 3
        await press(pilot, *str(far))
        assert box.value == f"g {far}", box.value
        await press(pilot, "enter")
        shown = str(viewer.render()).splitlines()[2].split()
        assert str(far) in shown and viewer.has_focus
        assert app.state.status == "paused"  # g typed into the box never reached the app


async def test_the_train_tab_says_eval_mode_and_where_dropout_is() -> None:
    app = tiny_app(overrides=["dropout=0.1"])
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await press(pilot, "6")
        head = plain(app.query_one("#train-head", Static))
        assert app.state.training.options.train_mode is False
        # three Dropout modules per block and the embedding's, attention's p as a float
        assert "eval mode · dropout off (p=0.1 in 7 places; on in train mode)" in head


async def test_health_sparklines_are_on_screen_at_80x24() -> None:
    app = tiny_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await press(pilot, "6", "h")
        health = app.query_one("#train-health", Static)
        assert "loss" in plain(health) and "‖grad‖" in plain(health)
        panel = app.query_one("#train-panel")
        lines = plain(health).count("\n") + 1
        assert health.region.height >= min(lines, 9)
        assert health.region.bottom <= panel.region.bottom


def user_checkpoint(tmp_path: Path) -> Path:
    args = dict(sequence_len=16, vocab_size=65, n_layer=2, n_head=4, n_kv_head=2, n_embd=32)
    found = load_model_file(FIXTURES / "gpt.py", model_args=args)
    torch.manual_seed(0)
    model = found.model_class(found.config_class(**args))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "model_args": args}, path)
    return path


async def test_kv_shapes_for_a_model_file_nanochat(tmp_path: Path) -> None:
    from gpt_tui.engine.core.session import ModelSpec
    from gpt_tui.ui.app import GptTuiApp

    spec = ModelSpec(checkpoint=str(user_checkpoint(tmp_path)), model_file=str(FIXTURES / "gpt.py"))
    app = GptTuiApp(spec, show_memory=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await press(pilot, "g", "g")
        view = app.state.generation
        assert view.cache_fill is None  # a user's model: no cache of ours
        kv = plain(app.query_one("#gen-kv", Static))
        t = view.step.context_len
        assert f"K 1×2×{t}×8 V 1×2×{t}×8" in kv and "no cache" in kv


async def test_params_i_shows_each_parameters_std_and_init_rule(arch) -> None:
    from gpt_tui.engine.analysis.init_rules import init_rows
    from gpt_tui.ui.widgets.param_table import ParamTable

    app = tiny_app(arch)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await press(pilot, "2", "i")
        table = app.query_one(ParamTable)
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        by_name = {r[0]: r for r in rows}
        proj = by_name["h.1.attn.c_proj.weight"]
        expected = {"nanogpt": "N(0, 0.01)", "nanochat": "zeros"}[arch]  # 0.02/√(2·2)
        assert proj[2] == expected
        session = app.debugger.session
        engine = {r.name: r for r in init_rows(session.model, session.family)}
        assert len(engine) == len(rows) - 1 - len(app.facts.mode.changes)  # + mode lines
        assert float(proj[1] if proj[1] != "0" else 0) == pytest.approx(
            engine["transformer.h.1.attn.c_proj.weight"].std, rel=0.01, abs=1e-6
        )
        assert by_name["mode"][2] == "eval"
        await press(pilot, "i")
        assert [str(c.label) for c in table.columns.values()][:2] == ["name", "params"]


async def test_c_right_after_a_breakpoint_is_entered_runs_to_it() -> None:
    # The hint says "C runs to it": after Enter in the break-at box, C is a key, not text.
    app = tiny_app("nanogpt")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await press(pilot, "7", "e")
        box = app.query_one("#code-break", Input)
        assert app.focused is box
        await press(pilot, *"CausalSelfAttention.forward", "enter", "C")
        assert box.value == ""
        assert app.state.line_breakpoints == {"CausalSelfAttention.forward"}
        frame = app.state.frame
        assert app.state.status == "paused" and frame is not None
        assert frame.function == "CausalSelfAttention.forward"
