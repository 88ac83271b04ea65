"""numerics, init and attribute on a nanochat gpt.py of the COMPUTE_DTYPE era (the
fixture package imports as upstream's does): bf16 and fp16 run as nanochat runs them, the
model's own failures are one line, the init rules are the file's own (unknown to us), and
value embeddings passed by position split out of the heads."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt_tui.io.model_file import import_model_file

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
GPT_FILE = FIXTURES / "nanochat_compute_dtype" / "nanochat" / "gpt.py"
OLD_GPT_FILE = FIXTURES / "nanochat_checkout" / "nanochat" / "gpt.py"  # rotary asserted bf16
ARGS = dict(sequence_len=16, vocab_size=300, n_layer=2, n_head=4, n_kv_head=2, n_embd=32)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[Path, Path]:
    """Each file's own model with random weights, saved as nanochat saves it."""
    out = {}
    for gpt_file in (GPT_FILE, OLD_GPT_FILE):
        module = import_model_file(gpt_file)
        torch.manual_seed(0)
        model = module.GPT(module.GPTConfig(**ARGS))
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.2)
        folder = tmp_path_factory.mktemp(gpt_file.parent.parent.name)
        torch.save(model.state_dict(), folder / "model_000010.pt")
        (folder / "meta_000010.json").write_text(json.dumps({"step": 10, "model_config": ARGS}))
        out[gpt_file] = folder
    return out


def gpt_tui(
    gpt_file: Path, ckpt: Path, *args: str, nanochat_dtype: str | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("NANOCHAT_DTYPE", None)
    if nanochat_dtype:
        env["NANOCHAT_DTYPE"] = nanochat_dtype  # what nanochat picks on a bf16 GPU
    cmd = [sys.executable, "-m", "gpt_tui", *args, "--model-file", str(gpt_file)]
    cmd += ["--checkpoint", str(ckpt), "--device", "cpu"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_numerics_runs_the_file_in_its_own_compute_dtype(checkpoints, dtype):
    out = gpt_tui(
        GPT_FILE, checkpoints[GPT_FILE], "numerics", "--prompt", "To be, or", "--dtype", dtype,
        "--json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)["report"]
    what_if = report["what_if"]
    assert what_if["dtype"] == dtype
    assert f"COMPUTE_DTYPE was {dtype} in that pass" in report["note"]
    # the copy really ran in the dtype: its rounding shows, within the dtype's tolerance
    assert 0 < what_if["worst"][0][1] < what_if["tolerance"] * 10


def test_a_file_that_computes_in_bf16_still_gets_a_true_fp32_pass(checkpoints):
    args = ["numerics", "--prompt", "To be, or", "--dtype", "bfloat16", "--json"]
    reports = [
        json.loads(gpt_tui(GPT_FILE, checkpoints[GPT_FILE], *args, nanochat_dtype=env).stdout)
        for env in (None, "bfloat16")
    ]
    # the fp32 side is an fp32 copy run with COMPUTE_DTYPE fp32: the same answer either way
    # (but for the rotary tables, which the file built in bf16 and the copy widens)
    default, bf16 = (r["report"]["what_if"] for r in reports)
    assert [n for n, _ in default["worst"]] == [n for n, _ in bf16["worst"]]
    assert [v for _, v in default["worst"]] == pytest.approx([v for _, v in bf16["worst"]], 0.01)
    assert "computes in torch.bfloat16 (its COMPUTE_DTYPE)" in reports[1]["report"]["note"]


def test_a_failure_in_the_models_own_code_is_one_line(checkpoints):
    # the older file asserts its rotary tables are bf16: an fp16 copy cannot run
    out = gpt_tui(
        OLD_GPT_FILE, checkpoints[OLD_GPT_FILE], "numerics", "--prompt", "To be", "--dtype",
        "float16",
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and "internal error" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "your model raised AssertionError at gpt.py:" in out.stderr
    assert "Rotary embeddings must be in bfloat16" in out.stderr


def test_init_rules_of_a_model_file_are_unknown_and_never_far_from_init(checkpoints):
    from gpt_tui.ui.widgets.param_table import init_drifted

    out = gpt_tui(GPT_FILE, checkpoints[GPT_FILE], "init", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["parameters"]
    names = {r["name"] for r in rows}
    assert {"resid_lambdas", "lm_head.weight", "transformer.wte.weight"} <= names
    for row in rows:
        assert row["init"] == "unknown" and row["rule"] == "set by gpt.py's own code"
        assert math.isnan(float(row["init_std"]))  # JSON writes NaN as a string
        assert row["std"] is None or not init_drifted(row["std"], float("nan"))
    table = gpt_tui(GPT_FILE, checkpoints[GPT_FILE], "init")
    assert "embeddings N(0, 1)" not in table.stdout and "set by gpt.py's own code" in table.stdout


def test_attribute_splits_value_embeddings_passed_by_position(checkpoints):
    args = ["attribute", "--prompt", "To be, or", "--answer", "n", "--json"]
    out = gpt_tui(GPT_FILE, checkpoints[GPT_FILE], *args)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    parts = {c["name"]: c["value"] for c in data["components"]}
    assert "L1 value embeds" in parts and "L0 value embeds" not in parts  # the last layer's
    assert parts["L1 value embeds"] != 0
    assert math.isclose(data["sum"], data["logit_diff"], rel_tol=1e-4, abs_tol=1e-5)


def test_the_cost_tab_runs_the_file_in_bf16_and_names_its_failure(checkpoints):
    from gpt_tui.engine.core.runner import ModelRaisedError
    from gpt_tui.engine.core.session import ModelSpec, Session
    from gpt_tui.engine.debugger import Debugger

    for gpt_file, dtype, works in ((GPT_FILE, "bfloat16", True), (OLD_GPT_FILE, "float16", False)):
        spec = ModelSpec(model_file=str(gpt_file), checkpoint=str(checkpoints[gpt_file]))
        session = Session.open(spec)
        debugger = Debugger(session)
        try:
            debugger.set_prompt("To be, or")
            if works:
                state = debugger.measure("numerics", dtype)
                assert state.measures.numerics.what_if.dtype == dtype
            else:
                with pytest.raises(ModelRaisedError, match="raised AssertionError at gpt.py:"):
                    debugger.measure("numerics", dtype)
        finally:
            debugger.close(wait=True)
            session.close()


def test_diff_against_the_file_in_bf16_runs_it_as_nanochat_does(checkpoints):
    args = ["diff", "--prompt", "To be, or", "--b-dtype", "bfloat16", "--json"]
    out = gpt_tui(GPT_FILE, checkpoints[GPT_FILE], *args)
    assert out.returncode == 0, out.stderr
    records = json.loads(out.stdout)["records"]
    assert records and all(r["cosine"] > 0.999 for r in records)
    assert any(r["max_abs_diff"] > 0 for r in records)  # B really is bf16


@pytest.mark.parametrize(("dtype", "nanochat_dtype"), [("bfloat16", None), ("float32", "bfloat16")])
def test_a_session_in_a_dtype_computes_in_it(checkpoints, dtype, nanochat_dtype):
    """`--dtype bfloat16` cast only the weights: the file cast its activations back to its
    COMPUTE_DTYPE (fp32 on a CPU), so the run was not bf16. And a float32 session of a
    file that computes in bf16 (NANOCHAT_DTYPE) ran bf16 activations."""
    ckpt = checkpoints[GPT_FILE]
    out = gpt_tui(GPT_FILE, ckpt, "trace", "--prompt", "To be", "--dtype", dtype, "--json",
                  nanochat_dtype=nanochat_dtype)  # fmt: skip
    assert out.returncode == 0, out.stderr
    blocks = [r for r in json.loads(out.stdout)["records"] if r["name"].endswith("resid_post")]
    assert blocks and {r["dtype"] for r in blocks} == {dtype}
    out = gpt_tui(GPT_FILE, ckpt, "doctor", "--dtype", dtype, nanochat_dtype=nanochat_dtype)
    assert f"computes in {dtype} here" in out.stdout, out.stdout + out.stderr
