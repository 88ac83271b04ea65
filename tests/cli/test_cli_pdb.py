"""`gpt-tui step` with pdb's tbreak, ignore, disable, display and several stops: run as
a user runs it, in a subprocess, in JSON and as text at 80 columns."""

from __future__ import annotations

import json
import subprocess
import sys

from test_cli_tables import ANSI, gpt_tui

TINY = ("step", "--config", "tiny", "--prompt", "ROMEO:")


def step_json(*args: str) -> dict:
    return json.loads(gpt_tui(*TINY, *args, "--json", columns=None).stdout)


def test_display_is_printed_at_each_stop_and_marked_when_it_changed() -> None:
    data = step_json(
        *("--break-at", "MLP.forward", "--display", "x.abs().max()", "--display", "x.shape"),
        *("--display", "no_such_name", "--stops", "2"),
    )
    first, second = data["stops"]
    assert [s["frame"]["module"] for s in data["stops"]] == [
        "transformer.h.0.mlp",
        "transformer.h.1.mlp",
    ]
    peak, shape, missing = first["display"]
    assert (peak["number"], peak["expr"], peak["changed"], peak["previous"]) == (
        1,
        "x.abs().max()",
        False,
        None,
    )
    assert shape["value"]["repr"] == "torch.Size([1, 6, 32])"
    assert missing["value"]["error"] == "NameError: name 'no_such_name' is not defined"
    peak, shape, missing = second["display"]
    assert peak["changed"] and peak["previous"]["max"] == first["display"][0]["value"]["max"]
    assert not shape["changed"] and not missing["changed"]


def test_tbreak_stops_once_and_ignore_passes_hits() -> None:
    data = step_json(
        *("--tbreak", "MLP.forward", "--break-at", "Block.forward", "--ignore", "2", "1"),
        *("--stops", "3"),
    )
    stops = data["stops"]
    assert [s["frame"]["function"] for s in stops[:2]] == ["MLP.forward", "Block.forward"]
    tbreak, block = stops[0]["breakpoint"], stops[1]["breakpoint"]
    assert (tbreak["number"], tbreak["temporary"], tbreak["hits"]) == (1, True, 1)
    assert [b["spec"] for b in stops[0]["breakpoints"]] == ["Block.forward"]  # 1 is gone
    # Block.forward's hit in block 0 was ignored; block 1's stops; the MLP there does not
    assert stops[1]["frame"]["module"] == "transformer.h.1" and block["hits"] == 2
    assert stops[2] == {"stopped": False, "events": stops[2]["events"]}


def test_a_disabled_breakpoint_keeps_its_number_and_stops_nowhere() -> None:
    data = step_json(
        *("--break-at", "Block.forward", "--break-at", "MLP.forward", "--tbreak", "GPT.forward"),
        *("--disable", "1", "--disable", "3", "--ignore", "2", "1", "--stops", "2"),
    )
    first, second = data["stops"]
    # neither Block.forward nor GPT.forward stops; block 0's MLP hit is ignored
    assert first["frame"]["module"] == "transformer.h.1.mlp"
    assert second == {"stopped": False, "events": second["events"]}
    rows = [(b["number"], b["spec"], b["enabled"], b["hits"]) for b in first["breakpoints"]]
    assert rows == [
        (1, "Block.forward", False, 0),
        (2, "MLP.forward", True, 2),
        (3, "GPT.forward", False, 0),
    ]
    assert first["breakpoint"]["number"] == 2 and first["breakpoint"]["enabled"]


def test_the_stops_read_at_80_columns_as_pdb_prints_them() -> None:
    result = gpt_tui(
        *TINY,
        *("--tbreak", "MLP.forward", "--break-at", "MLP.forward if False"),
        *("--display", "x.shape", "--display", "x.abs().max()", "--stops", "2"),
    )
    lines = ANSI.sub("", result.stdout).splitlines()
    assert not [text for text in lines if len(text) > 80]
    assert "  breakpoint 1 tbreak MLP.forward · hit 1 · deleted" in lines
    assert "display x.shape: torch.Size([1, 6, 32])" in lines
    peak = [text for text in lines if text.startswith("display x.abs().max(): ")]
    assert len(peak) == 1 and "[old:" not in peak[0]  # the second never stops
    assert lines[-1].startswith("no more stops: pass finished after")


def test_mistakes_are_one_line_and_exit_2() -> None:
    cases = {
        ("--break-at", "MLP.forward", "--ignore", "3", "1"): "no line breakpoint number 3",
        ("--break-at", "MLP.forward", "--display", "x ="): "not a Python expression",
        ("--break", "transformer.h.0", "--display", "x"): "need --break-at, --tbreak",
        ("--tbreak", "nanogpt.py:1x"): "matches no line or function",
        ("--break-at", "MLP.forward", "--ignore", "1", "-2"): "must be 0 or more",
        ("--break-at", "MLP.forward", "--disable", "2"): "no line breakpoint number 2",
    }
    for args, said in cases.items():
        result = subprocess.run(
            [sys.executable, "-m", "gpt_tui", *TINY, *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2, (args, result.stderr)
        err = result.stderr.strip().splitlines()
        assert len(err) == 1 and said in err[0], (args, err)


def test_pdb_words_in_eval_print_as_pdb_does() -> None:
    evals = ("pp x.shape", "whatis x", "where", "display", "list", "display x.std()")
    args = [*TINY, "--break-at", "MLP.forward", "--display", "x.shape"]
    data = step_json(*args[len(TINY) :], *(a for e in evals for a in ("--eval", e)))
    shown = {e["expr"]: e.get("repr") or e["error"] for e in data["eval"]}
    assert shown["pp x.shape"] == "torch.Size([1, 6, 32])"
    assert shown["whatis x"] == "torch.Tensor (1, 6, 32) float32 cpu"
    assert shown["where"].splitlines()[-1].startswith("> nanogpt.py:")
    assert shown["display"] == "1 x.shape: torch.Size([1, 6, 32])"
    assert shown["list"].startswith("list is a pdb command not run here")
    assert shown["display x.std()"] == "display EXPR: give step --display EXPR"
    lines = ANSI.sub("", gpt_tui(*args, "--eval", "where").stdout).splitlines()
    at = lines.index(">>> where")
    assert lines[at + 1].startswith("    nanogpt.py:") and "GPT.forward (model)" in lines[at + 1]
    assert lines[at + 3].startswith("  > nanogpt.py:") and lines[at + 3].endswith(
        "MLP.forward (transformer.h.0.mlp)"
    )
