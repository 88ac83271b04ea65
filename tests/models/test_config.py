"""Presets, overrides and the one-line errors for bad configurations."""

import pytest

from gpt_tui.models.config import ConfigError, config_to_dict, make_config, parse_overrides


def test_overrides_are_typed_from_the_field_defaults():
    config = make_config(
        "tiny", "nanogpt", parse_overrides(["n_layer=3", "bias=true", "dropout=0.1"])
    )
    assert (config.n_layer, config.bias, config.dropout) == (3, True, 0.1)


@pytest.mark.parametrize(
    "preset,family,overrides,message",
    [
        (
            "d20",
            None,
            {"n_kv_head": "3"},
            r"n_kv_head=3: must divide n_head=10; choose one of 1, 2, 5, 10",
        ),
        ("d20", None, {"n_kv_head": "20"}, r"n_kv_head=20: must divide n_head=10"),
        ("small", None, {"n_embd": "100"}, r"n_embd=100 is not divisible by n_head=6"),
        ("small", None, {"n_layer": "0"}, r"n_layer=0: must be a positive whole number"),
        ("small", None, {"n_layr": "3"}, r"unknown config field 'n_layr'.*did you mean 'n_layer'"),
        ("small", None, {"n_layer": "x"}, r"n_layer takes a whole number"),
        ("smal", None, {}, r"unknown config 'smal' \(did you mean 'small'\?\)"),
        ("gpt2", "nanochat", {}, r"'gpt2' is a nanogpt preset"),
        ("small", "nanogpt", {"dropout": "1.5"}, r"dropout=1.5"),
        ("small", None, {"gelu_approximate": "fast"}, r"gelu_approximate='fast': use none"),
        ("tiny", "nanochat", {"gelu_approximate": "tanh"}, r"unknown config field"),
    ],
)
def test_bad_configs_name_the_field_and_the_fix(preset, family, overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        make_config(preset, family, overrides)
    assert "\n" not in str(info.value)


def test_set_without_equals_sign_is_explained():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["n_layer"])


def test_gelu_approximate_is_set_and_recorded_only_when_not_exact():
    exact = make_config("gpt2")
    assert exact.gelu_approximate == "none"
    # nanoGPT's GPTConfig(**model_args) must still load what gpt-tui saves.
    assert "gelu_approximate" not in config_to_dict(exact)
    tanh = make_config("gpt2", overrides=parse_overrides(["gelu_approximate=tanh"]))
    assert tanh.gelu_approximate == "tanh"
    assert config_to_dict(tanh)["gelu_approximate"] == "tanh"
