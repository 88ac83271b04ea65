"""Numerics against hand computations: what each format does to known values, per-head
logits, the softcap, and where a narrower pass first parts from fp32."""

from __future__ import annotations

import math
import threading

import pytest
import torch
from tiny_models import tiny_nanochat

from gpt_tui.engine.analysis.numerics import (
    FORMATS,
    NumericsError,
    check_device_format,
    format_facts,
    numerics,
    tensor_fractions,
    what_if,
)
from gpt_tui.engine.core.model_copy import dtype_copy
from gpt_tui.engine.core.session import ModelSpec, Session
from gpt_tui.engine.debugger import Debugger
from gpt_tui.models import build_model
from gpt_tui.models.config import make_config


def test_fp16_fractions_of_known_values() -> None:
    # fp16: max 65504, smallest normal 2^-14 = 6.1e-5, smallest subnormal 2^-24 = 6e-8
    x = torch.tensor([1e5, -7e4, 1e-8, 1e-6, -3e-5, 1.0, 0.0, 2.0])
    f = tensor_fractions(x)["float16"]
    assert f.overflow == 2 / 8  # 1e5 and -7e4
    assert f.underflow == 1 / 8  # 1e-8 < 2^-25: rounds to zero
    assert f.subnormal == 2 / 8  # 1e-6 and 3e-5 sit below 2^-14
    b = tensor_fractions(x)["bfloat16"]  # bf16's range is fp32's: nothing lost here
    assert (b.overflow, b.underflow, b.subnormal) == (0, 0, 0)
    e4 = tensor_fractions(x)["float8_e4m3fn"]  # max 448, subnormals from 2^-9
    assert e4.overflow == 2 / 8 and e4.underflow == 3 / 8 and e4.subnormal == 0


def test_facts_come_from_finfo() -> None:
    e5 = format_facts("float8_e5m2")
    assert e5.max == 57344 and e5.smallest_normal == 2**-14 and e5.smallest_subnormal == 2**-16
    assert format_facts("float16").smallest_subnormal == 2**-24


@pytest.mark.parametrize("name", FORMATS)
def test_the_fractions_agree_with_a_real_cast(name: str) -> None:
    gen = torch.Generator().manual_seed(0)
    exponent = torch.rand(20000, generator=gen) * 90 - 45  # 1e-45 .. 1e45, fp32's range
    x = torch.pow(10.0, exponent) * torch.sign(torch.randn(20000, generator=gen))
    x = x[torch.isfinite(x) & (x != 0)]
    facts = format_facts(name)
    cast = x.to(getattr(torch, name)).float()
    f = tensor_fractions(x)[name]
    assert f.underflow == pytest.approx((cast == 0).float().mean().item(), abs=1e-3)
    lost_range = ((~torch.isfinite(cast)) | (cast.abs() >= facts.max)).float().mean().item()
    assert f.overflow == pytest.approx(lost_range, abs=2e-3)  # values rounding to max count too
    sub = ((cast != 0) & (cast.abs() < facts.smallest_normal)).float().mean().item()
    assert f.subnormal == pytest.approx(sub, abs=2e-3)


def test_unknown_format_and_meta_device_are_one_line_errors() -> None:
    with pytest.raises(NumericsError, match="unknown --dtype 'int8'"):
        check_device_format(torch.device("cpu"), "int8")
    with pytest.raises(NumericsError, match="meta"):
        check_device_format(torch.device("meta"), "bfloat16")


def _session(model: torch.nn.Module, family: str) -> Session:
    from gpt_tui.io.tokenizers import CharTokenizer

    chars = [chr(ord("a") + i % 26) for i in range(model.config.vocab_size)]
    return Session(model, CharTokenizer(chars), name="tiny", family=family, source="test",
                   device=torch.device("cpu"), dtype=torch.float32)  # fmt: skip


def test_heads_softcap_and_rows_on_nanochat() -> None:
    model = tiny_nanochat()
    report = numerics(_session(model, "nanochat"), [1, 2, 3, 4, 5, 6], "float16", fp32_check=False)
    c = model.config
    assert len(report.heads) == c.n_layer * c.n_head
    # The largest logit of layer 0 head 0 by hand: q·kᵀ/sqrt(hs) after rotary and QK norm,
    # taken from the kernel's own arguments.
    seen = {}

    def spy(q, k, v, *a, **kw):
        seen.setdefault("qk", (q, k))
        return sdpa(q, k, v, *a, **kw)

    sdpa = torch.nn.functional.scaled_dot_product_attention
    torch.nn.functional.scaled_dot_product_attention = spy
    try:
        with torch.no_grad():
            model(torch.tensor([[1, 2, 3, 4, 5, 6]]))
    finally:
        torch.nn.functional.scaled_dot_product_attention = sdpa
    q, k = seen["qk"]
    k = k.repeat_interleave(q.size(1) // k.size(1), dim=1)
    scores = (q[0, 0] @ k[0, 0].T) / math.sqrt(q.size(-1))
    scores = scores.masked_fill(~torch.ones_like(scores, dtype=torch.bool).tril(), -math.inf)
    assert report.heads[0].max_logit == pytest.approx(scores.max().item(), rel=1e-5)
    assert all(0 <= h.entropy <= math.log(6) + 1e-6 for h in report.heads)
    cap = report.softcap
    assert cap is not None and cap.cap == c.softcap
    assert cap.capped_absmax == pytest.approx(
        cap.cap * math.tanh(cap.raw_absmax / cap.cap), rel=1e-4
    )
    assert [m.name for m in report.modules][0] == "transformer.wte"


def test_an_overflowing_module_is_where_fp16_parts_from_fp32() -> None:
    session = Session.open(ModelSpec(config="tiny", device="cpu"))
    with torch.no_grad():
        session.model.transformer.h[1].mlp.c_fc.weight.mul_(3e5)
    report = numerics(session, "hello", "float16")
    c_fc = next(m for m in report.modules if m.name == "transformer.h.1.mlp.c_fc")
    assert c_fc.absmax > 65504 and c_fc.formats["float16"].overflow > 0
    assert c_fc.formats["bfloat16"].overflow == 0
    before = [m for m in report.modules if m.name.startswith("transformer.h.0")]
    assert all(m.formats["float16"].overflow == 0 for m in before)
    assert report.what_if is not None and report.what_if.first is not None
    assert report.what_if.first.startswith("transformer.h.1"), report.what_if.message
    bf16 = numerics(session, "hello", "bfloat16").what_if
    assert bf16 is not None and bf16.tolerance == pytest.approx(1e-2)


def test_heads_whose_largest_logit_grows_every_step_are_flagged() -> None:
    from gpt_tui.engine.analysis.logit_growth import head_logit_growth

    session = Session.open(ModelSpec(config="tiny", device="cpu"))
    before = {k: v.clone() for k, v in session.model.state_dict().items()}
    report = head_logit_growth(session, "ROMEO: ROMEO: ROMEO:", 4, lr=3e-2)
    c = session.config
    assert len(report.heads) == c.n_layer * c.n_head and len(report.losses) == 4
    assert all(len(h.max_logits) == 5 for h in report.heads)
    for h in report.heads:
        rising = all(b > a for a, b in zip(h.max_logits, h.max_logits[1:], strict=False))
        assert h.growing == rising
    # a large learning rate on a repeated prompt sharpens layer 0's attention at every step
    assert {(h.layer, h.head) for h in report.flagged} >= {(0, 0), (0, 1)}
    assert report.flagged[0].max_logits[-1] > 10 * report.flagged[0].max_logits[0]
    for k, v in session.model.state_dict().items():  # the weights are put back
        assert torch.equal(v, before[k])


def test_a_dtype_the_device_lacks_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100-SXM2-16GB")
    with pytest.raises(NumericsError, match="Tesla V100-SXM2-16GB has no bfloat16"):
        check_device_format(torch.device("cuda"), "bfloat16")
    assert check_device_format(torch.device("cuda"), "float16") is torch.float16
    with pytest.raises(NumericsError, match="MPS cannot cast to float8_e5m2"):
        check_device_format(torch.device("mps"), "float8_e5m2")


class _Watcher:
    """A hook's owner that cannot be deep-copied (a lock), like the engine's probes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls = 0

    def hook(self, *_args: object) -> None:
        self.calls += 1


@pytest.mark.parametrize("held", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dtype", ["bfloat16", "float8_e4m3fn"])
def test_the_what_if_copies_leave_the_models_hooks_behind(held: torch.dtype, dtype: str) -> None:
    model = build_model(make_config("tiny", "nanogpt"), "cpu", seed=0).to(held)
    watcher = _Watcher()
    model.transformer.h[0].register_forward_hook(watcher.hook)
    found = what_if(model, [1, 2, 3, 4], dtype)
    assert found.tolerance > 0
    # fp32: the model runs as the fp32 side itself, once; otherwise only copies run
    assert watcher.calls == (1 if held == torch.float32 else 0)
    assert len(model.transformer.h[0]._forward_hooks) == 1  # the model keeps its own


@pytest.mark.parametrize("held", [torch.float32, torch.bfloat16])
def test_the_what_if_copies_are_made_once_in_their_own_dtype(
    held: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each copy is filled straight in its dtype: no full-width copy made first."""
    from gpt_tui.engine.analysis import numerics as module

    made: list[torch.dtype | None] = []

    def counted(model, dtype, check):
        made.append(dtype)
        return dtype_copy(model, dtype, check)

    monkeypatch.setattr(module, "dtype_copy", counted)
    model = build_model(make_config("tiny", "nanogpt"), "cpu", seed=0).to(held)
    module.what_if(model, [1, 2, 3], "float16")
    assert made == ([torch.float16] if held == torch.float32 else [torch.float32, torch.float16])


def test_a_cancel_stops_the_numerics_copies_being_made_and_run() -> None:
    debugger = Debugger(Session.open(ModelSpec(config="tiny")))
    try:
        debugger.set_prompt("ROMEO:")
        model = debugger.session.model
        move = debugger.new_move()
        calls: list[int] = []

        def cancel_after_the_fp32_side(*_args: object) -> None:
            calls.append(1)  # 1: the numerics pass, 2: the what-if's fp32 side (the model)
            if len(calls) == 2:
                assert debugger.cancel(move)

        handle = model.lm_head.register_forward_hook(cancel_after_the_fp32_side)
        state = debugger.measure("numerics", "bfloat16", move=move)
        handle.remove()
        assert state.cancelled and state.measures is None  # the bf16 copy's pass stopped

        move, checks, make = debugger.new_move(), [], debugger.runner.check

        def cancel_at_the_third_tensor(mid: int):
            check = make(mid)

            def counted() -> None:
                checks.append(1)
                if len(checks) == 3:
                    assert debugger.cancel(move)
                check()

            return counted

        debugger.runner.check = cancel_at_the_third_tensor
        state = debugger.measure("numerics", "bfloat16", move=move)
        del debugger.runner.check
        assert state.cancelled and state.measures is None and len(checks) == 3
        state = debugger.measure("numerics", "bfloat16")
        assert not state.cancelled and state.measures.numerics.what_if is not None
    finally:
        debugger.close()
