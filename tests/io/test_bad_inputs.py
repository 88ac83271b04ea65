"""Bad checkpoints and model files through the real CLI: each is one line on stderr,
exit status 2, no traceback, nothing written or lost, and no payload ever runs."""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from io_helpers import OpenFile, tiny_model

from gpt_tui.io.checkpoints import save_nanochat_checkpoint, save_nanogpt_checkpoint

REPO = Path(__file__).resolve().parents[2]
MODEL_FILE = REPO / "tests" / "fixtures" / "user_models" / "model.py"


def good_ckpt(folder: Path) -> Path:
    return save_nanogpt_checkpoint(folder, tiny_model("nanogpt", 30), iter_num=1, best_val_loss=1)


def empty(d: Path) -> list[str]:
    (d / "ckpt.pt").touch()
    return ["--checkpoint", str(d / "ckpt.pt")]


def truncated(d: Path) -> list[str]:
    path = good_ckpt(d / "ck")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return ["--checkpoint", str(path)]


def random_bytes(d: Path) -> list[str]:
    # Seeded: one draw in 256 puts "{" at byte 8 and reads as a damaged safetensors file.
    data = bytes(random.Random(0).getrandbits(8) for _ in range(4096))
    assert data[8:9] != b"{" and not data.startswith(b"PK")
    (d / "ckpt.pt").write_bytes(data)
    return ["--checkpoint", str(d / "ckpt.pt")]


def wrong_shapes(d: Path) -> list[str]:
    path = good_ckpt(d / "ck")
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_args"]["n_embd"] = 64
    torch.save(ckpt, path)
    return ["--checkpoint", str(path)]


def hostile_ckpt(d: Path) -> list[str]:
    (d / "ckpt.pt").write_bytes(pickle.dumps({"model": OpenFile(d / "PAYLOAD_RAN")}, protocol=2))
    return ["--checkpoint", str(d / "ckpt.pt")]


def hostile_meta(d: Path) -> list[str]:
    path = good_ckpt(d / "ck")
    (d / "ck" / "meta.pkl").write_bytes(pickle.dumps(OpenFile(d / "PAYLOAD_RAN")))
    return ["--checkpoint", str(path)]


def nanochat_without_meta(d: Path) -> list[str]:
    save_nanochat_checkpoint(d / "ck", tiny_model("nanochat", 30), step=3)
    (d / "ck" / "meta_000003.json").unlink()
    return ["--checkpoint", str(d / "ck")]


def huge_safetensors_header(d: Path) -> list[str]:
    (d / "model.safetensors").write_bytes((10**12).to_bytes(8, "little") + b'{"a": 1}' + b" " * 64)
    return ["--checkpoint", str(d / "model.safetensors")]


def folder_of_one_stray_file(d: Path) -> list[str]:
    (d / "notes.pt").write_text("hello")
    return ["--checkpoint", str(d)]


def model_file(source: str) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        (d / "mine.py").write_text(source)
        return ["--model-file", str(d / "mine.py"), "--checkpoint", str(good_ckpt(d / "ck"))]

    return setup


CASES = {
    "empty": (empty, "empty (0 bytes)"),
    "truncated": (truncated, "ckpt.pt"),
    "random bytes": (random_bytes, "not a PyTorch checkpoint"),
    "wrong shapes": (wrong_shapes, "mis-shaped"),
    "malicious pickle": (hostile_ckpt, "cannot be loaded safely"),
    "malicious meta.pkl": (hostile_meta, "meta.pkl"),
    "nanochat without meta": (nanochat_without_meta, "meta_<step>.json"),
    "syntax error": (model_file("def broken(:\n"), "syntax error"),
    "raises on import": (model_file("raise RuntimeError('no GPU here')\n"), "no GPU here"),
    "missing class": (model_file("X = 1\n"), "no nn.Module class"),
    "missing import": (model_file("import not_installed_anywhere\n"), "not_installed_anywhere"),
    "sys.exit at import": (model_file("import sys\nsys.exit(3)\n"), "called sys.exit(3)"),
    "a folder of one stray .pt": (
        folder_of_one_stray_file,
        "holds no ckpt.pt, so its one .pt file was read: notes.pt is not a PyTorch checkpoint",
    ),
    "safetensors header of 10**12": (huge_safetensors_header, "header claims 1,000,000,000,000"),
}


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_2(tmp_path, case):
    setup, expected = CASES[case]
    data = tmp_path / "data"
    data.mkdir()
    args = setup(data)
    before = snapshot(data)
    result = subprocess.run(
        [sys.executable, "-m", "gpt_tui", "doctor", "--device", "cpu", *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    err = result.stderr.strip()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "\n" not in err and "Traceback" not in err, err
    assert expected in err, err
    assert result.stdout == ""
    assert snapshot(data) == before  # nothing written, nothing lost
    assert not (data / "PAYLOAD_RAN").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # nothing left in the cwd


def test_the_model_file_fixture_itself_loads(tmp_path):
    """Control for the model-file cases: with a good file the same command succeeds."""
    args = ["--model-file", str(MODEL_FILE), "--checkpoint", str(good_ckpt(tmp_path / "ck"))]
    result = subprocess.run(
        [sys.executable, "-m", "gpt_tui", "doctor", "--device", "cpu", *args],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
