"""compare(): our families against users' model files on the same weights, one deliberate
bug each, fp32 against bf16, KV-cached decoding against recomputation, interventions."""

from __future__ import annotations

import copy

import pytest
import torch

from gpt_tui.engine.analysis.compare import CompareError, Run, compare, match_points
from gpt_tui.engine.analysis.interventions import OutputScale
from gpt_tui.engine.analysis.probe_points import find_probe_points
from gpt_tui.errors import GptTuiError
from gpt_tui.io.model_file import load_model_file
from tests.engine.compare_helpers import FIXTURES, ours, user_copy, write_port

IDS = [3, 14, 15, 9, 26, 5, 35, 8]


@pytest.mark.parametrize("family, file", [("nanogpt", "model.py"), ("nanochat", "gpt.py")])
def test_our_family_and_the_users_file_agree_on_one_checkpoint(family, file):
    model = ours(family)
    result = compare(Run(model, IDS), Run(user_copy(model, file), IDS, label="B"))
    assert result.first_divergence is None
    assert result.tolerance == 1e-5
    assert all(r.rel_diff <= 1e-5 and r.cosine > 0.99999 for r in result.records)
    names = [r.name for r in result.records]
    # model.py's forward keeps only the last position's logits: compared there
    assert "logits" in names and "transformer.h.1.mlp" in names
    assert not result.unmatched


BUGS = [
    ("nanogpt", "nanogpt_relu", "transformer.h.0.mlp", "transformer.h.0.mlp.gelu"),
    ("nanochat", "nanochat_relu", "transformer.h.0.mlp", "transformer.h.0.mlp"),
    ("nanochat", "nanochat_rope_base", "transformer.h.0.attn", "transformer.h.0.attn"),
    ("nanochat", "nanochat_no_qk_norm", "transformer.h.0.attn", "transformer.h.0.attn"),
]


@pytest.mark.parametrize("family, port, module, leaf", BUGS)
def test_one_deliberate_change_is_found_at_its_module(family, port, module, leaf, tmp_path):
    model = ours(family)
    buggy = user_copy(model, write_port(port, tmp_path))
    result = compare(Run(model, IDS), Run(buggy, IDS, label="B"))
    first = result.first_divergence
    assert first is not None and first.name == module
    assert first.message.startswith(f"diverges at {module}: its input agrees to")
    assert first.input_max_abs_diff is not None and first.input_max_abs_diff < 1e-5
    assert first.max_abs_diff > 1e-3
    names = [r.name for r in result.records]
    before = result.records[: names.index(module)]  # embeddings, resid_pre, ...: all agree
    assert before and not any(r.diverged for r in before)

    with_leaves = compare(Run(model, IDS), Run(buggy, IDS, label="B"), leaves=True)
    assert with_leaves.first_divergence is not None
    assert with_leaves.first_divergence.name == leaf
    # the Linears before the change agree: only what follows it differs
    first_linear = f"{module}.c_{'fc' if 'mlp' in module else 'q'}"
    assert not next(r for r in with_leaves.records if r.name == first_linear).diverged


def test_fp32_against_bf16_uses_the_bf16_tolerance():
    model = ours("nanogpt")
    half = copy.deepcopy(model).to(torch.bfloat16)
    result = compare(Run(model, IDS), Run(half, IDS, label="B"))
    assert result.tolerance == 1e-2
    assert any("bfloat16" in note for note in result.notes)
    rounding = [r.rel_diff for r in result.records]
    assert max(rounding) > 1e-5  # bf16 rounding is visible everywhere...
    assert all(r.diverged == (r.rel_diff > 1e-2) for r in result.records)
    if result.first_divergence is not None:  # ...and counts only beyond 1e-2
        first = next(r for r in result.records if r.diverged)
        assert result.first_divergence.first_probe == first.name
    strict = compare(Run(model, IDS), Run(half, IDS, label="B"), tolerance=1e-5)
    assert strict.first_divergence is not None
    assert strict.first_divergence.name == "transformer.wte"  # the rounded table itself


@pytest.mark.parametrize("family", ["nanogpt", "nanochat"])
def test_kv_cached_decoding_agrees_with_recomputation(family):
    model = ours(family)
    result = compare(Run(model, IDS), Run(model, IDS, kv_cache=True, label="B"))
    assert result.positions == (len(IDS) - 1,)
    assert result.first_divergence is None
    assert any(r.name == "logits" for r in result.records)


def test_an_intervention_diverges_at_the_module_it_changes():
    model = ours("nanogpt")
    ablated = Run(model, IDS, interventions=[OutputScale("transformer.h.1.mlp", 0.5)], label="B")
    result = compare(Run(model, IDS), ablated)
    first = result.first_divergence
    assert first is not None and first.name == "transformer.h.1.mlp"
    assert "its input agrees to 0" in first.message
    # the interventions were removed after B's run
    again = compare(Run(model, IDS), Run(model, IDS, label="B"))
    assert again.first_divergence is None and max(r.max_abs_diff for r in again.records) == 0


def test_a_nan_in_one_run_is_a_divergence_not_agreement():
    model = ours("nanogpt")
    nan = [OutputScale("transformer.h.1.mlp", float("nan"))]
    result = compare(Run(model, IDS), Run(model, IDS, interventions=nan, label="B"))
    first = result.first_divergence
    assert first is not None and first.name == "transformer.h.1.mlp"


def test_prompts_differ_from_the_first_changed_token():
    model = ours("nanogpt")
    other = IDS[:4] + [40] + IDS[5:]
    result = compare(Run(model, IDS), Run(model, other, label="B"))
    assert result.first_divergence is not None
    assert result.first_divergence.name == "transformer.wte"
    prefix = compare(Run(model, IDS), Run(model, IDS[:5], label="B"))
    assert prefix.positions == (0, 1, 2, 3, 4) and prefix.first_divergence is None


def test_lengths_that_cannot_line_up_are_one_line_errors():
    model = ours("nanogpt")
    with pytest.raises(CompareError, match="same token length") as err:
        compare(Run(model, IDS), Run(model, [1, 2, 3], label="B"))
    assert isinstance(err.value, GptTuiError) and "\n" not in str(err.value)


def test_probes_of_differently_named_models_match_by_structure():
    args = dict(vocab=65, d_model=32, n_layers=2, n_heads=4, max_len=16)
    found = load_model_file(FIXTURES / "tinylm.py", model_args=args)
    tiny = found.model_class(found.config_class(**args))
    matched = match_points(find_probe_points(ours("nanogpt")), find_probe_points(tiny))
    assert matched["transformer.h.1"] == "layers.1"
    assert matched["transformer.h.0.attn"] == "layers.0.attention"
    assert matched["transformer.h.1.mlp"] == "layers.1.ff"
    assert matched["transformer.h.0.resid_mid"] == "layers.0.resid_mid"
    assert matched["transformer.wte"] == "embed"
    assert matched["lm_head"] == "out" and matched["logits"] == "logits"


def test_the_debugger_diffs_patches_and_attributes_as_intents(tmp_path):
    from gpt_tui.engine.analysis.compare_intents import BSpec
    from gpt_tui.engine.core.session import ModelSpec, Session
    from gpt_tui.engine.debugger import Debugger

    debugger = Debugger(Session.open(ModelSpec(sample="shakespeare-nanogpt", device="cpu")))
    try:
        debugger.set_prompt("KING HENRY")
        state = debugger.compare_runs(BSpec(dtype="bfloat16"))
        view = state.compare
        assert view is not None and view.kind == "diff" and view.label == "bfloat16"
        assert view.comparison is not None and view.comparison.tolerance == 1e-2
        model_file = BSpec(model_file=str(write_port("nanogpt_relu", tmp_path)))
        first = debugger.compare_runs(model_file).compare.comparison.first_divergence
        assert first is not None and first.name == "transformer.h.0.mlp"

        sweep = debugger.patch_runs("KING RICHA", " ", "R").compare.sweep
        assert sweep is not None and len(sweep.values) == 4 and len(sweep.values[0]) == 10
        heads = debugger.patch_runs("KING RICHA", " ", "R", "heads").compare
        assert heads.kind == "patch" and heads.sweep.columns == (0, 1, 2, 3)

        view = debugger.attribute_logit(" ", "R").compare
        assert view.kind == "attribute" and view.tokens[-1] == "Y"
        assert view.attribution.total == pytest.approx(view.attribution.logit_diff, abs=1e-4)
        with pytest.raises(GptTuiError, match="answer 'Zq' is 2 tokens"):
            debugger.attribute_logit("Zq")
        assert debugger.state().compare is view  # a refused intent leaves the last view
    finally:
        debugger.close()


def test_a_b_model_file_needs_weights_when_a_is_random():
    from gpt_tui.engine.analysis.compare_intents import BSpec
    from gpt_tui.engine.core.session import ModelSpec, Session
    from gpt_tui.engine.debugger import Debugger

    debugger = Debugger(Session.open(ModelSpec(config="tiny", device="cpu")))
    try:
        with pytest.raises(CompareError, match="A is a random init"):
            debugger.compare_runs(BSpec(model_file=str(FIXTURES / "model.py")))
        with pytest.raises(CompareError, match="KV-cached decoding needs"):
            debugger.set_prompt("A")
            debugger.compare_runs(BSpec(kv_cache=True))
    finally:
        debugger.close()


def test_the_apps_diff_of_a_prompt_beyond_the_context_carries_the_crop_note():
    from gpt_tui.engine.analysis.compare_intents import BSpec
    from gpt_tui.engine.core.session import ModelSpec, Session
    from gpt_tui.engine.debugger import Debugger

    debugger = Debugger(Session.open(ModelSpec(config="tiny", device="cpu")))
    try:
        debugger.set_prompt("abcdefghijklmnopqr")  # 18 tokens, a 16-token context
        result = debugger.compare_runs(BSpec(dtype="bfloat16")).compare.comparison
        assert result.positions == tuple(range(16))
        assert result.notes[0] == (
            "prompt of 18 tokens cropped from the left to the last 16 tokens "
            "(the context length), as nanoGPT does"
        )
    finally:
        debugger.close()


def test_runs_on_different_tokens_say_so_before_any_module():
    model = ours("nanochat")
    other = [*IDS[:3], 40, *IDS[4:]]
    result = compare(Run(model, IDS, tokens=[str(i) for i in IDS]), Run(model, other, label="B"))
    first = result.first_divergence
    assert first is not None and first.token_position == 3
    assert first.message.startswith("the prompts differ at token 3 ('9' vs id 40)")
    # a cached decode compares the last position only, yet the earlier tokens fill its cache
    cached = compare(Run(model, IDS), Run(model, other, kv_cache=True, label="B"))
    assert cached.positions == (7,) and cached.first_divergence is not None
    assert cached.first_divergence.token_position == 3
    # the same tokens: no such sentence
    same = compare(Run(model, IDS), Run(model, IDS, kv_cache=True, label="B"))
    assert same.first_divergence is None
