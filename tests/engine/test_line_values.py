"""What a pause at a line shows of a value: a scalar's number, a small tensor's values, a
big one's statistics, a tuple of tensors element by element; the locals read again after
a `!statement`; `next` past a statement spanning several lines in one move; a line
breakpoint on a line without code refused, naming the nearest lines with code."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_frames import evaluate, line_of, local
from test_probes import IDX, nanochat, nanogpt

from gpt_tui.engine.core.frames import BreakpointError
from gpt_tui.engine.core.session import ModelSpec, Session
from gpt_tui.engine.core.stepping import ForwardStepper
from gpt_tui.engine.debugger import Debugger

MODELS = Path(__file__).resolve().parents[2] / "gpt_tui" / "models"
KERNEL = "y = F.scaled_dot_product_attention("


@pytest.fixture
def at_kernel() -> Iterator[ForwardStepper]:
    line = line_of(MODELS / "nanogpt.py", KERNEL)
    with ForwardStepper(nanogpt(), IDX) as stepper:
        stepper.set_line_breakpoints([f"nanogpt.py:{line}"])
        stepper.continue_()
        yield stepper


@pytest.mark.parametrize("expr", ["x.std()", "x.abs().max()", "q.norm(dim=-1).mean()"])
def test_a_scalar_result_shows_its_value(at_kernel: ForwardStepper, expr: str) -> None:
    value = evaluate(at_kernel, expr).value
    exact = float(evaluate(at_kernel, f"float({expr})").value.repr)
    match = re.fullmatch(r"tensor\((\S+)\) float32 cpu", value.repr)
    assert match, value.repr
    assert float(match[1]) == pytest.approx(exact, rel=5e-3)
    assert value.shape == () and value.mean == pytest.approx(exact, rel=1e-5)


def test_small_tensors_show_their_values_and_big_ones_their_statistics(
    at_kernel: ForwardStepper,
) -> None:
    one = evaluate(at_kernel, "x[0, 0, :1]").value
    first = float(evaluate(at_kernel, "float(x[0, 0, 0])").value.repr)
    assert re.fullmatch(r"tensor\(\[(\S+)\]\) float32 cpu", one.repr)
    assert float(one.repr[8:].split("]")[0]) == pytest.approx(first, rel=5e-3)
    assert evaluate(at_kernel, "torch.arange(4).view(2, 2)").value.repr == (
        "tensor([[0, 1], [2, 3]]) int64 cpu"
    )
    assert evaluate(at_kernel, "T > 0").value.repr == "True"
    assert evaluate(at_kernel, "torch.tensor(True)").value.repr == "tensor(True) bool cpu"
    big = evaluate(at_kernel, "q").value
    shape = ", ".join(map(str, big.shape))
    assert big.repr.startswith(f"tensor[{shape}] float32 cpu μ {big.mean:.3g} σ {big.std:.3g} ")
    assert big.repr.endswith(f"[{big.min:.3g}, {big.max:.3g}]")
    assert local(at_kernel.frame, "q").repr == big.repr  # the locals say the same


def test_a_tuple_of_tensors_shows_every_element_within_the_width(
    at_kernel: ForwardStepper,
) -> None:
    probs = "torch.softmax(x[0, -1], -1)"
    shown = evaluate(at_kernel, f"{probs}.topk(5)").value.repr
    indices = evaluate(at_kernel, f"{probs}.topk(5).indices.tolist()").value.repr
    values = evaluate(at_kernel, f"{probs}.topk(5).values.tolist()").value.repr
    assert shown.startswith("topk(values=tensor([") and len(shown) <= 120
    assert f"indices=tensor({indices}) int64 cpu)" in shown
    assert f"{float(values.strip('[]').split(',')[0]):.3g}" in shown
    pair = evaluate(at_kernel, "(T, x[0, 0, :2], q)").value.repr
    assert pair.startswith(f"({IDX.shape[1]}, tensor([") and "tensor[1, " in pair


def test_next_passes_a_statement_spanning_lines_in_one_move(at_kernel: ForwardStepper) -> None:
    after = line_of(MODELS / "nanogpt.py", "y = y.transpose(1, 2).contiguous()")
    at_kernel.set_line_breakpoints([])
    at_kernel.step_line("next")
    assert at_kernel.frame.line == after
    assert local(at_kernel.frame, "y").shape == local(at_kernel.frame, "q").shape


def test_into_passes_the_argument_lines_of_a_call_to_torch(at_kernel: ForwardStepper) -> None:
    after = line_of(MODELS / "nanogpt.py", "y = y.transpose(1, 2).contiguous()")
    at_kernel.set_line_breakpoints([])
    at_kernel.step_line("into")
    assert at_kernel.frame.line == after


def test_a_statement_rereads_the_locals_at_once() -> None:
    debugger = Debugger(Session.open(ModelSpec(config="tiny")))
    try:
        debugger.set_prompt("ROMEO:")
        line = line_of(MODELS / "nanogpt.py", KERNEL)
        debugger.set_line_breakpoints([f"nanogpt.py:{line}"])
        before = debugger.step_line("continue")
        assert local(before.frame, "x").max > 0
        state = debugger.evaluate("!x = x * 0")
        x = local(state.frame, "x")
        assert (x.min, x.max, x.mean) == (0, 0, 0)
        assert state.frame.where == before.frame.where and state.status == "paused"
        assert local(state.frame, "q") == local(before.frame, "q")
    finally:
        debugger.close()


@pytest.mark.parametrize("marker", [None, "def forward(self, x: torch.Tensor, kv_cache", ""])
def test_a_line_without_code_is_refused_naming_the_nearest_code(marker: str | None) -> None:
    path = MODELS / "nanogpt.py"
    line = 1 if marker is None else line_of(path, marker) if marker else None
    if line is None:  # a blank line inside a function
        lines = path.read_text().splitlines()
        start = line_of(path, KERNEL)
        line = next(i + 1 for i in range(start, len(lines)) if not lines[i].strip())
    with ForwardStepper(nanogpt(), IDX) as stepper:
        with pytest.raises(BreakpointError, match="runs no code") as err:
            stepper.set_line_breakpoints([f"nanogpt.py:{line}"])
        text = str(err.value)
        assert "\n" not in text
        near = [int(n) for n in re.findall(r"nanogpt\.py:(\d+)", text.split("nearest")[1])]
        assert near and all(abs(n - line) < 60 for n in near)
        stepper.set_line_breakpoints([f"nanogpt.py:{n}" for n in near])  # each holds code
        if marker is not None:  # inside forward: the pass stops at one of them
            stepper.continue_()
            assert stepper.frame is not None and stepper.frame.line in near


@pytest.mark.parametrize("model", [nanogpt, nanochat])
def test_the_error_for_an_unknown_name_gives_examples_the_model_has(model) -> None:
    with ForwardStepper(model(), IDX) as stepper:
        with pytest.raises(BreakpointError, match="matches no line or function") as err:
            stepper.set_line_breakpoints(["no_such_function"])
        examples = re.findall(r"'([^']+)'", str(err.value).split("e.g.")[1])
        assert len(examples) == 2 and "no_such_function" not in examples
        for spec in examples:  # each one resolves and stops the pass
            stepper.set_line_breakpoints([spec])
            stepper.continue_()
            assert stepper.frame is not None and stepper.frame.reason == "breakpoint"
