"""`gpt-tui patch` and `attribute` answer through the Debugger's intents, as the app does."""

from __future__ import annotations

import json

from gpt_tui.cli import run
from gpt_tui.engine.debugger import Debugger
from gpt_tui.engine.session import ModelSpec, Session, samples_dir

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
