"""Init rules and train/eval facts, checked against freshly initialised models."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from gpt_tui.engine.analysis.init_rules import break_example, init_rows, mode_facts, rule_set
from gpt_tui.models.config import make_config
from gpt_tui.models.nanochat import GPT as NanoChat
from gpt_tui.models.nanogpt import GPT as NanoGPT


def fresh(family: str, **overrides: str):
    torch.manual_seed(0)
    config = make_config("tiny", family, {"n_embd": "128", "n_layer": "4", **overrides})
    return (NanoGPT if family == "nanogpt" else NanoChat)(config)


def test_nanogpt_rules_match_the_stds_a_fresh_model_has() -> None:
    rows = {r.name: r for r in init_rows(fresh("nanogpt"), "nanogpt")}
    proj = rows["transformer.h.3.mlp.c_proj.weight"]
    assert proj.init_std == pytest.approx(0.02 / math.sqrt(2 * 4))
    assert proj.rule == "residual projection: 0.02/√(2·n_layer)"
    assert rows["transformer.h.0.attn.c_attn.weight"].init == "N(0, 0.02)"
    assert rows["transformer.ln_f.weight"].init == "ones"
    for row in rows.values():
        assert row.std == pytest.approx(row.init_std, rel=0.1, abs=1e-6), row.name
    assert "lm_head.weight" not in rows  # tied to wte: listed once


def test_nanochat_rules_zero_the_head_and_projections() -> None:
    rows = {r.name: r for r in init_rows(fresh("nanochat"), "nanochat")}
    for name in ("lm_head.weight", "transformer.h.2.attn.c_proj.weight"):
        assert rows[name].init == "zeros" and rows[name].std == 0
    assert rows["transformer.wte.weight"].init_std == 1.0
    fc = rows["transformer.h.0.mlp.c_fc.weight"]  # fan_in 128, fan_out 512
    assert fc.init_std == pytest.approx(1 / math.sqrt(128))
    for row in rows.values():
        assert row.std == pytest.approx(row.init_std, rel=0.1, abs=1e-6), row.name


def test_a_model_of_no_known_family_gets_no_rule() -> None:
    row = init_rows(torch.nn.Linear(4, 4), "unknown")[0]
    assert row.init == "unknown" and math.isnan(row.init_std) and row.std is not None


def test_mode_facts_find_every_dropout_and_say_what_eval_turns_off() -> None:
    model = fresh("nanogpt", dropout="0.1").eval()
    facts = mode_facts(model)
    # drop, and per block attn.dropout (a float), attn.resid_dropout and mlp.dropout
    assert len(facts.dropout) == 1 + 4 * 3 and {p for _, p in facts.dropout} == {0.1}
    assert facts.mode == "eval" and not facts.dropout_on
    assert facts.line() == "eval mode · dropout off (p=0.1 in 13 places; on in train mode)"
    assert facts.line(training=True) == "train mode · dropout ON (p=0.1 in 13 places)"
    assert mode_facts(model.train()).dropout_on
    plain = mode_facts(fresh("nanochat"))
    assert plain.dropout == () and "no dropout" in plain.line()


def test_break_example_is_the_attention_call_of_the_models_own_file() -> None:
    for model, file in ((fresh("nanogpt"), "nanogpt.py"), (fresh("nanochat"), "nanochat.py")):
        example = break_example(model)
        name, line = example.split(":")
        assert name == file
        source = Path(__import__("inspect").getsourcefile(type(model))).read_text()
        assert "scaled_dot_product_attention(" in source.splitlines()[int(line) - 1]
    assert break_example(torch.nn.Linear(2, 2)) == "forward"


@pytest.mark.parametrize("era", ["classic", "lambdas", "value-embeds", "autoresearch", "latest"])
def test_a_fresh_nanochat_of_each_era_has_every_parameter_within_its_rule(era) -> None:
    model = fresh("nanochat", era=era)
    rows = init_rows(model, "nanochat")
    for row in rows:
        assert row.init != "unknown", row.name
        if row.std is None:  # one element: its value is the rule's constant
            continue
        # a sample std strays about 1/√(2n) of itself: the gates have 12 to 24 weights
        n = math.prod(row.shape)
        assert row.std == pytest.approx(
            row.init_std, rel=max(0.1, 3 / math.sqrt(2 * n)), abs=1e-6
        ), row.name
    late = era == "latest"
    assert rule_set(model, "nanochat").endswith("smear/backout era (2026-03-14 on)") == late
    by_name = {r.name: r for r in rows}
    assert by_name["transformer.wte.weight"].init == ("N(0, 0.8)" if late else "N(0, 1)")
    assert by_name["lm_head.weight"].init == ("N(0, 0.001)" if late else "zeros")
    fc = by_name["transformer.h.0.mlp.c_fc.weight"]  # n_embd 128
    assert fc.init_std == pytest.approx(0.4 / math.sqrt(128) if late else 1 / math.sqrt(128))


def test_the_latest_eras_lambdas_ramp_across_the_layers() -> None:
    model = fresh("nanochat", era="latest")
    assert model.resid_lambdas.tolist() == pytest.approx(
        [1.15, 1.15 - 0.1 / 3, 1.15 - 0.2 / 3, 1.05]
    )
    assert model.x0_lambdas.tolist() == pytest.approx([0.20, 0.15, 0.10, 0.05])
    assert model.backout_lambda.item() == pytest.approx(0.2) and model.smear_lambda.item() == 0
    gates = torch.cat(
        [model.smear_gate.weight.flatten(), model.transformer.h[3].attn.ve_gate.weight.flatten()]
    )
    assert gates.min() >= 0 and gates.max() <= 0.02
    fc = model.transformer.h[0].mlp.c_fc.weight
    assert fc.abs().max() <= 0.4 * math.sqrt(3 / 128)  # uniform, bounded at 0.4·√3/√n_embd
