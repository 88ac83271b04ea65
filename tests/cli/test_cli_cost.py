"""numerics, memory and cost at the command line: their JSON, and bad input as one line."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

import pytest

from gpt_tui.cli import run

TINY = ["--config", "tiny", "--device", "cpu"]


def gpt_tui(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpt_tui", *args], capture_output=True, text=True, timeout=300
    )


def test_numerics_json_has_every_format_and_the_fp32_check() -> None:
    out = gpt_tui("numerics", *TINY, "--arch", "nanochat", "--prompt", "hello", "--dtype",
                  "float8_e4m3fn", "--steps", "2", "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)["report"]
    growth = json.loads(out.stdout)["growth"]
    assert growth["steps"] == 2 and len(growth["heads"]) == 4
    assert data["dtype"] == "float8_e4m3fn"
    assert set(data["modules"][0]["formats"]) == {
        "bfloat16", "float16", "float8_e4m3fn", "float8_e5m2"
    }  # fmt: skip
    assert data["what_if"]["tolerance"] == 0.125
    assert data["softcap"]["cap"] == 15.0
    assert len(data["heads"]) == 2 * 2


def test_numerics_table() -> None:
    out = gpt_tui("numerics", *TINY, "--prompt", "hello", "--dtype", "float16")
    assert out.returncode == 0, out.stderr
    assert "fp16: max 6.55e+04" in out.stdout
    assert "transformer.h.1.mlp.c_fc" in out.stdout
    assert "fp32 vs fp16:" in out.stdout


def test_memory_json_and_table() -> None:
    out = gpt_tui("memory", *TINY, "--batch", "4", "--block", "16", "--fit", "1", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)["report"]
    assert report["fit"]["check_error"] < 0.1
    assert report["largest_batch"] > 4
    out = gpt_tui("memory", *TINY, "--batch", "4", "--block", "16", "--optimizer", "muon")
    assert out.returncode == 0, out.stderr
    assert "forecast peak at batch 4 x 16" in out.stdout


def test_memory_does_not_scale_the_position_ids_wpe_saves_by_the_batch() -> None:
    def wpe(batch: str) -> dict:
        out = gpt_tui("memory", *TINY, "--batch", batch, "--block", "16", "--json")
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)["report"]
        total = sum(
            m[f]
            for m in report["modules"]
            for f in ("params", "grads", "optimizer", "activations", "weight_copies")
        )
        assert total == pytest.approx(report["forecast"], abs=1)  # rows add up to the forecast
        return next(m for m in report["modules"] if m["name"] == "transformer.wpe")

    assert wpe("1")["activations"] == wpe("64")["activations"] == 16 * 8  # (T,) int64


def test_memory_dtype_is_autocast_and_weights_dtype_casts() -> None:
    def totals(*extra: str) -> dict[str, int]:
        out = gpt_tui("memory", *TINY, "--block", "8", "--json", *extra)
        assert out.returncode == 0, out.stderr
        modules = json.loads(out.stdout)["report"]["modules"]
        return {f: sum(m[f] for m in modules) for f in ("params", "grads", "optimizer")}

    fp32 = totals()
    assert totals("--dtype", "bfloat16") == fp32  # autocast: fp32 master weights and state
    cast = totals("--weights-dtype", "bfloat16")
    assert all(cast[f] * 2 == fp32[f] for f in fp32)
    out = gpt_tui("memory", *TINY, "--block", "8", "--dtype", "bfloat16")
    assert "activations under bfloat16 autocast" in out.stdout and "weight copies" in out.stdout


def test_memory_of_a_one_token_block_fits_two_lengths() -> None:
    out = gpt_tui("memory", *TINY, "--block", "1")
    assert out.returncode == 0, out.stderr
    assert "from 2x1 = " in out.stdout and ", 2x2 = " in out.stdout


@pytest.mark.parametrize("era", ["classic", "smear"])
def test_nanochat_memory_rows_add_up_to_the_forecast(era: str) -> None:
    """The smear gate's copy of the normed x exists from batch 2 on: rows grown from batch 1
    missed it (a trial's 872.6 KiB of rows under an 884.6 KiB forecast)."""
    for extra in ([], ["--dtype", "bfloat16"]):
        out = gpt_tui("memory", *TINY, "--arch", "nanochat", "--set", f"era={era}",
                      "--batch", "4", "--block", "16", "--json", *extra)  # fmt: skip
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)["report"]
        fields = ("params", "grads", "optimizer", "activations", "weight_copies")
        rows = sum(m[f] for m in report["modules"] for f in fields)
        assert round(report["forecast"]) == rows


def test_cost_json_agrees_with_the_formula() -> None:
    out = gpt_tui("cost", *TINY, "--batch", "2", "--block", "16", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert abs(data["report"]["formula"]["difference"]) < 0.05
    assert data["mfu"] is None  # the CPU's peak is unknown, never 0
    out = gpt_tui("cost", *TINY, "--batch", "2", "--block", "8")
    assert "MFU (measured FLOPs / step time / peak): unknown" in out.stdout
    # nanoGPT has no estimate_flops: its formula lives in estimate_mfu, at T = block_size
    assert "nanoGPT estimate_mfu formula (T = block_size 16)" in out.stdout
    assert "nanoGPT's estimate_mfu(2, dt): " in out.stdout
    assert "it counts 16 tokens a row, this step ran 8" in out.stdout


def test_cost_on_meta_says_not_measured_rather_than_zero_ms() -> None:
    out = gpt_tui("cost", "--config", "tiny", "--device", "meta", "--block", "8")
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if "transformer.h.0.mlp.c_fc" in line]
    assert rows and rows[0].split()[-1] == "-", rows
    assert "0.000" not in out.stdout
    assert "unknown (not timed" in out.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["memory", *TINY, "--block", "16", "--fit", "0"], "--fit: must be above 0"),
        (["memory", *TINY, "--batch", "99999999", "--block", "16", "--fit", "0.5"],
         "the largest batch that fits is"),
        (["memory", *TINY, "--block", "999"], "longer than the model's context"),
        (["cost", *TINY, "--block", "999"], "longer than the model's context"),
        (["memory", *TINY, "--block", "8", "--dtype", "int8"], "autocast takes float16 or"),
        (["cost", *TINY, "--block", "8", "--dtype", "float16", "--weights-dtype", "bfloat16"],
         "autocast runs from float32 weights"),
        (["numerics", *TINY, "--prompt", "hi", "--dtype", "int8"], "unknown --dtype 'int8'"),
        (["numerics", "--config", "tiny", "--device", "meta", "--prompt", "hi"], "meta"),
        (["memory", "--config", "tiny", "--device", "meta", "--block", "8"], "meta"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(args)  # in this process: the same path as the command, without the start-up
    err = capsys.readouterr().err
    assert code == 2, (code, err)
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err, err


def on_a_terminal(*args: str) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal, as a user at a shell does: (status, stdout,
    everything drawn on stderr, spinner frames included)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpt_tui", *args],
        stdout=subprocess.PIPE,
        stderr=slave,
        env={**os.environ, "COLUMNS": "200"},  # a line of its own, not wrapped at 80
    )
    os.close(slave)
    drawn = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(master)
    out = proc.stdout.read().decode() if proc.stdout else ""
    return proc.wait(timeout=300), out, drawn.decode(errors="replace")


@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("memory", "measuring 4 training steps of tiny on cpu (2 x 4, 2 x 8, 3 x 8, 3 x 4) to "
                   "forecast batch 4 x 8…"),
        ("cost", "timing 4 forward passes and a training step of tiny at batch 4 x 8 on cpu…"),
    ],
)  # fmt: skip
def test_a_slow_measurement_says_what_it_does_on_a_terminal_only(command: str, says: str) -> None:
    args = [command, *TINY, "--batch", "4", "--block", "8"]
    code, out, drawn = on_a_terminal(*args)
    assert code == 0, drawn
    assert says in drawn and f"{command.title()} of" not in drawn
    assert out.lstrip().startswith(("Memory of", "FLOPs of"))  # the report, on stdout
    piped = gpt_tui(*args)  # stderr piped: nothing is drawn, scripts keep a clean stderr
    assert piped.returncode == 0 and piped.stderr == ""


def test_cost_names_each_part_of_the_gap_to_nanochats_formula() -> None:
    """A trial read the smear gate's −9 as part of `attention +2,039`: by hand the gate, a
    Linear(24, 1) on T−1 of T tokens, is 6·24·(T−1)/T − 6·24 = −9 a token at T = 16, and the
    attention backward's q·kᵀ recompute 2·L·C·T = 2·2·32·16 = 2,048."""
    args = ["cost", *TINY, "--arch", "nanochat", "--set", "era=smear", "--batch", "4",
            "--block", "16"]  # fmt: skip
    out = gpt_tui(*args)
    assert out.returncode == 0, out.stderr
    T = 16
    smear = 6 * 24 * (T - 1) / T - 6 * 24
    assert smear == -9
    assert (
        f"per token: smear_gate on 15 of 16 tokens a row {smear:+,.0f}, attention backward "
        f"recomputes q·kᵀ {2 * 2 * 32 * T:+,}" in out.stdout
    )
    formula = json.loads(gpt_tui(*args, "--json").stdout)["report"]["formula"]
    assert [p["per_token"] for p in formula["parts"]] == [-9, 2048]
    assert formula["attention_extra"] == 2048
