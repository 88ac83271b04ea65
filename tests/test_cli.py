"""The non-interactive CLI: what scripts and users at a shell rely on."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from gpt_tui.cli import run


def gpt_tui(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpt_tui", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (["--config", "d20", "--set", "n_kv_head=3"], "n_kv_head=3: must divide n_head=10"),
        (["summary", "--config", "smal"], "did you mean 'small'"),
        (["--checkpoint", "/no/such/ckpt.pt"], "no such file or folder"),
        (["summary", "--config", "tiny", "--device", "cuda:7"], "--device cuda:7"),
        (["summary", "--config", "tiny", "--dtype", "float8"], "unknown --dtype 'float8'"),
    ],
)
def test_user_errors_are_one_line_with_status_2(args, message):
    result = gpt_tui(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_summary_json_has_the_exact_counts(capsys):
    assert run(["summary", "--config", "small", "--device", "meta", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total_params"] == 10_745_088
    assert data["non_embedding_params"] == 10_646_784
    assert data["family"] == "nanogpt"
    assert data["config"]["n_layer"] == 6
    names = {p["name"]: p for p in data["parameters"]}
    assert names["lm_head.weight"]["tied_with"] == "transformer.wte.weight"
    assert names["transformer.h.0.attn.c_attn.weight"]["shape"] == [1152, 384]


def test_summary_of_gpt2_xl_on_meta(capsys):
    assert run(["summary", "--config", "gpt2-xl", "--device", "meta", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total_params"] == 1_557_611_200


def test_configs_lists_every_preset_with_its_size(capsys):
    assert run(["configs", "--json"]) == 0
    rows = {(r["preset"], r["family"]): r for r in json.loads(capsys.readouterr().out)}
    assert rows[("gpt2", "nanogpt")]["params"] == 124_439_808
    assert rows[("d20", "nanochat")]["n_embd"] == 1280
    assert ("small", "nanochat") in rows and ("tiny", "nanogpt") in rows


def test_trace_json_records_every_probe_in_order(capsys):
    assert (
        run(["trace", "--config", "tiny", "--prompt", "ROMEO:", "--attention", "1", "--json"]) == 0
    )
    data = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in data["records"]]
    assert names.index("transformer.h.0.attn") < names.index("transformer.h.0.mlp")
    assert names.index("transformer.h.0") < names.index("transformer.h.1.attn")
    attn = next(r for r in data["records"] if r["name"] == "transformer.h.1.attn")
    assert attn["shape"] == [1, 6, 32]
    pattern = data["attention"]["1"]
    assert pattern["max_abs_error"] <= 1e-4
    assert len(pattern["weights"]) == 2  # heads
    assert len(data["next_tokens"]) == 10


def test_trace_rejects_a_layer_that_does_not_exist(capsys):
    assert run(["trace", "--config", "tiny", "--prompt", "hi", "--attention", "5"]) == 2
    assert "layers are 0..1" in capsys.readouterr().err


def test_step_stops_at_the_breakpoint(capsys):
    args = ["step", "--config", "tiny", "--prompt", "ROMEO:", "--break", "*.h.1.mlp", "--json"]
    assert run(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["stopped"] and data["reason"] == "breakpoint"
    assert data["event"]["name"] == "transformer.h.1.mlp"
    assert data["event"]["phase"] == "in"
    assert [r["name"] for r in data["residual"]][-1] == "transformer.h.1.resid_mid"


def test_step_watchpoint_names_the_module_where_nan_appears(capsys):
    args = [
        "step",
        "--config",
        "tiny",
        "--prompt",
        "ROMEO:",
        "--watch-nan",
        "--inject-nan",
        "transformer.h.0.attn",
        "--json",
    ]
    assert run(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["reason"] == "watch"
    assert data["event"]["name"] == "transformer.h.0.attn"
    assert data["event"]["stats"]["nan_count"] > 0


def test_generate_replays_with_a_seed_and_matches_json(capsys):
    args = ["generate", "--config", "tiny", "--prompt", "ROMEO:", "--steps", "8", "--seed", "3"]
    assert run([*args, "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert run([*args, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert first["text"] == again["text"] and first["text"].startswith("ROMEO:")
    assert len(first["steps"]) == 8
    assert all(len(s["candidates"]) > 0 for s in first["steps"])


def test_generate_explains_an_out_of_vocabulary_prompt(capsys):
    assert run(["generate", "--config", "tiny", "--prompt", "héllo ~", "--steps", "2"]) == 2
    assert "not in the model's" in capsys.readouterr().err


def test_meta_device_cannot_generate(capsys):
    args = ["generate", "--config", "tiny", "--device", "meta", "--prompt", "a", "--steps", "1"]
    assert run(args) == 2
    assert "meta" in capsys.readouterr().err


def test_doctor_reports_what_was_found(capsys):
    assert run(["doctor", "--config", "tiny", "--arch", "nanochat", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["blocks"] == {"count": 2, "path": "transformer.h"}
    assert (data["probes"]["blocks"], data["probes"]["attention"], data["probes"]["mlp"]) == (
        2,
        2,
        2,
    )
    assert data["attention"]["captured"] and data["attention"]["ok"]
    assert data["attention"]["max_abs_error"] <= 1e-4
    assert data["architecture"]["family"] == "nanochat"
    assert data["architecture"]["era"].startswith("classic")
    expected = "sys.monitoring" if sys.version_info >= (3, 12) else "sys.settrace"
    assert data["line events"]["backend"] == expected
    assert data["parameters"] == {
        "total": 28_736,
        "non_embedding": 28_736 - 65 * 32,
        "embedding_tables": ["transformer.wte.weight"],
    }


def test_eval_and_train_round_trip(tmp_path, capsys):
    text = "the quick brown fox jumps over the lazy dog.\n" * 80
    data = tmp_path / "text.txt"
    data.write_text(text)
    out = tmp_path / "model"
    args = [
        "train",
        "--data",
        str(data),
        "--arch",
        "nanochat",
        "--set",
        "n_layer=1",
        "--set",
        "n_head=2",
        "--set",
        "n_kv_head=1",
        "--set",
        "n_embd=16",
        "--set",
        "sequence_len=16",
        "--steps",
        "30",
        "--out",
        str(out),
        "--batch-size",
        "8",
        "--eval-interval",
        "30",
    ]
    assert run(args) == 0
    capsys.readouterr()
    assert run(["eval", "--checkpoint", str(out), "--data", str(data), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "val"
    assert 0 < result["loss"] < 3.2  # well below a uniform guess over 28 characters (3.33)
    assert result["tokens"] == len(text) - int(0.9 * len(text)) - 1


def test_train_logs_plain_lines(tmp_path):
    """No time stamp or source location (`train.py:231`) beside the losses."""
    data = tmp_path / "text.txt"
    data.write_text("the quick brown fox jumps over the lazy dog.\n" * 40)
    args = ["train", "--data", str(data), "--arch", "nanogpt", "--config", "tiny"]
    args += ["--steps", "4", "--eval-interval", "2", "--batch-size", "4", "--out", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-m", "gpt_tui", *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    logged = [line for line in result.stdout.splitlines() if "val" in line]
    assert len(logged) == 3, result.stdout  # steps 2 and 4, and the closing line
    for line in logged[:2]:
        pattern = (
            r"step \d+: batch loss \d\.\d{4}, val loss \d\.\d{4} \(estimated over 20 batches\)"
        )
        assert re.fullmatch(pattern, line), line


def test_watchpoint_with_leaves_names_the_exact_linear(capsys):
    args = [
        "step",
        "--config",
        "tiny",
        "--prompt",
        "ROMEO:",
        "--watch-nan",
        "--leaves",
        "--inject-nan",
        "transformer.h.1.attn.c_attn",
        "--json",
    ]
    assert run(args) == 0
    assert json.loads(capsys.readouterr().out)["event"]["name"] == "transformer.h.1.attn.c_attn"


def test_a_breakpoint_that_matches_nothing_is_an_error(capsys):
    args = ["step", "--config", "tiny", "--prompt", "ROMEO:", "--break", "nothing.*"]
    assert run(args) == 2
    assert "matches no module" in capsys.readouterr().err


def test_meta_trace_gives_every_shape_without_values(capsys):
    args = ["trace", "--config", "gpt2-xl", "--device", "meta", "--prompt", "ROMEO:", "--json"]
    assert run(args) == 0
    data = json.loads(capsys.readouterr().out)
    shapes = {r["name"]: r["shape"] for r in data["records"]}
    assert shapes["transformer.h.47.attn"] == [1, 6, 1600]
    assert shapes["logits"] == [1, 6, 50257]
    assert data["next_tokens"] == [] and "meta device" in data["note"]


def test_set_on_a_checkpoint_changes_what_it_does_not_record(tmp_path, capsys):
    from gpt_tui.io.checkpoints import save_nanochat_checkpoint
    from gpt_tui.models import build_model, make_config

    model = build_model(make_config("tiny", "nanochat"), "cpu")
    save_nanochat_checkpoint(tmp_path, model, step=1)
    args = ["doctor", "--checkpoint", str(tmp_path), "--json"]
    assert run([*args, "--set", "softcap=20"]) == 0
    assert json.loads(capsys.readouterr().out)["architecture"]["softcap"] == 20
    assert run([*args, "--set", "bias=true"]) == 2
    assert "nanochat model, which has no field 'bias'" in capsys.readouterr().err
