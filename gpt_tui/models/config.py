"""Presets, `--set` parsing and validation of the two families' configs.

The config dataclasses live beside their models, as upstream keeps them:
`NanoGPTConfig` in `nanogpt.py` (nanoGPT's `GPTConfig` fields: `block_size`, `vocab_size`,
`n_layer`, `n_head`, `n_embd`, `dropout`, `bias`) and `NanoChatConfig` in `nanochat.py`
(nanochat's: `sequence_len`, `vocab_size`, `n_layer`, `n_head`, `n_kv_head`, `n_embd`).
Every problem raises `ConfigError` with one line naming the field and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from typing import Any

from ..errors import GptTuiError
from .nanochat import NanoChatConfig
from .nanogpt import NanoGPTConfig

FAMILIES: tuple[str, ...] = ("nanogpt", "nanochat")
GELU_APPROXIMATIONS: tuple[str, ...] = ("none", "tanh")


class ConfigError(GptTuiError, ValueError):
    """A configuration the user asked for cannot be built. The message is one readable line."""


ModelConfig = NanoGPTConfig | NanoChatConfig
CONFIG_CLASSES: dict[str, type] = {"nanogpt": NanoGPTConfig, "nanochat": NanoChatConfig}


def user_fields(config_cls: type) -> list[dataclasses.Field]:
    """The fields a user may set (everything but the read-only `family` tag)."""
    return [f for f in dataclasses.fields(config_cls) if f.init]


def config_to_dict(config: ModelConfig) -> dict[str, Any]:
    """The settable fields, as a checkpoint records them: a field upstream's config lacks
    (metadata upstream=False) only when it differs from its default."""
    return {
        f.name: getattr(config, f.name)
        for f in user_fields(type(config))
        if f.metadata.get("upstream", True) or getattr(config, f.name) != f.default
    }


def _nanochat_depth(depth: int) -> dict[str, Any]:
    # nanochat's scaling rule: width = depth * 64 rounded up to whole 128-wide heads.
    n_head = math.ceil(depth * 64 / 128)
    return dict(
        n_layer=depth,
        n_embd=n_head * 128,
        n_head=n_head,
        n_kv_head=n_head,
        sequence_len=2048,
        vocab_size=32768,
    )


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    # Settings per family the preset fits; the first family is the default.
    settings: dict[str, dict[str, Any]]

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(self.settings)


def _both(common: dict[str, Any], nanogpt: dict[str, Any], nanochat: dict[str, Any]):
    return {"nanogpt": {**common, **nanogpt}, "nanochat": {**common, **nanochat}}


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "tiny",
            "two layers, 32 wide: for tests and quick looks",
            _both(
                dict(n_layer=2, n_head=2, n_embd=32, vocab_size=65),
                dict(block_size=16, bias=False),
                dict(sequence_len=16, n_kv_head=2),
            ),
        ),
        Preset(
            "mini",
            "four layers, 128 wide: trains on a CPU (train's default)",
            _both(
                dict(n_layer=4, n_head=4, n_embd=128, vocab_size=65),
                dict(block_size=128, bias=False, dropout=0.0),
                dict(sequence_len=128, n_kv_head=4),
            ),
        ),
        Preset(
            "small",
            "nanoGPT's shakespeare-char shape",
            _both(
                dict(n_layer=6, n_head=6, n_embd=384, vocab_size=65),
                dict(block_size=256, bias=False, dropout=0.0),
                dict(sequence_len=256, n_kv_head=6),
            ),
        ),
        Preset("gpt2", "GPT-2 124M", {"nanogpt": dict(n_layer=12, n_head=12, n_embd=768)}),
        Preset("gpt2-medium", "GPT-2 350M", {"nanogpt": dict(n_layer=24, n_head=16, n_embd=1024)}),
        Preset("gpt2-large", "GPT-2 774M", {"nanogpt": dict(n_layer=36, n_head=20, n_embd=1280)}),
        Preset("gpt2-xl", "GPT-2 1558M", {"nanogpt": dict(n_layer=48, n_head=25, n_embd=1600)}),
        *[
            Preset(f"d{d}", f"nanochat depth {d}", {"nanochat": _nanochat_depth(d)})
            for d in (12, 20, 26, 32)
        ],
    ]
}
for _name in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"):
    PRESETS[_name].settings["nanogpt"].update(block_size=1024, vocab_size=50257, bias=True)


_KIND_NAMES = {bool: "true or false", int: "a whole number", float: "a number"}


def _parse_value(name: str, raw: str, default: Any) -> Any:
    kind = type(default)
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
    except ValueError:
        raise ConfigError(
            f"--set {name}={raw}: {name} takes {_KIND_NAMES[kind]}, e.g. --set {name}={default}"
        ) from None
    return raw


def parse_overrides(pairs: list[str] | None) -> dict[str, str]:
    """Turn ['n_layer=4', 'bias=false'] into {'n_layer': '4', 'bias': 'false'}."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: write it as key=value, e.g. --set n_layer=4")
        out[key.strip()] = value.strip()
    return out


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def apply_overrides(config: ModelConfig, overrides: dict[str, Any], source: str) -> ModelConfig:
    """A copy of `config` with `key=value` overrides (strings are typed by the field), checked.

    For checkpoints: e.g. a nanochat checkpoint of an era whose softcap its meta file does
    not record (`--set softcap=20`). Fields that change shapes fail later, at loading, with
    the mis-shaped keys named.
    """
    defaults = {f.name: f.default for f in user_fields(type(config))}
    values = {}
    for key, value in overrides.items():
        if key not in defaults:
            raise ConfigError(
                f"--set {key}: {source} is a {config.family} model, which has no field "
                f"{key!r}{_suggest(key, list(defaults))}"
            )
        values[key] = _parse_value(key, value, defaults[key]) if isinstance(value, str) else value
    updated = dataclasses.replace(config, **values)
    validate(updated)
    return updated


# nanochat's eras, oldest first, for `--set era=NAME` (`latest`: the last): the settings
# that make our nanochat the model the gpt.py of that era builds. Each era keeps the
# features of the one before; `gpt_tui.io.nanochat_eras` reads them off a checkpoint.
NANOCHAT_ERAS: tuple[str, ...] = ("classic", "lambdas", "value-embeds", "autoresearch", "smear")


def nanochat_era_settings(era: str, vocab_size: int, sequence_len: int) -> dict[str, Any]:
    """The NanoChatConfig fields of nanochat's gpt.py in `era`."""
    era = NANOCHAT_ERAS[-1] if era == "latest" else era
    if era not in NANOCHAT_ERAS:
        raise ConfigError(
            f"era={era!r}: one of {', '.join(NANOCHAT_ERAS)}, or latest ({NANOCHAT_ERAS[-1]})"
        )
    rank = NANOCHAT_ERAS.index(era)
    settings: dict[str, Any] = {}
    if rank >= 1:  # January 2026: residual lambdas, the vocabulary padded to 64, windows
        padded = math.ceil(vocab_size / 64) * 64
        settings |= {"padded_vocab_size": padded, "resid_x0_lambdas": True}
        settings |= {"window_pattern": "SSSL"}
    if rank >= 2:  # January 2026: value embeddings
        settings |= {"value_embeds": True, "ve_gate_channels": 32, "ve_gate_scale": 2.0}
    if rank >= 3:  # 2026-03-09
        settings |= {"ve_gate_channels": 12, "ve_gate_scale": 3.0, "qk_scale": 1.15}
        settings |= {"rope_base": 100000.0, "short_window": math.ceil(sequence_len / 384) * 128}
    if rank >= 4:  # 2026-03-14 on
        settings |= {"smear": True, "backout": True, "qk_scale": 1.2}
        settings |= {"short_window": math.ceil(sequence_len / 512) * 128}
    return settings


def make_config(
    preset: str | None = None,
    family: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> ModelConfig:
    """Build and validate a config from a preset name, a family and `key=value` overrides.

    Override values may be strings (from the command line) or typed values.
    """
    if family is not None and family not in FAMILIES:
        raise ConfigError(f"unknown --arch {family!r}: choose one of {', '.join(FAMILIES)}")
    settings: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(
                f"unknown config {preset!r}{_suggest(preset, list(PRESETS))}; "
                "`gpt-tui configs` lists them"
            )
        p = PRESETS[preset]
        if family is None:
            family = p.families[0]
        elif family not in p.settings:
            raise ConfigError(
                f"config {preset!r} is a {p.families[0]} preset; drop --arch {family} "
                f"or pick a preset for {family} (`gpt-tui configs`)"
            )
        settings.update(p.settings[family])
    family = family or "nanogpt"
    cls = CONFIG_CLASSES[family]
    defaults = {f.name: f.default for f in user_fields(cls)}
    overrides = dict(overrides or {})
    era = overrides.pop("era", None)
    if era is not None and family != "nanochat":
        raise ConfigError(f"era={era!r} is a nanochat setting: add --arch nanochat")
    given: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in defaults:
            extra = ", era" if family == "nanochat" else ""
            raise ConfigError(
                f"unknown config field {key!r} for the {family} family"
                f"{_suggest(key, list(defaults))}; fields: {', '.join(defaults)}{extra}"
            )
        given[key] = _parse_value(key, value, defaults[key]) if isinstance(value, str) else value
    if era is not None:  # the era's settings over the preset's; a field given too wins
        shape = {**defaults, **settings, **given}
        settings |= nanochat_era_settings(str(era), shape["vocab_size"], shape["sequence_len"])
    config = cls(**(settings | given))
    validate(config)
    return config


def config_from_dict(family: str, values: dict[str, Any], source: str) -> ModelConfig:
    """A config from a checkpoint's `model_args` / `model_config`; unknown keys are errors."""
    cls = CONFIG_CLASSES[family]
    known = {f.name for f in user_fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"{source}: config keys {', '.join(unknown)} are not supported by the {family} "
            "family of this gpt-tui version"
        )
    config = cls(**values)
    validate(config)
    return config


def validate(config: ModelConfig) -> None:
    def positive(name: str) -> None:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{name}={value!r}: must be a positive whole number")

    for name in ("n_layer", "n_head", "n_embd", "vocab_size"):
        positive(name)
    if isinstance(config, NanoGPTConfig):
        positive("block_size")
        if not 0.0 <= config.dropout < 1.0:
            raise ConfigError(f"dropout={config.dropout}: must be in [0, 1)")
        if config.gelu_approximate not in GELU_APPROXIMATIONS:
            raise ConfigError(
                f"gelu_approximate={config.gelu_approximate!r}: use none (exact GELU, as "
                "nanoGPT) or tanh (GPT-2's gelu_new, as Hugging Face checkpoints)"
            )
    else:
        positive("sequence_len")
        positive("n_kv_head")
        if config.n_kv_head > config.n_head or config.n_head % config.n_kv_head:
            divisors = [d for d in range(1, config.n_head + 1) if config.n_head % d == 0]
            raise ConfigError(
                f"n_kv_head={config.n_kv_head}: must divide n_head={config.n_head}; "
                f"choose one of {', '.join(map(str, divisors))}"
            )
        if config.rope_base <= 0:
            raise ConfigError(f"rope_base={config.rope_base}: must be positive")
        if config.softcap < 0:
            raise ConfigError(f"softcap={config.softcap}: must be >= 0 (0 turns it off)")
        _validate_nanochat_eras(config)
    if config.n_embd % config.n_head:
        raise ConfigError(
            f"n_embd={config.n_embd} is not divisible by n_head={config.n_head}; "
            f"pick n_embd a multiple of {config.n_head} or another n_head"
        )
    if isinstance(config, NanoChatConfig) and config.head_dim % 2:
        raise ConfigError(
            f"head_dim={config.head_dim} (n_embd/n_head) must be even for rotary embeddings"
        )


def _validate_nanochat_eras(config: NanoChatConfig) -> None:
    """The fields of the later nanochat eras."""
    if config.padded_vocab_size and config.padded_vocab_size < config.vocab_size:
        raise ConfigError(
            f"padded_vocab_size={config.padded_vocab_size}: must be 0 (no padding) or at "
            f"least vocab_size={config.vocab_size}"
        )
    pattern = config.window_pattern
    if not pattern or set(pattern.upper()) - {"S", "L"}:
        raise ConfigError(
            f"window_pattern={pattern!r}: use only the letters S (short) and L (long), e.g. SSSL"
        )
    if config.short_window < 0:
        raise ConfigError(f"short_window={config.short_window}: must be >= 0 (0 = half context)")
    if config.value_embeds and not 0 < config.ve_gate_channels <= config.n_embd:
        raise ConfigError(
            f"ve_gate_channels={config.ve_gate_channels}: must be between 1 and "
            f"n_embd={config.n_embd}"
        )
    if config.smear and config.n_embd < 24:
        raise ConfigError(f"smear reads 24 channels; n_embd={config.n_embd} is too narrow")
    if config.qk_scale <= 0:
        raise ConfigError(f"qk_scale={config.qk_scale}: must be positive")
