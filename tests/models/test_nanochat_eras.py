"""Every nanochat era loads into our family and computes what the era's formulas say.

Each test builds a state dict with the keys and shapes that era's gpt.py makes (random
values), loads it through `nanochat_config_from_checkpoint`, and compares the logits with
`reference_logits`, a plain functional forward written here from the formulas alone.
"""

from __future__ import annotations

import math

import pytest
import torch

from gpt_tui.io.nanochat_eras import era_name, nanochat_config_from_checkpoint
from gpt_tui.models import ConfigError, build_model, make_config
from gpt_tui.models.config import config_to_dict
from gpt_tui.models.sampling import generate

N_LAYER, N_HEAD, N_KV_HEAD, N_EMBD, VOCAB = 4, 4, 2, 64, 50
HS = N_EMBD // N_HEAD
ERAS = ("classic", "lambdas", "value_embeds", "smear_backout")


def era_state_dict(era: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Keys and shapes as the era's code makes them; values random but well scaled."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, std: float = 0.3) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std

    rows = VOCAB if era == "classic" else 64  # later eras pad the vocabulary to 64
    kv = N_KV_HEAD * HS
    sd = {"transformer.wte.weight": rnd(rows, N_EMBD, std=1.0)}
    for i in range(N_LAYER):
        p = f"transformer.h.{i}."
        sd[p + "attn.c_q.weight"] = rnd(N_EMBD, N_EMBD)
        sd[p + "attn.c_k.weight"] = rnd(kv, N_EMBD)
        sd[p + "attn.c_v.weight"] = rnd(kv, N_EMBD)
        sd[p + "attn.c_proj.weight"] = rnd(N_EMBD, N_EMBD, std=0.1)
        sd[p + "mlp.c_fc.weight"] = rnd(4 * N_EMBD, N_EMBD, std=0.1)
        sd[p + "mlp.c_proj.weight"] = rnd(N_EMBD, 4 * N_EMBD, std=0.1)
    sd["lm_head.weight"] = rnd(rows, N_EMBD)
    if era == "classic":
        return sd
    sd["resid_lambdas"] = 1.0 + rnd(N_LAYER, std=0.1)
    sd["x0_lambdas"] = rnd(N_LAYER, std=0.2)
    if era == "lambdas":
        return sd
    channels = 32 if era == "value_embeds" else 12
    for i in range(N_LAYER):
        if i % 2 == (N_LAYER - 1) % 2:
            sd[f"value_embeds.{i}.weight"] = rnd(rows, kv, std=0.5)
            sd[f"transformer.h.{i}.attn.ve_gate.weight"] = rnd(N_KV_HEAD, channels)
    if era == "value_embeds":
        return sd
    sd["smear_gate.weight"] = rnd(1, 24)
    sd["smear_lambda"] = 0.5 + rnd(1, std=0.1)
    sd["backout_lambda"] = 0.2 + rnd(1, std=0.05)
    return sd


def era_model_config(era: str, sequence_len: int = 32) -> dict:
    cfg = dict(
        sequence_len=sequence_len,
        vocab_size=VOCAB,
        n_layer=N_LAYER,
        n_head=N_HEAD,
        n_kv_head=N_KV_HEAD,
        n_embd=N_EMBD,
    )
    if era != "classic":
        cfg["window_pattern"] = "SL"
    return cfg


def rms(x: torch.Tensor) -> torch.Tensor:
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + torch.finfo(x.dtype).eps)


def rotate(x: torch.Tensor, base: float) -> torch.Tensor:
    """x (B, T, H, D): pair channel j with j + D/2 and turn the pair by -pos * base^(-2j/D)."""
    T, D = x.size(1), x.size(-1)
    freq = base ** (-torch.arange(0, D, 2, dtype=torch.float32) / D)
    angle = torch.arange(T, dtype=torch.float32)[:, None] * freq[None, :]  # (T, D/2)
    c, s = angle.cos()[None, :, None, :], angle.sin()[None, :, None, :]
    a, b = x[..., : D // 2], x[..., D // 2 :]
    return torch.cat([a * c + b * s, -a * s + b * c], dim=-1)


def reference_logits(sd: dict, era: str, idx: torch.Tensor, sequence_len: int, softcap=15.0):
    """The era's forward pass from its formulas, with explicit softmax attention."""
    late = era == "smear_backout"
    base, qk = (100000.0, 1.2) if late else (10000.0, 1.0)
    short = math.ceil(sequence_len / 4 / 128) * 128 if late else sequence_len // 2
    B, T = idx.shape
    x = rms(sd["transformer.wte.weight"][idx])
    if late:
        gate = sd["smear_lambda"] * torch.sigmoid(x[:, 1:, :24] @ sd["smear_gate.weight"].T)
        x = torch.cat([x[:, :1], x[:, 1:] + gate * x[:, :-1]], dim=1)
    x0 = x
    pos = torch.arange(T)
    x_mid = None
    for i in range(N_LAYER):
        p = f"transformer.h.{i}."
        if era != "classic":
            x = sd["resid_lambdas"][i] * x + sd["x0_lambdas"][i] * x0
        h = rms(x)
        q = (h @ sd[p + "attn.c_q.weight"].T).view(B, T, N_HEAD, HS)
        k = (h @ sd[p + "attn.c_k.weight"].T).view(B, T, N_KV_HEAD, HS)
        v = (h @ sd[p + "attn.c_v.weight"].T).view(B, T, N_KV_HEAD, HS)
        if f"value_embeds.{i}.weight" in sd:
            w = sd[p + "attn.ve_gate.weight"]
            scale = 3.0 if w.shape[1] == 12 else 2.0
            gate = scale * torch.sigmoid(h[..., : w.shape[1]] @ w.T)  # (B, T, nkv)
            v = v + gate[..., None] * sd[f"value_embeds.{i}.weight"][idx].view(B, T, N_KV_HEAD, HS)
        q, k = rms(rotate(q, base)) * qk, rms(rotate(k, base)) * qk
        rep = N_HEAD // N_KV_HEAD
        k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(HS)
        allowed = pos[None, :] <= pos[:, None]
        is_short = era != "classic" and i != N_LAYER - 1 and i % 2 == 0  # pattern "SL"
        if is_short:
            allowed &= pos[:, None] - pos[None, :] <= short
        scores = scores.masked_fill(~allowed, float("-inf"))
        y = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(B, T, N_EMBD)
        x = x + y @ sd[p + "attn.c_proj.weight"].T
        hidden = torch.relu(rms(x) @ sd[p + "mlp.c_fc.weight"].T) ** 2
        x = x + hidden @ sd[p + "mlp.c_proj.weight"].T
        if late and i == N_LAYER // 2:
            x_mid = x
    if late:
        x = x - sd["backout_lambda"] * x_mid
    logits = (rms(x) @ sd["lm_head.weight"].T)[..., :VOCAB]
    return softcap * torch.tanh(logits / softcap)


def load(era: str, sequence_len: int = 32, **model_config):
    sd = era_state_dict(era)
    cfg = {**era_model_config(era, sequence_len), **model_config}
    config = nanochat_config_from_checkpoint(cfg, sd, f"{era}.pt")
    model = build_model(config)
    model.load_state_dict(sd, strict=True)
    return model, sd


@pytest.mark.parametrize("era", ERAS)
def test_era_logits_match_reference(era: str) -> None:
    model, sd = load(era)
    idx = torch.randint(0, VOCAB, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, _ = model(idx)
    assert logits.shape == (2, 32, VOCAB)  # padded rows sliced off
    ref = reference_logits(sd, era, idx, 32)
    torch.testing.assert_close(logits, ref, atol=1e-4, rtol=1e-4)


def test_late_era_quarter_window_on_a_long_context() -> None:
    # sequence_len 512 gives S layers 128 tokens back; 160 tokens make the window bite.
    model, sd = load("smear_backout", sequence_len=512)
    assert model.config.short_window == 128
    idx = torch.randint(0, VOCAB, (1, 160), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits, _ = model(idx)
    torch.testing.assert_close(
        logits, reference_logits(sd, "smear_backout", idx, 512), atol=1e-4, rtol=1e-4
    )


def test_detected_fields_and_era_names() -> None:
    configs = {era: load(era)[0].config for era in ERAS}
    classic = configs["classic"]
    assert era_name(classic).startswith("classic")
    assert (classic.padded_vocab_size, classic.window_pattern, classic.rope_base) == (0, "L", 1e4)
    assert configs["lambdas"].resid_x0_lambdas and configs["lambdas"].padded_vocab_size == 64
    ve = configs["value_embeds"]
    assert (ve.ve_gate_channels, ve.ve_gate_scale, ve.qk_scale) == (32, 2.0, 1.0)
    late = configs["smear_backout"]
    assert (late.ve_gate_channels, late.ve_gate_scale, late.qk_scale) == (12, 3.0, 1.2)
    assert late.smear and late.backout and late.rope_base == 1e5
    assert [era_name(c).split()[0] for c in configs.values()] == [
        "classic",
        "residual",
        "value",
        "smear/backout",
    ]


def test_classic_presets_unchanged() -> None:
    model = build_model(make_config("d20"), device="meta")
    assert sum(p.numel() for p in model.parameters()) == 477_102_080
    config = make_config("tiny", "nanochat")
    assert not (config.value_embeds or config.smear or config.backout or config.resid_x0_lambdas)
    assert config.layer_window(0) is None and config.table_rows == config.vocab_size


def test_model_config_wins_over_inference() -> None:
    # Upstream's softcap became 20 in March 2026 without a trace in the checkpoint.
    model, sd = load("smear_backout", softcap=20.0)
    assert model.config.softcap == 20.0
    idx = torch.randint(0, VOCAB, (1, 20), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits, _ = model(idx)
    ref = reference_logits(sd, "smear_backout", idx, 32, softcap=20.0)
    torch.testing.assert_close(logits, ref, atol=1e-4, rtol=1e-4)


def test_our_own_checkpoint_round_trips() -> None:
    config = make_config(
        "tiny",
        "nanochat",
        dict(value_embeds=True, smear=True, backout=True, resid_x0_lambdas=True, n_embd=48),
    )
    model = build_model(config)
    again = nanochat_config_from_checkpoint(config_to_dict(config), model.state_dict(), "ours")
    assert again == config


def test_unknown_keys_are_named() -> None:
    sd = era_state_dict("value_embeds")
    sd["bigram_embed.weight"] = torch.zeros(250, N_EMBD)
    sd["bigram_lambdas"] = torch.zeros(N_LAYER)
    with pytest.raises(ConfigError, match="bigram_embed.weight, bigram_lambdas") as err:
        nanochat_config_from_checkpoint(era_model_config("value_embeds"), sd, "x.pt")
    assert "x.pt" in str(err.value)


def test_unknown_config_key_and_gate_width_are_refused() -> None:
    with pytest.raises(ConfigError, match="frozen_embd"):
        nanochat_config_from_checkpoint(
            {**era_model_config("classic"), "frozen_embd": False}, era_state_dict("classic"), "a"
        )
    sd = era_state_dict("value_embeds")
    for key in [k for k in sd if k.endswith("ve_gate.weight")]:
        sd[key] = torch.zeros(N_KV_HEAD, 16)
    with pytest.raises(ConfigError, match="16 channels"):
        nanochat_config_from_checkpoint(era_model_config("value_embeds"), sd, "b")


def test_missing_and_misshapen_keys_are_named() -> None:
    sd = era_state_dict("lambdas")
    del sd["transformer.h.2.mlp.c_fc.weight"]
    with pytest.raises(ConfigError, match="missing.*transformer.h.2.mlp.c_fc.weight"):
        nanochat_config_from_checkpoint(era_model_config("lambdas"), sd, "c")
    sd = era_state_dict("lambdas")
    sd["x0_lambdas"] = torch.zeros(N_LAYER + 1)
    with pytest.raises(ConfigError, match=r"x0_lambdas \(5,\) \(expected \(4,\)\)"):
        nanochat_config_from_checkpoint(era_model_config("lambdas"), sd, "d")


@pytest.mark.parametrize("era", ERAS)
def test_kv_cached_decode_equals_full_recompute(era: str) -> None:
    model, _ = load(era)  # pattern "SL": S layers see 16 tokens back, 24 tokens slide them
    idx = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full, _ = model(idx)
        cache = model.make_kv_cache(batch_size=2)
        parts = [model(idx[:, :7], kv_cache=cache)[0], model(idx[:, 7:12], kv_cache=cache)[0]]
        parts += [model(idx[:, t : t + 1], kv_cache=cache)[0] for t in range(12, 24)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


def test_greedy_generation_same_with_and_without_cache() -> None:
    model, _ = load("smear_backout")
    prompt = torch.arange(28)[None, :]  # 28 + 8 tokens overflow the 32-token context once
    with_cache = generate(model, prompt, 8, temperature=0.0)
    without = generate(model, prompt, 8, temperature=0.0, use_kv_cache=False)
    assert torch.equal(with_cache, without)


def test_smear_refuses_a_foreign_cache() -> None:
    from gpt_tui.models.kv_cache import KVCache

    model, _ = load("smear_backout")
    cache = KVCache(N_LAYER, 1, N_KV_HEAD, HS, 32, "cpu", torch.float32)
    with pytest.raises(TypeError, match="make_kv_cache"):
        model(torch.tensor([[1, 2]]), kv_cache=cache)


def test_window_pattern_validation() -> None:
    with pytest.raises(ConfigError, match="window_pattern"):
        make_config("tiny", "nanochat", dict(window_pattern="SXL"))
    with pytest.raises(ConfigError, match="padded_vocab_size"):
        make_config("tiny", "nanochat", dict(padded_vocab_size=10))


@pytest.mark.parametrize("era", ["classic", "lambdas", "value-embeds", "autoresearch", "smear"])
def test_set_era_builds_what_that_eras_checkpoint_reads_back_as(era: str) -> None:
    """`--set era=NAME` gives the model whose keys the era detection reads back as the same
    settings: one flag for what took eleven `--set`s to match today's gpt.py."""
    from gpt_tui.io.nanochat_eras import infer_era_fields, split_model_config

    config = make_config("small", "nanochat", {"era": era, "n_layer": "4"})
    state = build_model(config, "meta").state_dict()
    model_config, _ = split_model_config(config)
    read = {**config_to_dict(make_config("small", "nanochat", {"n_layer": "4"}))}
    read |= infer_era_fields(model_config, state, "ckpt") | model_config
    assert read == config_to_dict(config)
    if era != "classic":
        assert era_name(config).startswith({"lambdas": "residual", "value-embeds": "value",
                                            "autoresearch": "autoresearch",
                                            "smear": "smear"}[era])  # fmt: skip


def test_set_era_latest_is_the_newest_and_a_field_given_too_wins() -> None:
    latest = make_config("tiny", "nanochat", {"era": "latest"})
    assert latest == make_config("tiny", "nanochat", {"era": "smear"})
    assert (latest.short_window, latest.padded_vocab_size, latest.qk_scale) == (128, 128, 1.2)
    mine = make_config("tiny", "nanochat", {"era": "latest", "qk_scale": "1.0"})
    assert mine.qk_scale == 1.0 and mine.smear
    wide = make_config("tiny", "nanochat", {"era": "lambdas", "vocab_size": "200"})
    assert wide.padded_vocab_size == 256  # padded from the vocabulary given


@pytest.mark.parametrize(
    ("family", "era", "message"),
    [("nanochat", "newest", "era='newest': one of classic, lambdas, value-embeds, autoresearch, "
      "smear, or latest (smear)"),
     ("nanogpt", "latest", "era='latest' is a nanochat setting: add --arch nanochat")],
)  # fmt: skip
def test_an_unknown_era_or_one_for_nanogpt_is_one_line(family: str, era: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        make_config("tiny", family, {"era": era})
    assert str(err.value) == message
