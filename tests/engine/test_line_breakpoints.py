"""Conditional line breakpoints, and line events armed only where a breakpoint can run
(sys.settrace on 3.11: only inside the modules whose forward may reach it; sys.monitoring
on 3.12+: only on the code that holds it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_probes import IDX, nanochat, nanogpt

from gpt_tui.engine.core.frames import BreakpointError, model_files
from gpt_tui.engine.core.line_breakpoints import resolve_breakpoints
from gpt_tui.engine.core.line_scopes import breakpoint_scope
from gpt_tui.engine.core.line_tracer import BACKEND, tracing_here
from gpt_tui.engine.core.stepping import ForwardStepper

MODELS = Path(__file__).resolve().parents[2] / "gpt_tui" / "models"


def line_of(path: Path, marker: str) -> int:
    lines = path.read_text().splitlines()
    return next(i + 1 for i, text in enumerate(lines) if marker in text)


def test_a_condition_stops_only_where_it_holds_in_the_frame() -> None:
    model = nanogpt()
    line = line_of(MODELS / "nanogpt.py", "x = x + self.attn(self.ln_1(x)")
    second = id(model.transformer.h[1])
    with ForwardStepper(model, IDX) as stepper:
        stepper.set_line_breakpoints([f"nanogpt.py:{line} if id(self) == {second}"])
        stepper.continue_()
        assert (stepper.frame.line, stepper.frame.module) == (line, "transformer.h.1")
        stepper.continue_()
        assert stepper.finished


def test_a_function_breakpoint_whose_condition_never_holds_never_stops() -> None:
    with ForwardStepper(nanogpt(), IDX) as stepper:
        stepper.set_line_breakpoints(["MLP.forward if x.dim() == 7"])
        assert stepper.continue_() is None and stepper.finished and stepper.frame is None


def test_a_condition_that_raises_stops_as_pdb_does() -> None:
    with ForwardStepper(nanogpt(), IDX) as stepper:
        stepper.set_line_breakpoints(["MLP.forward if no_such_name > 0"])
        stepper.continue_()
        assert stepper.frame.function == "MLP.forward"


def test_a_condition_that_is_not_python_is_one_line_naming_the_fix() -> None:
    with pytest.raises(BreakpointError, match="not a Python expression") as err:
        resolve_breakpoints(["MLP.forward if x ==="], model_files(nanogpt()))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("spec", ["MLP.forward if ", "MLP.forward if", "nanogpt.py:96 if   "])
def test_an_if_with_nothing_after_it_says_so(spec: str) -> None:
    """'MLP.forward if ' was said to match no line or function."""
    with pytest.raises(BreakpointError, match="nothing follows 'if'"):
        resolve_breakpoints([spec], model_files(nanogpt()))


def scope_of(model, spec: str):
    files = model_files(model)
    bps = resolve_breakpoints([spec], files)
    return breakpoint_scope(model, files, bps.lines, bps.functions)


def test_the_scope_is_the_modules_whose_forward_may_run_the_breakpoint() -> None:
    model = nanogpt()
    assert scope_of(model, "GPT.generate").modules == frozenset()  # never in a forward
    mlps = {id(b.mlp) for b in model.transformer.h}
    assert scope_of(model, "MLP.forward").modules == mlps
    line = line_of(MODELS / "nanogpt.py", "y = F.scaled_dot_product_attention(")
    attns = {id(b.attn) for b in model.transformer.h}
    assert scope_of(model, f"nanogpt.py:{line}").modules == attns
    chat = nanochat()
    # nanochat's `norm` is a plain function, called by the blocks, attention and the model
    assert id(chat) in scope_of(chat, "norm").modules


@pytest.mark.skipif(BACKEND != "sys.settrace", reason="the settrace backend runs on 3.11")
def test_settrace_is_off_in_modules_that_cannot_reach_the_breakpoint() -> None:
    model = nanogpt()
    seen: dict[str, list[bool]] = {"block0": [], "mlp_fc": [], "attn": []}
    hooks = [
        model.transformer.h[0].register_forward_pre_hook(
            lambda m, a: seen["block0"].append(tracing_here())
        ),
        model.transformer.h[0].mlp.c_fc.register_forward_pre_hook(
            lambda m, a: seen["mlp_fc"].append(tracing_here())
        ),
        model.transformer.h[0].attn.register_forward_pre_hook(
            lambda m, a: seen["attn"].append(tracing_here())
        ),
    ]
    try:
        with ForwardStepper(model, IDX) as stepper:
            stepper.set_line_breakpoints(["MLP.forward if x.dim() == 7"])
            stepper.continue_()
        assert seen == {"block0": [False], "mlp_fc": [True], "attn": [False]}
    finally:
        for hook in hooks:
            hook.remove()


def test_a_line_beyond_the_end_of_the_file_says_how_long_the_file_is() -> None:
    lines = (MODELS / "nanogpt.py").read_text().splitlines()
    files = model_files(nanogpt())
    with pytest.raises(BreakpointError) as err:
        resolve_breakpoints(["nanogpt.py:9999"], files)
    assert f"nanogpt.py has {len(lines)} lines" in str(err.value)
    assert "runs no code" not in str(err.value) and "\n" not in str(err.value)
    blank = next(i + 1 for i, text in enumerate(lines) if not text.strip())
    with pytest.raises(BreakpointError, match="runs no code"):  # a blank line inside it
        resolve_breakpoints([f"nanogpt.py:{blank}"], files)
