"""`--model-file` through the CLI: doctor tells the truth about the attention kernel, says
each note once, and the non-embedding count leaves out the file's embedding tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt_tui.io.model_file import load_model_file

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "user_models"

ARGS = {
    "model.py": dict(
        block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=False
    ),
    "gpt.py": dict(sequence_len=16, vocab_size=65, n_layer=2, n_head=4, n_kv_head=2, n_embd=32),
}

# A stand-in for the flash-attn package: a kernel the engine cannot see into.
OPAQUE_KERNEL = """

def flash_attn_func(q, k, v):
    T = q.size(-2)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return torch.exp(scores - torch.logsumexp(scores, -1, keepdim=True)) @ v
"""


def gpt_tui(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpt_tui", *args], capture_output=True, text=True, timeout=120
    )


def checkpoint(model_file: Path, args: dict, folder: Path) -> Path:
    found = load_model_file(model_file, model_args=args)
    torch.manual_seed(0)
    model = found.model_class(found.config_class(**args))
    path = folder / "ckpt.pt"
    torch.save({"model": model.state_dict(), "model_args": args, "iter_num": 3}, path)
    return path


def flash_model_file(folder: Path) -> Path:
    source = (FIXTURES / "model.py").read_text()
    call = source[source.index("y = F.scaled_dot_product_attention(") :]
    call = call[: call.index(")\n") + 1]
    source = source.replace(call, "y = flash_attn_func(q, k, v)")
    source = source.replace("\n\nclass LayerNorm", OPAQUE_KERNEL + "\n\nclass LayerNorm", 1)
    path = folder / "model.py"
    path.write_text(source)
    return path


def test_doctor_on_a_flash_model_file_says_what_is_captured_and_each_note_once(tmp_path):
    model_file = flash_model_file(tmp_path)
    ckpt = checkpoint(model_file, ARGS["model.py"], tmp_path)
    base = ["doctor", "--model-file", str(model_file), "--checkpoint", str(ckpt)]
    data = json.loads(gpt_tui(*base, "--json").stdout)
    assert data["attention"]["captured"] and data["attention"]["ok"]
    assert "not capturable" not in data["attention kernel"]
    assert "manual softmax path" in data["attention kernel"]
    assert len(data["notes"]) == len(set(data["notes"]))  # each note once
    assert sum("manual softmax path" in note for note in data["notes"]) == 1
    text = gpt_tui(*base)
    assert text.returncode == 0, text.stderr
    assert "not capturable" not in text.stdout
    assert text.stdout.count("switched 2 modules") == 1


def test_non_embedding_count_of_a_model_file_leaves_out_its_tables(tmp_path):
    # gpt.py (nanochat style): untied wte is a lookup table; model.py (nanoGPT): wpe, and
    # its wte is tied to the head, so it counts, as nanoGPT counts it.
    for name, left_out in [("gpt.py", ["transformer.wte.weight"]), ("model.py", None)]:
        folder = tmp_path / name
        folder.mkdir()
        ckpt = checkpoint(FIXTURES / name, ARGS[name], folder)
        result = gpt_tui(
            "summary", "--model-file", str(FIXTURES / name), "--checkpoint", str(ckpt), "--json"
        )
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        sizes = {p["name"]: p["numel"] for p in data["parameters"]}
        if left_out is None:
            left_out = ["transformer.wpe.weight"]
            assert sizes["transformer.wpe.weight"] == 16 * 32
        assert data["embedding_params"] == left_out
        expected = data["total_params"] - sum(sizes[n] for n in left_out)
        assert data["non_embedding_params"] == expected < data["total_params"]


def test_a_model_that_refuses_the_prompt_is_one_line_naming_its_code(tmp_path):
    """nanoGPT-style files assert on the prompt; a one-token prompt to a model that
    asserts T > 1 is the user's model speaking, said in one line with exit status 2."""
    source = (FIXTURES / "model.py").read_text()
    marker = "        b, t = idx.size()\n"
    assert marker in source
    strict = source.replace(marker, marker + '        assert t > 1, "needs two tokens"\n')
    model_file = tmp_path / "model.py"
    model_file.write_text(strict)
    ckpt = checkpoint(model_file, ARGS["model.py"], tmp_path)
    line = strict[: strict.index("needs two tokens")].count("\n") + 1
    for command in (["trace"], ["step", "--watch-nan"], ["generate", "--steps", "2"]):
        result = gpt_tui(
            *command, "--model-file", str(model_file), "--checkpoint", str(ckpt), "--prompt", "!"
        )
        assert result.returncode == 2, (command, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert "AssertionError" in result.stderr and "needs two tokens" in result.stderr
        assert f" at model.py:{line}" in result.stderr  # where in their code


@pytest.mark.parametrize("name", ["gpt.py", "model.py"])
def test_train_step_runs_on_either_style_of_model_file(tmp_path, name):
    """nanochat's forward returns the loss alone when given targets, nanoGPT's gives every
    position's logits only then: a training step asks once which way the file goes."""
    ckpt = checkpoint(FIXTURES / name, ARGS[name], tmp_path)
    result = gpt_tui(
        "train-step", "--model-file", str(FIXTURES / name), "--checkpoint", str(ckpt),
        "--prompt", "ROMEO: What light through yonder", "--steps", "1", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["loss"] > 0
