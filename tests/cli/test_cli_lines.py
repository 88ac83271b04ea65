"""`gpt-tui step --break-at`: a pause at a line of the model's code, its locals, --eval and
--show, in JSON and at 80 columns; a breakpoint that matches nothing is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli_model_file import ARGS, FIXTURES, checkpoint
from test_cli_tables import ANSI, gpt_tui

from gpt_tui.cli import run
from gpt_tui.models.config import PRESETS

MODELS = Path(__file__).resolve().parents[2] / "gpt_tui" / "models"
PROMPT = "ROMEO: hi"


def line_of(path: Path, marker: str) -> int:
    lines = path.read_text().splitlines()
    return next(i + 1 for i, text in enumerate(lines) if marker in text)


def step_json(capsys, *args: str) -> dict:
    assert run(["step", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def locals_of(data: dict) -> dict[str, dict]:
    return {v["name"]: v for v in data["frame"]["locals"]}


def test_break_at_the_attention_kernel_gives_q_k_v_per_head(capsys) -> None:
    small = PRESETS["small"].settings["nanogpt"]
    line = line_of(MODELS / "nanogpt.py", "y = F.scaled_dot_product_attention(")
    data = step_json(
        capsys, "--config", "small", "--prompt", PROMPT, "--break-at", f"nanogpt.py:{line}"
    )
    frame = data["frame"]
    assert (frame["file"], frame["line"], frame["module"]) == (
        "nanogpt.py",
        line,
        "transformer.h.0.attn",
    )
    assert [e["function"] for e in frame["stack"]] == [
        "GPT.forward",
        "Block.forward",
        "CausalSelfAttention.forward",
    ]
    assert [s["line"] for s in frame["source"] if s["current"]] == [line]
    found = locals_of(data)
    T = len(PROMPT)  # one token per character
    assert found["T"]["repr"] == str(T)
    head = (1, small["n_head"], T, small["n_embd"] // small["n_head"])
    for name in "qkv":
        assert found[name]["kind"] == "tensor" and tuple(found[name]["shape"]) == head
        assert found[name]["nan"] == 0 and found[name]["device"] == "cpu"


def test_nanochat_norm_by_function_with_evals_on_a_shape_and_a_reduction(capsys) -> None:
    data = step_json(
        capsys,
        *("--config", "tiny", "--arch", "nanochat", "--prompt", PROMPT, "--break-at", "norm"),
        *("--eval", "x.shape", "--eval", "x.pow(2).mean(-1)", "--eval", "x.nope"),
        *("--eval", "(x - x.mean()).abs().max() >= 0"),
    )
    frame = data["frame"]
    assert frame["function"] == "norm" and frame["reason"] == "breakpoint"
    x = locals_of(data)["x"]
    assert list(locals_of(data)) == ["x"] and x["shape"][1] == len(PROMPT)
    shape, reduction, failed, after = data["eval"]
    assert shape["repr"] == f"torch.Size({x['shape']})" and shape["kind"] == "value"
    assert reduction["kind"] == "tensor" and reduction["shape"] == x["shape"][:2]
    assert failed["kind"] == "error" and failed["error"].startswith("AttributeError")
    assert "\n" not in failed["error"]
    assert after["error"] is None and after["kind"] == "tensor"  # still paused after the error


@pytest.mark.parametrize(
    "file,marker,function",
    [
        ("model.py", "if self.flash:", "CausalSelfAttention.forward"),
        ("gpt.py", "q, k = norm(q), norm(k)", "apply_rotary_emb"),
    ],
)
def test_user_model_files_break_by_line_and_by_function(
    capsys, tmp_path, file, marker, function
) -> None:
    ckpt = checkpoint(FIXTURES / file, ARGS[file], tmp_path)
    model = [
        "--model-file",
        str(FIXTURES / file),
        "--checkpoint",
        str(ckpt),
        "--prompt",
        "RO",
    ]
    line = line_of(FIXTURES / file, marker)
    data = step_json(capsys, *model, "--break-at", f"{file}:{line}", "--eval", "q.dim()")
    assert (data["frame"]["file"], data["frame"]["line"]) == (file, line)
    assert data["eval"][0]["repr"] == "4"
    data = step_json(capsys, *model, "--break-at", function, "--show", "x")
    assert data["frame"]["function"] == function
    x = locals_of(data)["x"]
    assert data["show"]["slice_shape"] == x["shape"][-2:]


def test_a_breakpoint_that_matches_nothing_is_one_line_naming_the_files(capsys) -> None:
    assert run(["step", "--config", "tiny", "--prompt", "RO", "--break-at", "nanogpt.py:1x"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "matches no line or function" in err
    assert "nanogpt.py, kv_cache.py, sampling.py" in err
    assert run(["step", "--config", "tiny", "--prompt", "RO", "--eval", "x"]) == 2
    assert "need --break-at" in capsys.readouterr().err


def test_the_pause_reads_at_80_columns() -> None:
    line = line_of(MODELS / "nanogpt.py", "q = q.view(B, T, self.n_head, hs)")
    result = gpt_tui(
        *("step", "--config", "small", "--prompt", PROMPT, "--break-at", f"nanogpt.py:{line}"),
        *("--eval", "k.shape", "--show", "x"),
    )
    lines = ANSI.sub("", result.stdout).splitlines()
    assert not [text for text in lines if len(text) > 80]
    assert lines[0] == f"stopped at nanogpt.py:{line} (line breakpoint)"
    assert lines[1] == "  in CausalSelfAttention.forward · transformer.h.0.attn"
    assert any(text.startswith(f"{line} ->") for text in lines)
    assert any(text.startswith("q ") and "1×9×384 float32" in text for text in lines)
    assert "  torch.Size([1, 9, 384])" in lines
    assert any("x[0, :, :]: rows 0..8 of 9, columns 0..5 of 384" in text for text in lines)


def test_a_module_breakpoint_reached_first_says_the_expressions_did_not_run(capsys) -> None:
    args = ["step", "--config", "tiny", "--prompt", "RO", "--break", "transformer.h.0"]
    assert run([*args, "--break-at", "MLP.forward", "--eval", "x.shape"]) == 0
    out = capsys.readouterr().out
    assert "stopped at transformer.h.0 " in out
    assert "note: --eval and --show run only at a pause at a line" in out


def test_token_steps_into_the_sampling_of_the_nth_token(capsys) -> None:
    sampling = {"--temperature": "0.8", "--top-k": "5"}
    common = ["--config", "tiny", "--prompt", PROMPT, "--seed", "3"]
    common += [arg for pair in sampling.items() for arg in pair]
    data = step_json(capsys, *common, "--token", "2")
    frame = data["frame"]
    assert (frame["file"], frame["function"]) == ("sampling.py", "sample_next")
    names = locals_of(data)
    assert names["logits"]["shape"] == [PRESETS["tiny"].settings["nanogpt"]["vocab_size"]]
    assert names["top_k"]["repr"] == "5"
    # A breakpoint of the user's in the sampling code is where it stops instead.
    line = line_of(MODELS / "sampling.py", "token = int(torch.multinomial(")
    data = step_json(
        capsys,
        *common,
        "--token",
        "2",
        "--break-at",
        f"sampling.py:{line}",
        "--eval",
        "int((probs > 0).sum())",
    )
    assert data["frame"]["line"] == line
    assert data["eval"][0]["repr"] == "5"  # top-k kept five tokens
    # The token it is about to draw is the second one `generate` draws with these settings.
    assert run(["generate", *common, "--steps", "2", "--json"]) == 0
    generated = json.loads(capsys.readouterr().out)
    data = step_json(
        capsys,
        *common,
        "--token",
        "2",
        "--break-at",
        f"sampling.py:{line + 1}",
        "--eval",
        "token",
    )
    assert int(data["eval"][0]["repr"]) == generated["steps"][1]["token_id"]
