"""A model file inside a package (nanochat's `nanochat/gpt.py`, which imports
`nanochat.common`) loads from any directory; what it prints becomes notes, never output;
rotary tables it keeps in bfloat16 stay so at the default float32."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt_tui.engine.core.session import ModelSpec, Session
from gpt_tui.io.model_file import ModelFileError, import_model_file, load_user_checkpoint

REPO = Path(__file__).resolve().parents[2]
CHECKOUT = REPO / "tests" / "fixtures" / "nanochat_checkout"
GPT_FILE = CHECKOUT / "nanochat" / "gpt.py"
ARGS = dict(sequence_len=16, vocab_size=300, n_layer=2, n_head=4, n_kv_head=2, n_embd=32)
PADDING = "Padding vocab_size from 300 to 320"


def write_checkpoint(gpt_file: Path, folder: Path) -> tuple[torch.nn.Module, Path]:
    """The file's own model with random weights, saved as nanochat saves it."""
    module = import_model_file(gpt_file)
    torch.manual_seed(0)
    model = module.GPT(module.GPTConfig(**ARGS)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "model_000010.pt")
    meta = {"step": 10, "model_config": ARGS}
    (folder / "meta_000010.json").write_text(json.dumps(meta))
    return model, folder


def ids() -> torch.Tensor:
    return torch.randint(0, 300, (1, 9), generator=torch.Generator().manual_seed(1))


def test_package_model_file_opens_from_an_unrelated_directory(tmp_path, monkeypatch):
    ref, ckpt = write_checkpoint(GPT_FILE, tmp_path / "ckpt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    session = Session.open(ModelSpec(model_file=str(GPT_FILE), checkpoint=str(ckpt)))
    try:
        assert type(session.model).__module__ == "nanochat.gpt"
        with torch.no_grad():
            torch.testing.assert_close(session.model(ids()), ref(ids()))
        assert session.model.cos.dtype == torch.bfloat16  # as the file built it
        assert any(PADDING in note for note in session.notes)
        assert any("stay in bfloat16" in note for note in session.notes)
    finally:
        session.close()


def test_cli_doctor_json_stays_json_from_an_unrelated_directory(tmp_path):
    _, ckpt = write_checkpoint(GPT_FILE, tmp_path / "ckpt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "gpt_tui", "doctor", "--model-file", str(GPT_FILE)]
    cmd += ["--checkpoint", str(ckpt), "--device", "cpu"]
    result = subprocess.run(
        [*cmd, "--json"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # nothing the model file printed got in the way
    assert PADDING in json.dumps(report)
    assert PADDING not in result.stderr
    plain = subprocess.run(cmd, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0, plain.stderr
    assert "captured (ok)" in plain.stdout
    assert plain.stdout.count(PADDING) == 1


def test_namespace_folder_named_by_the_files_imports(tmp_path):
    copy = tmp_path / "checkout"
    shutil.copytree(CHECKOUT, copy)
    (copy / "nanochat" / "__init__.py").unlink()  # a namespace folder, as in some checkouts
    gpt_file = copy / "nanochat" / "gpt.py"
    ref, ckpt = write_checkpoint(gpt_file, tmp_path / "ckpt")
    loaded = load_user_checkpoint(gpt_file, ckpt)
    assert Path(sys.modules["nanochat.gpt"].__file__) == gpt_file.resolve()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids()), ref(ids()))


def test_a_same_named_package_elsewhere_does_not_shadow_the_users(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    shutil.copytree(CHECKOUT, first)
    shutil.copytree(CHECKOUT, second)
    common = second / "nanochat" / "common.py"
    common.write_text(common.read_text().replace("torch.bfloat16", "torch.float16"))
    load_user_checkpoint(first / "nanochat" / "gpt.py", write_checkpoint(GPT_FILE, first / "c")[1])
    module = import_model_file(second / "nanochat" / "gpt.py")
    assert Path(module.__file__) == (second / "nanochat" / "gpt.py").resolve()
    assert module.ROTARY_DTYPE is torch.float16  # its own nanochat.common, not the first one


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotary_buffers_keep_the_files_dtype(tmp_path, dtype):
    _, ckpt = write_checkpoint(GPT_FILE, tmp_path / "ckpt")
    loaded = load_user_checkpoint(GPT_FILE, ckpt, dtype=dtype)
    assert loaded.model.cos.dtype == torch.bfloat16
    assert loaded.model.transformer.wte.weight.dtype == dtype
    with torch.no_grad():
        assert torch.isfinite(loaded.model(ids())).all()
    kept_note = [n for n in loaded.info["notes"] if "stay in bfloat16" in n]
    assert bool(kept_note) == (dtype == torch.float32)


def test_a_file_that_cannot_run_as_loaded_fails_at_load_in_one_line(tmp_path):
    copy = tmp_path / "checkout"
    shutil.copytree(CHECKOUT, copy)
    gpt_file = copy / "nanochat" / "gpt.py"
    _, ckpt = write_checkpoint(gpt_file, tmp_path / "ckpt")
    source = gpt_file.read_text()
    gpt_file.write_text(source.replace("self.cos.dtype == torch.bfloat16", "T > 99"))
    with pytest.raises(ModelFileError) as err:
        load_user_checkpoint(gpt_file, ckpt, dtype=torch.bfloat16)
    msg = str(err.value)
    assert "\n" not in msg and "cannot run as loaded (bfloat16 on cpu)" in msg
    assert f"{gpt_file}:" in msg and msg.endswith("try --dtype float32")
