"""Line events in the stepped forward pass: breakpoints by line and by function, the four
line moves, the paused frame's snapshot, expressions, and no trace left behind."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from test_probes import IDX, nanochat, nanogpt
from test_user_models import FIXTURES, save_user_checkpoint

from gpt_tui.engine.core.frames import BreakpointError, EvaluateError, evaluate_in, model_files
from gpt_tui.engine.core.line_tracer import tracing_here
from gpt_tui.engine.core.session import ModelSpec, Session
from gpt_tui.engine.core.stepping import ForwardStepper

MODELS = Path(__file__).resolve().parents[2] / "gpt_tui" / "models"


def line_of(path: Path, marker: str) -> int:
    """The line holding `marker` (tests never hard-code line numbers)."""
    lines = path.read_text().splitlines()
    return next(i + 1 for i, text in enumerate(lines) if marker in text)


def forward_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "gpt-tui-forward"]


def local(frame, name):
    return next(v for v in frame.locals if v.name == name)


def test_model_files_are_the_family_and_its_helpers_never_torch_or_the_engine() -> None:
    names = {Path(f).name for f in model_files(nanogpt())}
    assert names == {"nanogpt.py", "kv_cache.py", "sampling.py"}


def test_line_breakpoint_at_the_attention_kernel_shows_q_k_v_per_head() -> None:
    model = nanogpt()
    c = model.config
    line = line_of(MODELS / "nanogpt.py", "y = F.scaled_dot_product_attention(")
    with ForwardStepper(model, IDX) as stepper:
        stepper.set_line_breakpoints([f"nanogpt.py:{line}"])
        stepper.continue_()
        frame = stepper.frame
        assert (frame.where, frame.reason) == (f"nanogpt.py:{line}", "breakpoint")
        assert frame.function == "CausalSelfAttention.forward"
        assert frame.module == "transformer.h.0.attn"
        assert [e.function for e in frame.stack] == [
            "GPT.forward",
            "Block.forward",
            "CausalSelfAttention.forward",
        ]
        assert [e.module for e in frame.stack][1] == "transformer.h.0"
        for name in "qkv":
            value = local(frame, name)
            assert value.kind == "tensor" and value.dtype == "float32"
            assert value.shape == (IDX.shape[0], c.n_head, IDX.shape[1], c.n_embd // c.n_head)
        assert [s.number for s in frame.source if s.current] == [line]
        assert local(frame, "T").repr == str(IDX.shape[1])
        # the module events before the pause are in the same stream
        assert stepper.current.name.startswith("transformer.h.0")
        stepper.continue_()
        assert stepper.frame.module == "transformer.h.1.attn"  # the breakpoint's next hit
        assert stepper.continue_() is None and stepper.finished and stepper.frame is None
    assert not forward_threads()


def test_function_breakpoint_stops_at_the_first_line_and_return_gives_the_result() -> None:
    with ForwardStepper(nanochat(), IDX) as stepper:
        stepper.set_line_breakpoints(["norm"])
        stepper.continue_()
        frame = stepper.frame
        assert frame.function == "norm" and frame.reason == "breakpoint"
        assert [v.name for v in frame.locals] == ["x"]
        shape = local(frame, "x").shape
        caller = frame.stack[-2].function
        stepper.set_line_breakpoints([])
        stepper.step_line("return")
        back = stepper.frame
        assert back.function == caller and back.reason == "step"
        assert back.returned.name == "norm returned" and back.returned.shape == shape


def test_next_stays_in_the_frame_and_into_enters_a_called_model_function() -> None:
    line = line_of(MODELS / "nanogpt.py", "x = x + self.attn(self.ln_1(x)")
    with ForwardStepper(nanogpt(), IDX) as stepper:
        stepper.set_line_breakpoints([f"nanogpt.py:{line}"])
        stepper.continue_()
        assert stepper.frame.function == "Block.forward"
        stepper.set_line_breakpoints([])
        stepper.step_line("next")
        assert (stepper.frame.function, stepper.frame.line) == ("Block.forward", line + 1)
        stepper.step_line("into")  # self.ln_2(x): our LayerNorm.forward
        assert stepper.frame.function == "LayerNorm.forward"
        assert stepper.frame.module == "transformer.h.0.ln_2"
        assert len(stepper.frame.stack) == 3
        stepper.step_line("return")
        assert stepper.frame.function == "Block.forward"
        stepper.step_line("continue")
        assert stepper.finished


def test_line_and_module_events_interleave_in_execution_order() -> None:
    line = line_of(MODELS / "nanogpt.py", "x = self.gelu(self.c_fc(x))")
    with ForwardStepper(nanogpt(), IDX, breakpoints=["*.mlp"]) as stepper:
        stepper.set_line_breakpoints([f"nanogpt.py:{line}"])
        stops = []
        while stepper.continue_() is not None or not stepper.finished:
            if stepper.frame is not None:
                stops.append(("line", stepper.frame.module))
            else:
                stops.append((stepper.current.name, stepper.current.phase))
        assert stops == [
            ("transformer.h.0.mlp", "in"),
            ("line", "transformer.h.0.mlp"),
            ("transformer.h.1.mlp", "in"),
            ("line", "transformer.h.1.mlp"),
        ]


def evaluate(stepper: ForwardStepper, expr: str):
    """An expression at the pause, run in the forward thread as the expression box runs it."""
    return stepper.in_frame(lambda frame: evaluate_in(frame, expr)[0])


def test_expressions_run_in_the_paused_frame_and_an_error_stays_paused() -> None:
    with ForwardStepper(nanogpt(), IDX) as stepper:
        stepper.set_line_breakpoints(["MLP.forward"])
        stepper.continue_()

        shape = evaluate(stepper, "x.shape")
        x_shape = list(local(stepper.frame, "x").shape)
        assert shape.error is None and shape.value.repr == f"torch.Size({x_shape})"
        norm = evaluate(stepper, "x.norm(dim=-1)")
        assert norm.value.kind == "tensor" and norm.value.shape == tuple(IDX.shape)
        failed = evaluate(stepper, "x.no_such_thing")
        assert failed.value is None and "\n" not in failed.error
        assert failed.error.startswith("AttributeError")
        assert stepper.frame.function == "MLP.forward"  # still paused
        assert evaluate(stepper, "x.sum() * 0").value.max == 0
        stepper.step_line("continue")
        assert stepper.frame.function == "MLP.forward"


def test_expressions_need_a_line_pause() -> None:
    with ForwardStepper(nanogpt(), IDX, breakpoints=["*.mlp"]) as stepper:
        stepper.continue_()
        with pytest.raises(EvaluateError, match="pause at a line"):
            evaluate(stepper, "x")


@pytest.mark.parametrize(
    "spec,message",
    [
        ("nosuch_function", "matches no line or function"),
        ("other.py:3", "no file 'other.py'"),
        ("nanogpt.py:{blank}", "runs no code"),
    ],
)
def test_a_breakpoint_that_matches_nothing_names_the_files_searched(spec, message) -> None:
    blank = (MODELS / "nanogpt.py").read_text().splitlines().index("") + 1
    with ForwardStepper(nanogpt(), IDX) as stepper:
        with pytest.raises(BreakpointError, match=message) as err:
            stepper.set_line_breakpoints([spec.format(blank=blank)])
        assert "nanogpt.py" in str(err.value) and "\n" not in str(err.value)


def test_no_trace_function_unless_armed_and_none_left_after_an_abort() -> None:
    model = nanogpt()
    seen: list[object] = []
    inner = model.transformer.h[0].mlp.c_fc  # runs inside MLP.forward, before its last line
    hook = inner.register_forward_pre_hook(lambda m, a: seen.append(tracing_here()))
    last = line_of(MODELS / "nanogpt.py", "return self.dropout(self.c_proj(x))")
    try:
        with ForwardStepper(model, IDX, breakpoints=["transformer.h.1.mlp"]) as stepper:
            stepper.continue_()
            assert seen == [False]  # module stepping only: nothing traces
        with ForwardStepper(model, IDX) as stepper:
            stepper.set_line_breakpoints([f"nanogpt.py:{last}"])
            stepper.continue_()
            assert seen[-1] and not tracing_here()  # only that thread
            stepper.abort()
            assert not forward_threads()
        with ForwardStepper(model, IDX, breakpoints=["transformer.h.1.mlp"]) as stepper:
            stepper.continue_()  # a new forward thread
            assert not seen[-1]
        assert not forward_threads()
    finally:
        hook.remove()


@pytest.mark.parametrize(
    "file,by_line,by_function",
    [
        ("model.py", "if self.flash:", "CausalSelfAttention.forward"),
        ("gpt.py", "q, k = norm(q), norm(k)", "norm"),
    ],
)
def test_user_model_files_break_by_line_and_by_function(
    tmp_path, file, by_line, by_function
) -> None:
    ckpt = save_user_checkpoint(file, tmp_path, compiled=False)
    session = Session.open(
        ModelSpec(checkpoint=str(ckpt), model_file=str(FIXTURES / file), device="cpu")
    )
    try:
        line = line_of(FIXTURES / file, by_line)
        cases = [(f"{file}:{line}", line, "q"), (by_function, None, "x")]
        for spec, where, tensor in cases:
            stepper = session.stepper([1, 5, 9, 3, 7])
            stepper.set_line_breakpoints([spec])
            stepper.continue_()
            frame = stepper.frame
            assert frame.file == file and frame.reason == "breakpoint"
            assert where is None or frame.line == where
            assert local(frame, tensor).kind == "tensor"
            width = local(frame, tensor).shape[-1]
            assert evaluate(stepper, f"{tensor}.shape[-1]").value.repr == str(width)
            session.release(stepper)
    finally:
        session.close()
    assert not forward_threads()
