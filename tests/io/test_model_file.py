"""Users' own model files: imported as they are, built from a checkpoint, run.

The files in tests/fixtures/user_models were written for these tests in the styles users
have: nanoGPT's model.py, nanochat's gpt.py, renamed classes, and a sibling import.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from gpt_tui.io.model_file import (
    ModelFileError,
    attention_kernel_report,
    build_user_model,
    flash_switches,
    import_model_file,
    load_model_file,
    unwrap_compiled,
    use_manual_attention,
    user_forward,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "user_models"

NANOGPT_ARGS = dict(
    block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=False
)
NANOCHAT_ARGS = dict(sequence_len=16, vocab_size=70, n_layer=2, n_head=4, n_kv_head=2, n_embd=32)
TINYLM_ARGS = dict(vocab=40, d_model=32, n_layers=2, n_heads=4, max_len=16)
STACK_ARGS = dict(vocab_size=30, width=16, depth=2, heads=2)


def reference(file: str, args: dict, seed: int = 0) -> tuple[nn.Module, dict]:
    """The file's own model with random weights, and its state dict as a checkpoint holds it."""
    found = load_model_file(FIXTURES / file, model_args=args)
    torch.manual_seed(seed)
    model = found.model_class(found.config_class(**args)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def tokens(vocab: int, T: int = 12) -> torch.Tensor:
    return torch.randint(0, vocab, (2, T), generator=torch.Generator().manual_seed(5))


def test_nanogpt_file_last_position_and_all_positions() -> None:
    ref, state = reference("model.py", NANOGPT_ARGS)
    compiled_keys = {"_orig_mod." + k: v for k, v in state.items()}
    model = build_user_model(FIXTURES / "model.py", NANOGPT_ARGS, compiled_keys)
    assert type(model).__name__ == "GPT"
    idx = tokens(65)
    with torch.no_grad():
        expected_all, _ = ref(idx, targets=torch.zeros_like(idx))
        expected_last, _ = ref(idx)
    torch.testing.assert_close(user_forward(model, idx), expected_all)
    torch.testing.assert_close(user_forward(model, idx, all_positions=False), expected_last)


def test_nanogpt_flash_switch_falls_back_to_manual_softmax() -> None:
    _, state = reference("model.py", NANOGPT_ARGS)
    model = build_user_model(FIXTURES / "model.py", NANOGPT_ARGS, state)
    found = load_model_file(FIXTURES / "model.py")
    report = attention_kernel_report(model, found.module)
    assert "SDPA" in report and "`flash` switch on 2 modules" in report
    idx = tokens(65)
    before = user_forward(model, idx)
    assert use_manual_attention(model) == 2
    assert not model.transformer.h[0].attn.flash
    torch.testing.assert_close(user_forward(model, idx), before, atol=1e-5, rtol=1e-5)
    assert "transformer.h.0.attn.bias" not in model.state_dict()  # the mask is not a weight


def test_nanogpt_checkpoint_with_saved_mask_loads_into_flash_model() -> None:
    _, state = reference("model.py", NANOGPT_ARGS)
    mask = torch.tril(torch.ones(16, 16)).view(1, 1, 16, 16)
    state |= {f"transformer.h.{i}.attn.bias": mask for i in range(2)}
    build_user_model(FIXTURES / "model.py", NANOGPT_ARGS, state)


def test_nanochat_file_gqa_rotary() -> None:
    ref, state = reference("gpt.py", NANOCHAT_ARGS)
    model = build_user_model(FIXTURES / "gpt.py", NANOCHAT_ARGS, state)
    idx = tokens(70)
    with torch.no_grad():
        expected = ref(idx)
    torch.testing.assert_close(user_forward(model, idx), expected)
    report = attention_kernel_report(model, load_model_file(FIXTURES / "gpt.py").module)
    assert report == "SDPA: patterns captured at the kernel call"
    assert flash_switches(model) == []


def test_renamed_classes_found_by_their_config() -> None:
    found = load_model_file(FIXTURES / "tinylm.py", model_args=TINYLM_ARGS)
    assert (found.model_class.__name__, found.config_class.__name__) == ("TinyLM", "TinyLMConfig")
    ref, state = reference("tinylm.py", TINYLM_ARGS)
    model = build_user_model(FIXTURES / "tinylm.py", TINYLM_ARGS, state, dtype=torch.float64)
    idx = tokens(40)
    with torch.no_grad():
        expected = ref.double()(idx)
    torch.testing.assert_close(user_forward(model, idx), expected)
    assert "manual softmax" in attention_kernel_report(model, found.module)


def test_sibling_import() -> None:
    ref, state = reference("stacked.py", STACK_ARGS)
    model = build_user_model(FIXTURES / "stacked.py", STACK_ARGS, state)
    assert type(model).__name__ == "Stack"
    idx = tokens(30)
    with torch.no_grad():
        torch.testing.assert_close(user_forward(model, idx), ref(idx))


def test_explicit_class_names() -> None:
    found = load_model_file(
        FIXTURES / "tinylm.py", model_class="FeedForward", config_class="TinyLMConfig"
    )
    assert found.model_class.__name__ == "FeedForward"
    with pytest.raises(ModelFileError, match=r"no nn.Module class 'Nope'.*SelfAttn.*TinyLM"):
        load_model_file(FIXTURES / "tinylm.py", model_class="Nope")
    with pytest.raises(ModelFileError, match=r"no config dataclass 'Cfg'; the file has: TinyLM"):
        load_model_file(FIXTURES / "tinylm.py", config_class="Cfg")


def test_two_files_of_one_name_stay_apart(tmp_path: Path) -> None:
    copy = tmp_path / "model.py"
    shutil.copy(FIXTURES / "model.py", copy)
    assert import_model_file(copy) is not import_model_file(FIXTURES / "model.py")


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "broken.py"
    bad.write_text("import torch\n\nclass GPT(torch.nn.Module:\n    pass\n")
    with pytest.raises(ModelFileError, match=rf"{bad}:3: syntax error"):
        import_model_file(bad)


def test_import_error_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "needs.py"
    bad.write_text("import torch\nimport flash_attn_not_installed_here\n")
    with pytest.raises(ModelFileError, match=rf"{bad}:2: No module named"):
        import_model_file(bad)
    with pytest.raises(ModelFileError, match="no such model file"):
        import_model_file(tmp_path / "absent.py")


def test_config_mismatch_is_named() -> None:
    args = NANOGPT_ARGS | {"n_kv_head": 2}
    with pytest.raises(ModelFileError, match="n_kv_head are not fields of GPTConfig"):
        build_user_model(FIXTURES / "model.py", args, {})


def test_weight_mismatch_lists_keys() -> None:
    _, state = reference("gpt.py", NANOCHAT_ARGS)
    del state["transformer.h.1.mlp.c_fc.weight"]
    state["extra.weight"] = torch.zeros(3)
    state["lm_head.weight"] = torch.zeros(71, 32)
    with pytest.raises(ModelFileError) as err:
        build_user_model(FIXTURES / "gpt.py", NANOCHAT_ARGS, state)
    message = str(err.value)
    assert "missing transformer.h.1.mlp.c_fc.weight" in message
    assert "unexpected extra.weight" in message
    assert "lm_head.weight (71, 32) vs (70, 32)" in message


def test_forward_without_all_positions_is_explained() -> None:
    class LastOnly(nn.Module):
        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return torch.zeros(idx.size(0), 1, 5)

    with pytest.raises(ModelFileError, match="1 of 4 positions and takes no targets"):
        user_forward(LastOnly(), torch.zeros(1, 4, dtype=torch.long))


def test_unwrap_compiled() -> None:
    inner = nn.Linear(2, 2)
    wrapper = nn.Module()
    wrapper._orig_mod = inner
    assert unwrap_compiled(wrapper) is inner and unwrap_compiled(inner) is inner


def test_flash_attn_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "fa.py"
    path.write_text(
        "import torch\n"
        "try:\n    from flash_attn import flash_attn_func\nexcept ImportError:\n"
        "    flash_attn_func = None\n"
        "class GPT(torch.nn.Module):\n    pass\n"
    )
    module = import_model_file(path)
    report = attention_kernel_report(nn.Module(), module)
    assert "not capturable" in report and "no fallback switch" in report
