"""Direct logit attribution: the components sum to the pre-softcap logit difference of the
model's own forward in both families (and nanochat's later eras), a user's model file
splits the same way as our family, and what the reading cannot do is said in one line."""

from __future__ import annotations

import pytest
import torch

from gpt_tui.engine.analysis.attribution import AttributionError, attribute
from gpt_tui.io.model_file import load_model_file
from tests.engine.compare_helpers import FIXTURES, ours, user_copy

IDS = [3, 14, 15, 9, 26, 5, 35, 8]
ERAS = dict(resid_x0_lambdas=True, value_embeds=True, backout=True, smear=True, n_layer=4)


def with_lambdas(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lambda" in name:
                p.uniform_(0.5, 1.5)
    return model


def head_logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    """lm_head's output in the model's own forward: the logits before any softcap."""
    seen = []
    handle = model.lm_head.register_forward_hook(lambda _m, _a, out: seen.append(out))
    with torch.no_grad():
        model(torch.tensor([ids]))
    handle.remove()
    return seen[0][0].float()


CASES = [("nanogpt", {}), ("nanochat", {}), ("nanochat", ERAS)]


@pytest.mark.parametrize("family, eras", CASES, ids=["nanogpt", "nanochat", "nanochat-eras"])
@pytest.mark.parametrize("position", [-1, 3])
def test_components_sum_to_the_pre_softcap_logit_difference(family, eras, position):
    model = with_lambdas(ours(family, **eras))
    result = attribute(model, IDS, 5, 7, position=position)
    pre = head_logits(model, IDS)[position]
    assert result.logit_diff == pytest.approx(float(pre[5] - pre[7]), abs=1e-4)
    assert result.total == pytest.approx(result.logit_diff, abs=1e-4)
    assert not result.notes
    assert not any(c.kind == "remainder" for c in result.components)
    kinds = {c.kind for c in result.components}
    assert {"embedding", "head", "mlp"} <= kinds
    heads = [c for c in result.components if c.kind == "head"]
    assert len(heads) == model.config.n_layer * model.config.n_head
    if eras:
        assert {"x0", "value_embeds"} <= kinds
    if family == "nanochat":  # the model's output is softcapped: smaller in size
        assert abs(result.model_logit_diff) < abs(result.logit_diff)
    else:
        assert result.model_logit_diff == pytest.approx(result.logit_diff, abs=1e-4)


def test_nanogpt_splits_token_and_position_embeddings():
    result = attribute(ours("nanogpt"), IDS, 5)
    names = [c.name for c in result.components]
    assert names[:2] == ["transformer.wte", "transformer.wpe"]
    assert result.wrong is None and result.total == pytest.approx(result.logit_diff, abs=1e-4)


def test_a_silenced_head_has_no_share():
    model = ours("nanogpt")
    with torch.no_grad():
        model.transformer.h[1].attn.c_proj.weight[:, 16:32] = 0  # head 1 of layer 1
    shares = {c.name: c.value for c in attribute(model, IDS, 5, 7).components}
    assert shares["L1 head 1"] == 0
    assert shares["L1 head 0"] != 0


def test_a_users_model_file_splits_like_our_family():
    model = ours("nanochat")
    mine = attribute(model, IDS, 5, 7)
    theirs = attribute(user_copy(model, "gpt.py"), IDS, 5, 7)
    assert [c.name for c in theirs.components] == [c.name for c in mine.components]
    for a, b in zip(mine.components, theirs.components, strict=True):
        assert a.value == pytest.approx(b.value, abs=1e-5)


def test_what_cannot_be_attributed_is_one_line():
    args = dict(vocab=65, d_model=32, n_layers=2, n_heads=4, max_len=16)
    found = load_model_file(FIXTURES / "tinylm.py", model_args=args)
    tiny = found.model_class(found.config_class(**args)).eval()
    with pytest.raises(AttributionError, match="lm_head"):
        attribute(tiny, IDS, 5)
    with pytest.raises(AttributionError, match="outside the prompt's 8 tokens"):
        attribute(ours("nanogpt"), IDS, 5, position=8)
