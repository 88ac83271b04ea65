"""A watch case says truthfully what it holds and how to open it: an optimizer finding's case
holds the weights the update broke (and says so in case.json, its README and
`train-step --case`), a reopened step that finds something else than the saved finding says
so in one line naming both, the watch's message carries the exact command that opens the
case, and `doctor` shows no made-up validation loss for a case's checkpoint."""

from __future__ import annotations

import contextlib
import io
import json
import shlex
from pathlib import Path

import pytest
import torch
from test_watch import batches, tiny_model

import gpt_tui
from gpt_tui.cli import run
from gpt_tui.engine.training.watch_case import (
    AFTER_UPDATE,
    STEP_START,
    CaseError,
    case_mismatch,
    read_case,
    replay_case,
)

SCALE = 1e6  # the loss's: gradients large enough for an update to overflow
MISMATCH = (
    "the reopened step found forward at transformer.wte, not the saved finding "
    "(optimizer at transformer.wte.weight): the case holds the weights after the update "
    "that broke them"
)


def lr_inf_at_step_3(report: Path | None, accumulate: int, on: str = "report") -> gpt_tui.Finding:
    """A loop whose learning rate becomes inf at step 3, `accumulate` micro-steps a step."""
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = iter(batches(65, 5 * accumulate))
    with gpt_tui.watch(model, optimizer=optimizer, report=report, on=on) as watch:
        for step in range(5):
            if step == 3:
                for group in optimizer.param_groups:
                    group["lr"] = float("inf")
            for _ in range(accumulate):
                x, y = next(data)
                _, loss = model(x, y)
                (loss / accumulate).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if watch.finding is not None:
                break
    assert watch.finding is not None
    return watch.finding


def train_step(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = run(["train-step", *args])
    return code, out.getvalue()


@pytest.mark.parametrize("accumulate", [1, 2])
def test_an_update_an_inf_lr_breaks_is_saved_before_it_and_applied_again(
    tmp_path: Path, accumulate: int
) -> None:
    report = tmp_path / "report"
    finding = lr_inf_at_step_3(report, accumulate)
    where = "transformer.wte.weight"
    assert (finding.step, finding.phase, finding.where) == (3, "optimizer", where)
    assert finding.detail.endswith("; its group's lr is inf")
    folder = Path(finding.report)
    case = json.loads((folder / "case.json").read_text())
    assert case["weights"] == STEP_START
    assert case["update"] == {
        "grads": "grads.pt", "optimizer_class": "AdamW", "groups": [[n for n, _ in
        tiny_model().named_parameters()]],
    }  # fmt: skip
    readme = (folder / "README.md").read_text()
    assert "the weights as they were when the step began (`ckpt.pt`)" in readme
    assert "the gradients the update took (`grads.pt`)" in readme
    assert "on the same finding (it applies the update again)" in readme
    # the saved weights are the step's own: finite, and the optimizer state is step 3's
    ckpt = torch.load(folder / "ckpt.pt", weights_only=True)
    assert all(t.isfinite().all() for t in ckpt["model"].values())
    state = torch.load(folder / "optimizer.pt", weights_only=True)
    assert state["param_groups"][0]["lr"] == float("inf")
    assert all(int(s["step"]) == 3 for s in state["state"].values())

    code, out = train_step("--case", str(report))
    assert code == 0
    lines = out.splitlines()
    assert lines[1] == (
        "the case holds the weights as they were when step 3 began, with the gradients and "
        "optimizer state the update took: the update is applied again"
    )
    # the same update on the same inputs: the same parameter, the same counts
    assert lines[2] == (
        "the update applied again (the case's AdamW, its state and gradients): optimizer at "
        f"{where} ({finding.detail})"
    )
    assert "not the saved finding" not in out
    again, session = replay_case(report)
    session.close()
    assert (again.phase, again.where, again.detail) == ("optimizer", where, finding.detail)

    code, out = train_step("--case", str(report), "--json")
    data = json.loads(out)
    assert data["case_weights"] == lines[1]
    assert data["case_update"]["finding"] == {"phase": "optimizer", "where": where}


def overflowing_update(report: Path) -> gpt_tui.Finding:
    """An SGD update that overflows fp32 with finite settings: nothing warns before it."""
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e38)
    x, y = batches(65, 1)[0]
    with gpt_tui.watch(model, optimizer=optimizer, report=report, on="report") as watch:
        _, loss = model(x, y)
        (loss * SCALE).backward()
        optimizer.step()
    assert watch.finding is not None
    return watch.finding


def test_an_update_that_broke_weights_unannounced_keeps_them_and_says_so(tmp_path: Path) -> None:
    report = tmp_path / "report"
    finding = overflowing_update(report)
    assert (finding.phase, finding.where) == ("optimizer", "transformer.wte.weight")
    folder = Path(finding.report)
    case = json.loads((folder / "case.json").read_text())
    assert case["weights"] == AFTER_UPDATE and case["update"] is None
    assert not (folder / "grads.pt").exists()
    readme = (folder / "README.md").read_text()
    assert "the weights as the update left them (`ckpt.pt`; not as the step began" in readme
    assert "when the step began (" not in readme and "on the same finding" not in readme
    # the checkpoint really is the broken one: its embedding holds what the finding counted
    ckpt = torch.load(folder / "ckpt.pt", weights_only=True)
    wte = ckpt["model"]["transformer.wte.weight"]
    held = finding.held[0]
    assert (int(wte.isnan().sum()), int(wte.isinf().sum())) == (held.nan, held.inf)

    code, out = train_step("--case", str(report))
    assert code == 0
    lines = out.splitlines()
    assert lines[1] == (
        "the case holds the weights after step 0's update made them non-finite, not as the "
        "step began (the watch copies the weights before an update only when a setting that "
        "is not finite (an lr of inf) shows it will break them, and the optimizer is one of "
        "torch.optim's; not on every step)"
    )
    note = [line for line in lines if "not the saved finding" in line]
    assert len(note) == 1 and note[0].startswith("note: " + MISMATCH), out
    assert "first non-finite: forward at transformer.wte (" in out

    code, out = train_step("--case", str(report), "--json")
    data = json.loads(out)
    assert data["case_weights"] == lines[1] and data["case_update"] is None
    assert data["first_nonfinite"]["phase"] == "forward"
    assert any(n.startswith(MISMATCH) for n in data["notes"])


def test_a_sound_run_copies_no_weights_before_its_updates(monkeypatch) -> None:
    from gpt_tui.engine.training import watch_update

    copies = []
    real = watch_update.copy_before_update
    monkeypatch.setattr(
        "gpt_tui.engine.training.watch.copy_before_update",
        lambda *a: copies.append(1) or real(*a),
    )
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters())
    with gpt_tui.watch(model, optimizer=optimizer, report=None):
        for x, y in batches(65, 4):
            _, loss = model(x, y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    assert copies == []
    with pytest.raises(gpt_tui.NonFiniteError):
        lr_inf_at_step_3(None, 1, on="raise")
    assert copies == [1]  # the one step whose lr was inf


def nan_weight_at_step_2(model, optimizer, report: Path) -> None:
    """A watched loop whose h.1 MLP weight turns NaN at step 2: a forward case in `report`."""
    with (
        pytest.raises(gpt_tui.NonFiniteError),
        gpt_tui.watch(model, optimizer=optimizer, report=report),
    ):
        for step, (x, y) in enumerate(batches(65, 4)):
            if step == 2:
                with torch.no_grad():
                    model.transformer.h[1].mlp.c_fc.weight[0, 0] = float("nan")
            _, loss = model(x, y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)


def test_a_case_that_reopens_on_its_finding_says_its_weights_and_no_mismatch(
    tmp_path: Path,
) -> None:
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters())
    report = tmp_path / "report"
    nan_weight_at_step_2(model, optimizer, report)
    assert read_case(report)["weights"] == STEP_START
    code, out = train_step("--case", str(report))
    assert code == 0
    assert out.splitlines()[1] == "the case holds the weights as they were when step 2 began"
    assert "not the saved finding" not in out
    assert "first non-finite: forward at transformer.h.1.mlp (" in out


@pytest.mark.parametrize("on", ["raise", "report"])
def test_the_watch_message_ends_with_the_command_that_opens_the_case(
    tmp_path: Path, on: str, capsys
) -> None:
    report = tmp_path / "a report"  # a space: the command quotes it as a shell needs
    if on == "raise":
        with pytest.raises(gpt_tui.NonFiniteError) as raised:
            lr_inf_at_step_3(report, 1, on="raise")
        finding, message = raised.value.finding, str(raised.value)
    else:
        finding = lr_inf_at_step_3(report, 1)
        message = finding.summary
    said = capsys.readouterr().err.strip()
    assert said == f"gpt-tui: {message}"
    case = json.loads((Path(finding.report) / "case.json").read_text())
    command = case["command"]
    assert message.endswith(f"; case saved to {finding.report}, open it with: {command}")
    words = shlex.split(command)
    assert words[:3] == ["gpt-tui", "train-step", "--case"]
    assert words[3] == finding.report and Path(words[3]).is_dir()
    code, _ = train_step(*words[2:], "--json")  # as the user would type it
    assert code == 0


def test_a_users_model_case_command_carries_trust_case_code(tmp_path: Path) -> None:
    from test_watch import train
    from test_watch_held import nan_at_step_3, users_model

    report = tmp_path / "report"
    with pytest.raises(gpt_tui.NonFiniteError) as raised:
        train(users_model(), batches(65, 5),
              watch=lambda m, opt: gpt_tui.watch(m, optimizer=opt, report=report),
              before_step=nan_at_step_3)  # fmt: skip
    message = str(raised.value)
    folder = raised.value.finding.report
    assert message.endswith(f"open it with: gpt-tui train-step --case {folder} --trust-case-code")


def test_a_mismatch_names_both_findings_and_why_they_may_differ() -> None:
    def case(phase: str, where: str, **finding) -> dict:
        return {"finding": {"step": 4, "phase": phase, "where": where, **finding}}

    module = "transformer.h.1.mlp"
    assert case_mismatch(case("forward", module), "forward", module) is None
    assert case_mismatch(case("loss", "loss"), "loss", "cross-entropy of finite logits") is None
    weight = "transformer.h.0.attn.c_attn.weight"
    gradients = case("gradients", weight)
    assert case_mismatch(gradients, "backward", f"the gradient of {weight}") is None
    assert case_mismatch(case("optimizer", weight), "optimizer", f"the update of {weight}") is None
    said = case_mismatch(case("backward", module, micro_step=1, micro_steps=4), None, None)
    assert said == (
        f"the reopened step found no non-finite value, not the saved finding (backward at "
        f"{module}): the step runs again with train-step's own optimizer (--lr, --clip) and "
        "dropout off, on micro-step 1's batch alone (your loop accumulated 4), not inside "
        "your loop"
    )
    said = case_mismatch(case("forward", module), "forward", "transformer.h.0.mlp")
    assert said.startswith(
        "the reopened step found forward at transformer.h.0.mlp, not the saved finding "
        f"(forward at {module}): "
    )
    assert "accumulated" not in said
    # an older case without "weights": an optimizer finding's weights are the broken ones
    assert "the update that broke them" in case_mismatch(
        case("optimizer", weight), "forward", "transformer.wte"
    )


def test_a_case_naming_weights_of_no_known_kind_is_one_error(tmp_path: Path) -> None:
    from gpt_tui.engine.training.watch import Finding
    from gpt_tui.engine.training.watch_report import write_case

    finding = Finding(3, "forward", "transformer.h.1.mlp", "its input was finite")
    folder = write_case(tmp_path, tiny_model(), finding, batches(65, 1)[0]).path
    data = json.loads((folder / "case.json").read_text())
    (folder / "case.json").write_text(json.dumps({**data, "weights": "yesterday"}))
    with pytest.raises(CaseError, match="'weights' is 'yesterday'; it must be 'step_start'"):
        read_case(folder)


def test_doctor_shows_no_validation_loss_for_a_case(tmp_path: Path, capsys) -> None:
    finding = overflowing_update(tmp_path / "report")
    ckpt = str(Path(finding.report) / "ckpt.pt")
    assert run(["doctor", "--checkpoint", ckpt]) == 0
    out = capsys.readouterr().out
    assert "iter num" in out and "best val loss" not in out
    assert run(["doctor", "--checkpoint", ckpt, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["iter num"] == 0 and "best val loss" not in data


def one_watched_step(model, optimizer) -> gpt_tui.NonFiniteError:
    """One scaled step of `model` under the watch: the error its update raises."""
    x, y = batches(65, 1)[0]
    watching = gpt_tui.watch(model, optimizer=optimizer, report=None)
    with pytest.raises(gpt_tui.NonFiniteError) as raised, watching:
        _, loss = model(x, y)
        (loss * SCALE).backward()
        optimizer.step()
    return raised.value


def test_an_update_that_overflows_with_finite_settings_names_no_setting() -> None:
    """lr 1e38 times a gradient over 3.4 is past fp32's largest value: Inf."""
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e38)
    finding = one_watched_step(model, optimizer).finding
    assert finding.phase == "optimizer" and "the update left" in finding.detail
    assert "its group's" not in finding.detail


def test_a_non_finite_setting_of_the_broken_parameters_group_is_named(tmp_path: Path) -> None:
    model = tiny_model()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay}, {"params": rest, "eps": 0.0, "betas": (0.9, float("nan"))}]
    )
    finding = one_watched_step(model, optimizer).finding
    assert finding.phase == "optimizer" and finding.where in {
        n for n, p in model.named_parameters() if p.dim() < 2
    }
    assert finding.detail.endswith("; its group's betas is (0.9, nan)"), finding.detail


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"optimizer_class": "os"}, "its optimizer 'os' is not one of torch.optim's"),
        ({"grads": "../../grads.pt"}, "outside the case folder"),
        ({"groups": "all"}, "'update' names no parameter groups"),
        ({"groups": [["no.such.weight"]]}, "steps no.such.weight, which this model does"),
    ],
)
def test_a_damaged_update_is_one_line(tmp_path: Path, change: dict, message: str) -> None:
    report = tmp_path / "report"
    lr_inf_at_step_3(report, 1)
    folder = Path(read_case(report)["folder"])
    data = json.loads((folder / "case.json").read_text())
    data["update"] = {**data["update"], **change}
    (folder / "case.json").write_text(json.dumps(data))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert run(["train-step", "--case", str(report)]) == 2
    said = err.getvalue().strip()
    assert len(said.splitlines()) == 1 and message in said, said


def test_gradients_that_are_not_tensors_are_refused(tmp_path: Path) -> None:
    report = tmp_path / "report"
    lr_inf_at_step_3(report, 1)
    folder = Path(read_case(report)["folder"])
    torch.save({"grads": {"transformer.wte.weight": 3}}, folder / "grads.pt")
    with pytest.raises(CaseError, match="holds no gradients by parameter name"):
        from gpt_tui.engine.training.watch_case import replay_update

        replay_update(read_case(report), tiny_model())


def test_an_optimizer_of_its_own_gets_no_copy_and_a_case_of_the_broken_weights(
    tmp_path: Path,
) -> None:
    """A case applies an update again only with torch.optim's classes: copying the weights
    for any other would cost a copy for nothing."""

    class MyAdamW(torch.optim.AdamW):
        pass

    model = tiny_model()
    optimizer = MyAdamW(model.parameters(), lr=float("inf"))
    x, y = batches(65, 1)[0]
    with gpt_tui.watch(model, optimizer=optimizer, report=tmp_path, on="report") as watch:
        _, loss = model(x, y)
        loss.backward()
        optimizer.step()
    assert watch.finding is not None and watch.finding.phase == "optimizer"
    assert read_case(tmp_path)["weights"] == AFTER_UPDATE


@pytest.mark.parametrize("names_kept", [True, False])
def test_a_case_of_nanogpts_two_group_optimizer_replays(tmp_path: Path, names_kept: bool) -> None:
    """nanoGPT's configure_optimizers makes a decay and a no-decay group; replay_case made
    one AdamW group and failed to load the state (ValueError). A case written before the
    group names were kept loads the model's parameters in order, cut to the groups' sizes."""
    model = tiny_model()
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
         {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}], lr=1e-3,
    )  # fmt: skip
    report = tmp_path / "report"
    nan_weight_at_step_2(model, optimizer, report)
    case_file = read_case(report)["folder"] + "/case.json"
    case = json.loads(Path(case_file).read_text())
    assert [len(g) for g in case["optimizer_groups"]] == [
        len(g["params"]) for g in optimizer.param_groups
    ]
    if not names_kept:
        del case["optimizer_groups"]
        Path(case_file).write_text(json.dumps(case))
    found, session = replay_case(report)
    session.close()
    assert found is not None
    assert (found.step, found.phase, found.where) == (2, "forward", "transformer.h.1.mlp")
