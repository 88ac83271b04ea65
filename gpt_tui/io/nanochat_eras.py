"""Which nanochat era a checkpoint comes from, and the config that loads it in our family.

nanochat's gpt.py gained features over time; a checkpoint records only `model_config`
(sequence_len, vocab_size, n_layer, n_head, n_kv_head, n_embd, and from January 2026
window_pattern), so the era is read off the state-dict keys and shapes:

- classic (Oct 2025): no extra keys. Rope base 10000, softcap 15.
- residual lambdas (Jan 2026): `resid_lambdas` (n_layer,) and `x0_lambdas` (n_layer,);
  vocabulary rows padded to a multiple of 64; `window_pattern` in model_config, with S
  layers seeing sequence_len // 2 tokens back (FA3's window (left, 0): left + 1 keys).
- value embeddings (Jan 2026): `value_embeds.{i}.weight` (Vp, n_kv_head*hs) on layers
  with i % 2 == (n_layer-1) % 2, and `transformer.h.{i}.attn.ve_gate.weight`
  (n_kv_head, 32); v += 2 * sigmoid(ve_gate(x[..., :32])) * ve, per kv head.
- autoresearch round 1 (2026-03-09): ve_gate (n_kv_head, 12) with scale 3; q and k * 1.15
  after QK norm; rope base 100000; S = ceil(sequence_len/3/128)*128 tokens back.
- smear/backout (2026-03-14 on): `smear_gate.weight` (1, 24), `smear_lambda` (1,),
  `backout_lambda` (1,); ve_gate as above; q and k * 1.2; S = ceil(sequence_len/4/128)*128.

The logit softcap is 15 in every era except for code from 2026-03-02 to 2026-03-09, which
used 20; checkpoints of that week have the value-embedding keys (ve_gate of 32 channels)
like those of January to March 9, and nothing they record tells the two apart. Such
checkpoints load with 15 and a note; pass `softcap` in `model_config` (e.g. from
`--set softcap=20`) for one trained that week. Any field of our `NanoChatConfig` present
in `model_config` wins over what the keys suggest, so our own checkpoints (which record
every field) load exactly. Keys no era has (e.g. the bigram embeddings upstream tried for
a day in January 2026) are named in a ConfigError.

Our checkpoints keep `model_config` to nanochat's own GPTConfig fields of the model's era,
so nanochat's gpt.py builds them, and the rest of our config under `gpt_tui_config`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch

from ..models.config import (
    ConfigError,
    NanoChatConfig,
    config_from_dict,
    config_to_dict,
    user_fields,
)

# ve_gate input channels -> the gate's scale, as the two value-embedding eras paired them.
VE_GATE_SCALES = {32: 2.0, 12: 3.0}
# nanochat's GPTConfig fields in every era; window_pattern joined them in January 2026.
UPSTREAM_FIELDS = ("sequence_len", "vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd")
EXTRAS_KEY = "gpt_tui_config"  # beside model_config in meta_<step>.json: the rest of ours


def _shorten(keys: list[str]) -> str:
    return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")


def era_name(config: NanoChatConfig) -> str:
    """A short name of the era whose features `config` switches on (for `doctor`)."""
    if config.smear or config.backout:
        return "smear/backout (2026-03-14 on)"
    if config.value_embeds and config.ve_gate_channels == 12:
        return "autoresearch round 1 (2026-03-09)"
    if config.value_embeds:
        return "value embeddings (Jan 2026)"
    if config.resid_x0_lambdas:
        return "residual lambdas (Jan 2026)"
    return "classic (Oct 2025)"


def infer_era_fields(
    model_config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor], source: str
) -> dict[str, Any]:
    """The NanoChatConfig fields the state-dict keys imply, beyond upstream's model_config."""
    if "transformer.wte.weight" not in state_dict:
        raise ConfigError(f"{source}: no transformer.wte.weight; not a nanochat state dict")
    fields: dict[str, Any] = {}
    rows = state_dict["transformer.wte.weight"].shape[0]
    if rows > model_config.get("vocab_size", rows):
        fields["padded_vocab_size"] = rows
    if "resid_lambdas" in state_dict or "x0_lambdas" in state_dict:
        fields["resid_x0_lambdas"] = True
    gates = [v for k, v in state_dict.items() if k.endswith(".attn.ve_gate.weight")]
    if gates or any(k.startswith("value_embeds.") for k in state_dict):
        fields["value_embeds"] = True
    if gates:
        channels = gates[0].shape[1]
        if channels not in VE_GATE_SCALES:
            raise ConfigError(
                f"{source}: ve_gate reads {channels} channels; the known eras read "
                f"{' or '.join(map(str, VE_GATE_SCALES))}, so the gate's scale is unknown"
            )
        fields["ve_gate_channels"] = channels
        fields["ve_gate_scale"] = VE_GATE_SCALES[channels]
    fields["smear"] = "smear_gate.weight" in state_dict or "smear_lambda" in state_dict
    fields["backout"] = "backout_lambda" in state_dict
    if fields["smear"] or fields["backout"] or fields.get("ve_gate_channels") == 12:
        seq = model_config.get("sequence_len", NanoChatConfig.sequence_len)
        late = fields["smear"] or fields["backout"]
        fields["rope_base"] = 100000.0
        fields["qk_scale"] = 1.2 if late else 1.15
        fields["short_window"] = math.ceil(seq / (4 if late else 3) / 128) * 128
    return fields


def softcap_note(
    config: NanoChatConfig, model_config: Mapping[str, Any], source: str
) -> str | None:
    """A note when the checkpoint may come from the one week whose softcap was 20."""
    if "softcap" in model_config or not config.value_embeds or config.ve_gate_channels != 32:
        return None
    return (
        f"{source}: softcap {config.softcap:g} assumed; nanochat used 20 from 2026-03-02 to "
        "2026-03-09 and checkpoints of that week look the same: if yours is one, pass "
        "--set softcap=20"
    )


def check_state_dict(
    config: NanoChatConfig, state_dict: Mapping[str, torch.Tensor], source: str
) -> None:
    """Raise ConfigError naming every key our model for `config` lacks, misses or shapes apart."""
    from ..models.nanochat import GPT

    with torch.device("meta"):
        expected = {k: v.shape for k, v in GPT(config).state_dict().items()}
    unknown = sorted(set(state_dict) - set(expected))
    if unknown:
        raise ConfigError(
            f"{source}: a nanochat era this version cannot place; unknown keys: {_shorten(unknown)}"
        )
    missing = sorted(set(expected) - set(state_dict))
    if missing:
        raise ConfigError(f"{source}: keys missing for this config: {_shorten(missing)}")
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} (expected {tuple(shape)})"
        for k, shape in expected.items()
        if state_dict[k].shape != shape
    ]
    if wrong:
        raise ConfigError(f"{source}: shapes do not fit the config: {_shorten(wrong)}")


def nanochat_config_from_checkpoint(
    model_config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor], source: str
) -> NanoChatConfig:
    """The config that loads `state_dict` (keys without `_orig_mod.`) into our nanochat GPT.

    The model it builds slices padded-vocabulary logits back to `vocab_size` itself, so
    the state dict loads as it is, strictly. Raises ConfigError naming the keys of an era
    this version cannot place.
    """
    values = {**infer_era_fields(model_config, state_dict, source), **model_config}
    config = config_from_dict("nanochat", values, source)
    check_state_dict(config, state_dict, source)
    return config


def split_model_config(config: NanoChatConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """`config` as (model_config, extras): the fields nanochat's GPTConfig of the model's
    era has (window_pattern from the residual-lambdas era on), and the rest of ours."""
    values = config_to_dict(config)
    later = config.resid_x0_lambdas or config.value_embeds or config.smear or config.backout
    own = [*UPSTREAM_FIELDS, *(["window_pattern"] if later else [])]
    return {k: values[k] for k in own}, {k: v for k, v in values.items() if k not in own}


def _effective(name: str, value: Any, settings: Mapping[str, Any]) -> Any:
    """A setting as the model uses it (0 means "the default" for two of them)."""
    if name == "padded_vocab_size":
        return value or settings.get("vocab_size")
    if name == "short_window":
        return value or settings.get("sequence_len", NanoChatConfig.sequence_len) // 2
    return value


def fit_user_config(
    settings: Mapping[str, Any],
    config_class: type,
    state_dict: Mapping[str, torch.Tensor],
    source: str,
) -> tuple[dict[str, Any], list[str]]:
    """The arguments for a user's nanochat `config_class`, and the settings of
    ours it has no field for, left out because nanochat's own code of the weights' era
    (read off the keys) does just that. A setting that differs from it would change the
    model, and nothing in the user's code would apply it: ConfigError names it."""
    fields = {f.name for f in dataclasses.fields(config_class) if f.init}
    ours = {f.name for f in user_fields(NanoChatConfig)}
    args = {k: v for k, v in settings.items() if k in fields or k not in ours}
    left = {k: v for k, v in settings.items() if k not in args}
    if not left:
        return args, []
    era = {f.name: f.default for f in user_fields(NanoChatConfig)}
    era.update(infer_era_fields(settings, state_dict, source))
    changed = [
        f"{k}={v!r} (nanochat's code: {era[k]!r})"
        for k, v in left.items()
        if _effective(k, v, settings) != _effective(k, era[k], settings)
    ]
    if changed:
        name = config_class.__name__
        raise ConfigError(
            f"{source}: the checkpoint's {', '.join(changed)} would change the model and "
            f"{name} has no such field; open it without --model-file, or add the field to {name}"
        )
    return args, sorted(left)
