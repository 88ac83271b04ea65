"""`gpt-tui patch` and `attribute` answer through the Debugger's intents, as the app does."""

from __future__ import annotations

import json

from gpt_tui.cli import run
from gpt_tui.engine.core.session import ModelSpec, Session, samples_dir
from gpt_tui.engine.debugger import Debugger

SAMPLE = ["--checkpoint", str(samples_dir() / "shakespeare-nanogpt" / "ckpt.pt")]
PATCH = ["--prompt", "KING HENRY", "--b-prompt", "KING RICHA", "--answer", " ", "--wrong", "R"]


def test_patch_prints_what_the_app_shows_and_never_minus_zero(capsys) -> None:
    assert run(["patch", *SAMPLE, *PATCH, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)["values"]
    debugger = Debugger(Session.open(ModelSpec(checkpoint=SAMPLE[1])))
    try:
        debugger.set_prompt("KING HENRY")
        sweep = debugger.patch_runs("KING RICHA", " ", "R").compare.sweep
    finally:
        debugger.close(wait=True)
    assert printed == [list(row) for row in sweep.values]
    assert run(["patch", *SAMPLE, *PATCH]) == 0  # piped: plain numbers
    table = capsys.readouterr().out
    assert "0.000" in table and "-0.000" not in table


def test_a_tiny_negative_effect_prints_as_zero() -> None:
    from gpt_tui.cli.patch_cmds import _fixed

    assert [_fixed(v) for v in (-0.0001, -0.0, 0.0004, -0.25)] == [
        "0.000",
        "0.000",
        "0.000",
        "-0.250",
    ]


def test_diff_runs_a_model_file_as_b_on_a_sample_as_the_app_does(capsys) -> None:
    from gpt_tui.engine.analysis.compare_intents import BSpec
    from tests.engine.compare_helpers import FIXTURES

    port = str(FIXTURES / "model.py")
    args = ["diff", "--sample", "shakespeare-nanogpt", "--device", "cpu", "--prompt", "ROMEO:"]
    for extra in ([], ["--b-checkpoint", SAMPLE[1]]):
        assert run([*args, "--b-model-file", port, *extra, "--json"]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed["first_divergence"] is None and printed["records"]
    debugger = Debugger(Session.open(ModelSpec(sample="shakespeare-nanogpt", device="cpu")))
    try:
        debugger.set_prompt("ROMEO:")
        comparison = debugger.compare_runs(BSpec(model_file=port, device="cpu")).compare.comparison
        with_set = debugger.compare_runs(BSpec(overrides=("dropout=0.0",))).compare.comparison
    finally:
        debugger.close(wait=True)
    assert [r.max_abs_diff for r in comparison.records] == [
        r["max_abs_diff"] for r in printed["records"]
    ]
    assert with_set.first_divergence is None  # B opened afresh with --set, same weights
