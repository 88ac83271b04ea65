"""Building our model for a parsed checkpoint and loading its weights.

The model is built on the `meta` device (no storage), then each checkpoint tensor is
moved to the device and dtype and assigned in place (`load_state_dict(assign=True)`), so
there is never a randomly initialised copy beside the loaded one. On CPU in the
checkpoint's own dtype the weights stay memory-mapped from the file (copy-on-write).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ...models import build_model
from ...models.config import ModelConfig, NanoChatConfig, NanoGPTConfig
from ...models.progress import ProgressFn, report
from .reading import MASK_BUFFER, CheckpointError, Parsed, first_sentence


def _shape(t: Any) -> str:
    return "(" + ", ".join(str(int(s)) for s in t) + ")"


def _describe_config(config: ModelConfig) -> str:
    keys = ["n_layer", "n_head", "n_embd", "vocab_size"]
    keys += ["block_size"] if isinstance(config, NanoGPTConfig) else ["n_kv_head", "sequence_len"]
    return ", ".join(f"{k}={getattr(config, k)}" for k in keys)


def check_fit(
    state_dict: Mapping[str, torch.Tensor],
    expected: Mapping[str, tuple[int, ...]],
    source: str,
    config: ModelConfig,
) -> None:
    """Raise CheckpointError naming missing / unexpected / mis-shaped keys (first few, counts)."""
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [
        f"{k}: checkpoint {_shape(state_dict[k].shape)} vs model {_shape(expected[k])}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k])
    ]
    if not (missing or unexpected or misshaped):
        return

    def part(items: list[str], label: str) -> str:
        if not items:
            return f"0 {label}"
        shown = ", ".join(items[:3]) + (", ..." if len(items) > 3 else "")
        return f"{len(items)} {label} ({shown})"

    raise CheckpointError(
        f"{source} does not fit a {config.family} model with {_describe_config(config)}: "
        f"{part(missing, 'missing')}, {part(unexpected, 'unexpected')}, "
        f"{part(misshaped, 'mis-shaped')}"
    )


def _fill_meta_buffers(model: torch.nn.Module, config: ModelConfig, device: torch.device) -> None:
    """Non-persistent buffers are not in checkpoints; recompute the ones left on `meta`."""
    if device.type == "meta":
        return
    left = [name for name, b in model.named_buffers() if b.device.type == "meta"]
    if not left:
        return
    if isinstance(config, NanoChatConfig) and set(left) <= {"cos", "sin"}:
        from ...models.nanochat import rotary_tables

        tables = rotary_tables(config.sequence_len, config.head_dim, config.rope_base, device)
        for name, table in zip(("cos", "sin"), tables, strict=True):
            model.register_buffer(name, table.to(model.get_buffer(name).dtype), persistent=False)
        return
    # Buffers of a kind we cannot recompute here: take them from a model built for real.
    dtype = next(model.parameters()).dtype
    donor = build_model(config, device, dtype)
    donor_buffers = dict(donor.named_buffers())
    for name in left:
        owner, _, leaf = name.rpartition(".")
        module = model.get_submodule(owner) if owner else model
        module.register_buffer(leaf, donor_buffers[name], persistent=False)
    del donor


def _untie_check(p: Parsed, sd: dict[str, torch.Tensor]) -> None:
    """nanoGPT ties lm_head to wte: drop the head (loaded once, as wte) unless it differs."""
    head, wte = sd.pop("lm_head.weight", None), sd.get("transformer.wte.weight")
    if (
        head is not None
        and wte is not None
        and head.shape == wte.shape
        and head.data_ptr() != wte.data_ptr()
        and not torch.equal(head, wte)
    ):
        raise CheckpointError(
            f"{p.path.name}: lm_head.weight differs from transformer.wte.weight, but the "
            "nanogpt family ties them; an untied head is not supported"
        )


def build_and_load(
    p: Parsed,
    device: torch.device | str,
    dtype: torch.dtype,
    progress: ProgressFn | None = None,
) -> torch.nn.Module:
    """Our model for `p.config` with `p.state_dict` loaded (consumed), in eval mode."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise CheckpointError(
            f"unknown device {device!r}: use cpu, cuda, cuda:N, mps or meta"
        ) from None
    model = build_model(p.config, "meta", dtype, progress=progress)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    sd = p.state_dict
    if p.family == "nanogpt":
        for k in [k for k in sd if MASK_BUFFER.search(k) and k not in expected]:
            del sd[k]
        expected.pop("lm_head.weight", None)
        _untie_check(p, sd)
    check_fit(sd, expected, p.path.name, p.config)
    loaded: dict[str, torch.Tensor] = {}
    total, done = sum(t.nbytes for t in sd.values()), 0
    report(progress, "moving to device", 0, total, "bytes")
    try:
        for key in list(sd):
            t = sd.pop(key)
            loaded[key] = t.to(device=dev, dtype=dtype if t.is_floating_point() else None)
            done += t.nbytes
            report(progress, "moving to device", done, total, "bytes")
        model.load_state_dict(loaded, strict=p.family != "nanogpt", assign=True)
    except (torch.OutOfMemoryError, MemoryError):
        raise CheckpointError(
            f"out of memory loading {p.path.name} on {dev}: try --dtype bfloat16 or --device cpu"
        ) from None
    except (RuntimeError, AssertionError) as e:  # e.g. a device this torch build lacks
        raise CheckpointError(f"cannot put {p.path.name} on {dev}: {first_sentence(e)}") from None
    del loaded
    if p.family == "nanogpt":
        model.lm_head.weight = model.transformer.wte.weight
    _fill_meta_buffers(model, p.config, dev)
    model.eval()
    return model
