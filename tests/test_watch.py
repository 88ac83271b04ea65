"""`gpt_tui.watch` in a real training loop: the first non-finite value is named in its phase
(forward, loss, backward, optimizer) and module, the saved case reopens on the same finding,
and with nothing wrong the watch changes no result."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

import gpt_tui
from gpt_tui.cli import run
from gpt_tui.engine.training.watch_case import CaseError, replay_case
from gpt_tui.models import build_model, make_config

FIXTURE = Path(__file__).parent / "fixtures" / "user_models" / "model.py"


def tiny_model(seed: int = 0, arch: str = "nanogpt") -> torch.nn.Module:
    model = build_model(make_config("tiny", arch), "cpu", seed=seed)
    model.train()
    return model


def batches(vocab: int, n: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randint(vocab, (2, 16), generator=g), torch.randint(vocab, (2, 16), generator=g))
        for _ in range(n)
    ]


def train(model, data, *, watch=None, before_step=None, lr=1e-3) -> list[float]:
    """A nanoGPT-style loop; `before_step(step, model, x, y)` may break something."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    context = watch(model, optimizer) if watch else None
    handle = context.__enter__() if context else None
    try:
        for step, (x, y) in enumerate(data):
            if before_step is not None:
                x, y = before_step(step, model, x, y)
            _, loss = model(x, y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
    finally:
        if context:
            context.__exit__(None, None, None)
    del handle
    return losses


def reopened(report: Path, *trust: str) -> dict:
    """What `gpt-tui train-step --case REPORT` finds first."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert run(["train-step", "--case", str(report), "--json", *trust]) == 0
    data = json.loads(out.getvalue())
    hit = data["first_nonfinite"]
    return {"phase": hit["phase"], "where": hit["where"]}


def test_with_nothing_wrong_the_watch_changes_no_result(tmp_path: Path) -> None:
    model = tiny_model()
    data = batches(model.config.vocab_size, 20)
    plain = train(tiny_model(), data)

    def watching(m, opt):
        return gpt_tui.watch(m, optimizer=opt, report=tmp_path / "r")

    watched = train(model, data, watch=watching)
    assert watched == plain  # bit for bit, over 20 seeded steps
    assert not (tmp_path / "r").exists()
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


@pytest.mark.parametrize("arch", ["nanogpt", "nanochat"])
def test_a_nan_in_a_modules_forward_at_step_3_is_named_and_the_case_reopens(
    tmp_path: Path, arch: str
) -> None:
    model = tiny_model(arch=arch)
    report = tmp_path / "report"

    def break_weights(step, m, x, y):
        if step == 3:
            with torch.no_grad():
                m.transformer.h[1].mlp.c_fc.weight[0, 0] = float("nan")
        return x, y

    def watching(m, opt):
        return gpt_tui.watch(m, optimizer=opt, report=report)

    with pytest.raises(gpt_tui.NonFiniteError) as raised:
        train(model, batches(65, 6), watch=watching, before_step=break_weights)
    finding = raised.value.finding
    assert (finding.step, finding.phase, finding.where) == (3, "forward", "transformer.h.1.mlp")
    assert "its input was finite" in str(raised.value) and str(report) in str(raised.value)
    assert not model.transformer.h[0].mlp.c_fc.weight.isnan().any()  # no update after it
    folder = report / (report / "latest").read_text().strip()
    assert folder.name == "step3-forward-h.1.mlp" and str(folder) in str(raised.value)
    case = json.loads((folder / "case.json").read_text())
    assert case["command"] == f"gpt-tui train-step --case {folder}"
    assert case["model_file"] is None and "--trust" not in case["command"]
    assert "gpt-tui train-step --case" in (folder / "README.md").read_text()
    again, session = replay_case(report)
    session.close()
    assert (again.phase, again.where) == ("forward", "transformer.h.1.mlp")
    assert reopened(report) == {"phase": "forward", "where": "transformer.h.1.mlp"}


def sqrt_gate_model(tmp_path: Path):
    """The nanoGPT-style fixture with one realistic bug: an activation written as
    torch.where(x > 0, sqrt(x), 0), finite forward, NaN gradient where x < 0."""
    source = FIXTURE.read_text().replace("self.gelu = nn.GELU()", "self.gelu = SqrtGate()") + (
        "\n\nclass SqrtGate(nn.Module):\n"
        "    def forward(self, x):\n"
        "        return torch.where(x > 0, torch.sqrt(x), torch.zeros_like(x))\n"
    )
    path = tmp_path / "model.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("sqrt_gate_model", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["sqrt_gate_model"] = module
    spec.loader.exec_module(module)
    config = module.GPTConfig(
        block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=True
    )
    torch.manual_seed(0)
    return module.GPT(config)


def test_a_nan_gradient_is_named_in_backward_and_the_users_file_reopens(tmp_path: Path) -> None:
    model = sqrt_gate_model(tmp_path)
    report = tmp_path / "report"

    def watching(m, opt):
        return gpt_tui.watch(m, optimizer=opt, report=report)

    with pytest.raises(gpt_tui.NonFiniteError) as raised:
        train(model, batches(65, 3), watch=watching)
    finding = raised.value.finding
    assert (finding.step, finding.phase, finding.where) == (0, "backward", "transformer.h.1.mlp")
    assert "grad_output was finite" in finding.detail
    case = json.loads((Path(finding.report) / "case.json").read_text())
    assert case["model_file"] == str((tmp_path / "model.py").resolve())
    assert case["command"].endswith("--trust-case-code")
    again, session = replay_case(report, trust_code=True)
    session.close()
    assert (again.phase, again.where) == ("backward", "transformer.h.1.mlp")
    trusted = ("--trust-case-code",)
    assert reopened(report, *trusted) == {"phase": "backward", "where": "transformer.h.1.mlp"}


def test_a_batch_whose_targets_are_all_ignored_is_named_in_the_loss(tmp_path: Path) -> None:
    model = tiny_model()
    report = tmp_path / "report"

    def ignore_all(step, m, x, y):
        return (x, torch.full_like(y, -1)) if step == 2 else (x, y)

    def watching(m, opt):
        return gpt_tui.watch(m, optimizer=opt, report=report, on="report")

    losses = train(model, batches(65, 4), watch=watching, before_step=ignore_all)
    assert math.isnan(losses[2])  # "report" goes on
    case = json.loads((report / "step2-loss-loss" / "case.json").read_text())
    assert (case["finding"]["step"], case["finding"]["phase"]) == (2, "loss")
    assert "all the targets ignored" in case["summary"]
    again, session = replay_case(report)
    session.close()
    assert again.phase == "loss"
    assert reopened(report)["phase"] == "loss"


def test_an_update_that_makes_weights_non_finite_is_named_in_the_optimizer() -> None:
    model = tiny_model()
    with pytest.raises(gpt_tui.NonFiniteError) as raised:
        train(
            model,
            batches(65, 2),
            watch=lambda m, opt: gpt_tui.watch(m, optimizer=opt, report=None),
            lr=float("inf"),
        )
    finding = raised.value.finding
    assert (finding.step, finding.phase) == (0, "optimizer")
    assert finding.where in dict(model.named_parameters())


def test_every_n_checks_one_step_in_n(tmp_path: Path) -> None:
    model = tiny_model()

    def break_at_1(step, m, x, y):
        if step == 1:
            with torch.no_grad():
                m.transformer.h[0].attn.c_attn.weight.fill_(float("nan"))
        return x, y

    with pytest.raises(gpt_tui.NonFiniteError) as raised:
        train(
            model,
            batches(65, 4),
            watch=lambda m, opt: gpt_tui.watch(m, every=2, report=None),
            before_step=break_at_1,
        )
    assert raised.value.finding.step == 2  # step 1 was not checked


def test_a_folder_without_a_case_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CaseError, match="case.json not found"):
        replay_case(tmp_path)


def test_inspect_without_a_terminal_raises_the_clear_error() -> None:
    with pytest.raises(gpt_tui.NoTerminalError, match="needs an interactive terminal"):
        gpt_tui.inspect(tiny_model())


def test_train_step_case_mistakes_are_one_line(tmp_path: Path, capsys) -> None:
    assert run(["train-step", "--case", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "case.json not found" in err
    assert run(["train-step", "--case", str(tmp_path), "--config", "tiny"]) == 2
    assert "drop --checkpoint, --config" in capsys.readouterr().err


def test_a_bare_call_without_with_says_it_watched_nothing() -> None:
    """`gpt_tui.watch(model)` on a line of its own would watch nothing, silently."""
    model = tiny_model()
    with pytest.warns(UserWarning, match=r"gpt_tui.watch\(\.\.\.\) did nothing") as said:
        gpt_tui.watch(model, report=None)
    assert said[0].filename == __file__  # the user's own line
    assert not model._forward_hooks and not model._forward_pre_hooks
    optimizer = torch.optim.SGD(model.parameters())
    with pytest.warns(UserWarning, match=r"gpt_tui.listen\(\.\.\.\) did nothing"):
        gpt_tui.listen(model, optimizer=optimizer)


def test_a_watch_entered_by_hand_keeps_watching_until_it_is_exited() -> None:
    import gc
    import warnings
    import weakref

    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # entered: no "did nothing" warning
        context = gpt_tui.watch(model, optimizer=optimizer, report=None)
        context.__enter__()
        kept = weakref.ref(context)
        del context
        gc.collect()  # before, collecting the context closed the watch and its hooks
    try:
        with torch.no_grad():
            model.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")
        x, y = batches(65, 1)[0]
        with pytest.raises(gpt_tui.NonFiniteError, match="transformer.h.0.mlp"):
            _, loss = model(x, y)
            loss.backward()
            optimizer.step()
    finally:
        kept().__exit__(None, None, None)
    assert not model._forward_hooks and not model.transformer.h[0]._forward_hooks


def test_the_terminal_is_where_textual_reads_and_draws(monkeypatch) -> None:
    """stdin and stderr: `python train.py | tee log` has one (stdout piped), `2> log`
    has none."""
    from gpt_tui import live

    class Tty:
        def __init__(self, tty: bool) -> None:
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    monkeypatch.setattr(sys, "stdin", Tty(True))
    monkeypatch.setattr(sys, "stdout", Tty(False))  # | tee log
    monkeypatch.setattr(sys, "__stderr__", Tty(True))
    assert live.has_terminal()
    monkeypatch.setattr(sys, "stdout", Tty(True))
    monkeypatch.setattr(sys, "__stderr__", Tty(False))  # 2> log
    assert not live.has_terminal()
