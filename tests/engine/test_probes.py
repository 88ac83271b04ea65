"""Probe discovery by structure and what the probes record in one pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt_tui.engine.analysis.probe_points import find_probe_points
from gpt_tui.engine.analysis.probes import Probes
from gpt_tui.engine.core.model_access import find_block_list
from gpt_tui.models import build_model, make_config


def randomize(model: nn.Module) -> nn.Module:
    """nanochat zeroes its projections and head at init; tests want non-trivial outputs."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


def nanogpt() -> nn.Module:
    return randomize(build_model(make_config("tiny"), "cpu"))


def nanochat() -> nn.Module:
    config = make_config("tiny", "nanochat", {"n_head": 4, "n_kv_head": 2, "n_embd": 32})
    return randomize(build_model(config, "cpu"))


class SelfAttn(nn.Module):
    """Foreign attention: separate q/k/v/o, an optional sliding window, SDPA or by hand."""

    def __init__(self, C: int, n_head: int, window: int | None, manual: bool) -> None:
        super().__init__()
        self.n_head, self.window, self.manual = n_head, window, manual
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(C, C) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (
            w(x).view(B, T, self.n_head, -1).transpose(1, 2) for w in (self.wq, self.wk, self.wv)
        )
        pos = torch.arange(T)
        allowed = pos[None, :] <= pos[:, None]
        if self.window is not None:
            allowed &= pos[None, :] > pos[:, None] - self.window
        if self.manual:
            att = q @ k.transpose(-2, -1) * (1.0 / q.size(-1) ** 0.5)
            att = att.masked_fill(~allowed, float("-inf"))
            att = F.softmax(att, dim=-1)
            y = att @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.wo(y.transpose(1, 2).reshape(B, T, C))


class FeedForward(nn.Module):
    def __init__(self, C: int) -> None:
        super().__init__()
        self.w1, self.w3, self.w2 = nn.Linear(C, 3 * C), nn.Linear(C, 3 * C), nn.Linear(3 * C, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Layer(nn.Module):
    """Names that say nothing (`mixer`, `channel`) and a tuple output."""

    def __init__(self, C: int, n_head: int, window: int | None, manual: bool) -> None:
        super().__init__()
        self.pre, self.mixer = nn.LayerNorm(C), SelfAttn(C, n_head, window, manual)
        self.post, self.channel = nn.LayerNorm(C), FeedForward(C)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        x = x + self.mixer(self.pre(x))
        return x + self.channel(self.post(x)), None


class Foreign(nn.Module):
    def __init__(self, window: int | None = None, manual: bool = False, C: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, C)
        self.layers = nn.ModuleList(Layer(C, 2, window, manual) for _ in range(3))
        self.norm = nn.LayerNorm(C)
        self.out = nn.Linear(C, 50, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(idx)
        for layer in self.layers:
            x, _ = layer(x)
        return self.out(self.norm(x))


IDX = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])


def names(points, kinds) -> list[str]:
    return [p.name for p in points if p.kind in kinds]


def test_nanogpt_points() -> None:
    points = find_probe_points(nanogpt())
    assert [p.name for p in points] == [
        "transformer.wte",
        "transformer.wpe",
        *[
            f"transformer.h.{i}{suffix}"
            for i in range(2)
            for suffix in (
                ".resid_pre", "", ".attn", ".attn.pattern", ".resid_mid", ".mlp", ".resid_post"
            )
        ],
        "transformer.ln_f",
        "lm_head",
        "logits",
    ]  # fmt: skip
    kinds = {p.name: p.kind for p in points}
    assert kinds["transformer.h.1.attn"] == "attn" and kinds["transformer.h.1.mlp"] == "mlp"
    assert kinds["transformer.ln_f"] == "norm" and kinds["lm_head"] == "head"


def test_nanochat_points_gqa_projections_are_not_an_mlp() -> None:
    points = find_probe_points(nanochat())
    assert names(points, {"attn"}) == ["transformer.h.0.attn", "transformer.h.1.attn"]
    assert names(points, {"mlp"}) == ["transformer.h.0.mlp", "transformer.h.1.mlp"]
    assert names(points, {"norm"}) == []  # nanochat normalises with a function
    assert names(points, {"embedding", "head"}) == ["transformer.wte", "lm_head"]


def test_foreign_model_found_by_structure() -> None:
    points = find_probe_points(Foreign())
    assert find_block_list(Foreign())[0] == "layers"
    assert names(points, {"block"}) == ["layers.0", "layers.1", "layers.2"]
    assert names(points, {"attn"}) == [f"layers.{i}.mixer" for i in range(3)]
    assert names(points, {"mlp"}) == [f"layers.{i}.channel" for i in range(3)]
    assert names(points, {"embedding", "norm", "head"}) == ["embed", "norm", "out"]


def test_leaves_on_request() -> None:
    leaves = names(find_probe_points(nanogpt(), leaves=True), {"leaf"})
    assert "transformer.h.0.attn.c_attn" in leaves and "transformer.h.1.mlp.gelu" in leaves
    assert "lm_head" not in leaves and "transformer.wte" not in leaves
    assert names(find_probe_points(nanogpt()), {"leaf"}) == []


def test_meta_model_discovery_needs_no_forward() -> None:
    model = build_model(make_config("gpt2"), "meta")
    points = find_probe_points(model)
    assert len(names(points, {"block"})) == 12 and len(names(points, {"attn"})) == 12
    assert points[-2].name == "lm_head"


def test_meta_forward_records_shapes() -> None:
    model = build_model(make_config("tiny"), "meta")
    with Probes(model) as probes:
        probes.run(IDX.to("meta"))
    assert probes.records[-1].shape == (1, 8, 65)
    assert probes.records[-1].stats.numel == 8 * 65


def test_compiled_model_is_unwrapped() -> None:
    model = nanogpt()
    points = find_probe_points(torch.compile(model))
    assert "transformer.h.0.attn" in names(points, {"attn"})
    assert not any("_orig_mod" in p.name for p in points)


def test_records_in_execution_order_with_shapes() -> None:
    with Probes(nanogpt()) as probes:
        logits = probes.run(IDX)
    got = [(r.name, r.shape) for r in probes.records]
    assert got[:3] == [
        ("transformer.wte", (1, 8, 32)),
        ("transformer.wpe", (8, 32)),
        ("transformer.h.0.resid_pre", (1, 8, 32)),
    ]
    assert [n for n, _ in got[3:8]] == [
        "transformer.h.0.attn",
        "transformer.h.0.resid_mid",
        "transformer.h.0.mlp",
        "transformer.h.0",
        "transformer.h.0.resid_post",
    ]
    assert got[-2:] == [("lm_head", (1, 8, 65)), ("logits", (1, 8, 65))]
    assert [r.order for r in probes.records] == list(range(len(got)))
    assert logits.shape == (1, 8, 65)


def reference_outputs(model: nn.Module, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every module's output (and block inputs) by plain hooks, for a reference."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in model.named_modules():

        def post(m, args, out, name=name):
            seen[name] = (out[0] if isinstance(out, tuple) else out).detach().clone()

        def pre(m, args, name=name):
            seen[f"{name}:in"] = args[0].detach().clone()

        handles += [module.register_forward_hook(post), module.register_forward_pre_hook(pre)]
    with torch.no_grad():
        model(idx)
    for h in handles:
        h.remove()
    return seen


@pytest.mark.parametrize("make", [nanogpt, nanochat, Foreign])
def test_stats_equal_reference(make) -> None:
    model = make()
    ref = reference_outputs(model, IDX)
    with Probes(model) as probes:
        probes.run(IDX)
    by_name = {r.name: r for r in probes.records}
    blocks = [p.name for p in probes.points if p.kind == "block"]
    for p in probes.points:
        if p.module is None:
            continue
        x = ref[p.name]
        s = by_name[p.name].stats
        assert s.mean == pytest.approx(x.mean().item(), abs=1e-5), p.name
        assert s.std == pytest.approx(x.std(correction=0).item(), rel=1e-4, abs=1e-6), p.name
        assert s.rms == pytest.approx(x.square().mean().sqrt().item(), rel=1e-4), p.name
        assert (s.min, s.max) == pytest.approx((x.min().item(), x.max().item())), p.name
        assert s.abs_max == pytest.approx(x.abs().max().item()), p.name
        assert s.zero_frac == pytest.approx((x == 0).float().mean().item()), p.name
        assert (s.nan_count, s.inf_count, s.numel) == (0, 0, x.numel())
    for block in blocks:
        attn = next(
            p.name for p in probes.points if p.kind == "attn" and p.name.startswith(block + ".")
        )
        mid = ref[f"{block}:in"] + ref[attn]
        assert by_name[f"{block}.resid_pre"].stats.mean == pytest.approx(
            ref[f"{block}:in"].mean().item(), abs=1e-6
        )
        assert by_name[f"{block}.resid_mid"].stats.std == pytest.approx(
            mid.std(correction=0).item(), rel=1e-4
        )
        assert by_name[f"{block}.resid_post"].stats == by_name[block].stats


def test_injected_nan_is_counted() -> None:
    model = nanogpt()

    def inject(module, args, out):
        out = out.clone()
        out[0, 2, :5] = float("nan")
        out[0, 3, 0] = float("inf")
        return out

    handle = model.transformer.h[0].mlp.register_forward_hook(inject)
    with Probes(model) as probes:
        probes.run(IDX)
    handle.remove()
    by_name = {r.name: r.stats for r in probes.records}
    mlp = by_name["transformer.h.0.mlp"]
    assert (mlp.nan_count, mlp.inf_count) == (5, 1)
    assert all(abs(v) < 1e3 for v in (mlp.mean, mlp.std, mlp.min, mlp.max))  # finite part
    assert by_name["transformer.h.0.attn"].finite
    assert by_name["logits"].nan_count > 0


def test_outside_a_pass_and_after_close_nothing_is_recorded() -> None:
    model = nanogpt()
    probes = Probes(model)
    probes.run(IDX)
    n = len(probes.records)
    with torch.no_grad():
        model.lm_head(torch.randn(1, 2, 32))  # the logit lens calls the head directly
    assert len(probes.records) == n
    probes.close()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    probes.run(IDX)
    assert len(probes.records) == n  # the closed probes saw nothing


def test_exception_in_forward_leaves_probes_usable() -> None:
    model = nanogpt()
    with Probes(model, attention_layers="all") as probes:
        with pytest.raises(ValueError):
            probes.run(torch.zeros(1, 40, dtype=torch.long))  # longer than block_size
        probes.run(IDX)
        assert probes.records[-1].name == "logits"
        assert set(probes.patterns()) == {0, 1}
    assert not torch.overrides._get_current_function_mode_stack()


@pytest.mark.parametrize("make", [nanogpt, nanochat])
def test_records_of_one_tensor_name_its_first_output(make) -> None:
    with Probes(make(), inputs=True) as probes:
        probes.run(IDX)
    by_key = {(r.name, r.phase): r for r in probes.records}
    same = {key: r.same_as for key, r in by_key.items()}
    # A block boundary: one tensor, four records.
    assert same[("transformer.h.0", "out")] is None
    assert same[("transformer.h.0.resid_post", "out")] == "transformer.h.0"
    assert same[("transformer.h.1", "in")] == "transformer.h.0"
    assert same[("transformer.h.1.resid_pre", "out")] == "transformer.h.0"
    # Different tensors are not linked, whatever their values.
    for name in ("transformer.h.0.attn", "transformer.h.0.resid_mid", "transformer.h.0.mlp"):
        assert same[(name, "out")] is None
    assert same[("transformer.h.0.mlp", "in")] is None  # ln_2's output, not probed
    for r in probes.records:
        if r.same_as is not None:
            first = by_key[(r.same_as, "out")]
            assert first.order < r.order and first.same_as is None
            assert first.stats == r.stats and first.shape == r.shape


def test_same_as_follows_leaves_and_the_head() -> None:
    with Probes(nanogpt(), leaves=True) as probes:
        probes.run(IDX)
    same = {r.name: r.same_as for r in probes.records if r.phase == "out"}
    assert same["transformer.h.0.resid_pre"] == "transformer.drop"  # dropout in eval: x itself
    assert same["logits"] == "lm_head"
    assert same["transformer.h.0.ln_1"] is None
