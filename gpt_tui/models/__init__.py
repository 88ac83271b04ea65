"""The two GPT families and how to build one on a device."""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

from . import nanochat, nanogpt
from .config import PRESETS, ConfigError, ModelConfig, make_config
from .nanochat import NanoChatConfig
from .nanogpt import NanoGPTConfig
from .progress import OpenProgress, ProgressFn, report

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def model_class(config: ModelConfig) -> type[torch.nn.Module]:
    return nanogpt.GPT if isinstance(config, NanoGPTConfig) else nanochat.GPT


def build_model(
    config: ModelConfig,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int | None = 0,
    progress: ProgressFn | None = None,
) -> torch.nn.Module:
    """Build a model on `device` with one copy of its weights and report the phases.

    The module tree is built on `meta` (no storage), given uninitialised storage on the
    device (`to_empty`) and initialised in place, module by module, drawing random numbers
    in the order construction would: the weights equal a model built directly on the
    device with the same seed.
    """
    if seed is not None:
        torch.manual_seed(seed)
    report(progress, "building", 0, 1, "steps")
    with torch.device("meta"), _SkipInit():
        model = model_class(config)(config)
    report(progress, "building", 1, 1, "steps")
    if torch.device(device).type != "meta":
        _to_empty_keeping_ties(model, device)
        _initialise(model, progress)
    model.to(dtype=dtype)
    model.eval()
    return model


class _SkipInit(TorchFunctionMode):
    """Random inits do nothing while the tree is built on `meta` (there is nothing to fill,
    and torch's meta `normal_` imports torch._dynamo: ~70 MB and a second of start-up)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RANDOM_INITS:
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


_RANDOM_INITS = frozenset(
    {torch.Tensor.normal_, torch.Tensor.uniform_}
    | {torch.nn.init.normal_, torch.nn.init.uniform_, torch.nn.init.kaiming_uniform_}
    | {torch.nn.init.trunc_normal_, torch.nn.init.xavier_uniform_}
)


def _to_empty_keeping_ties(model: torch.nn.Module, device: torch.device | str) -> None:
    """`to_empty` gives every module its own storage; shared parameters are shared again."""
    places: dict[int, list[tuple[torch.nn.Module, str]]] = {}
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            places.setdefault(id(p), []).append((module, name))
    model.to_empty(device=device)
    for (first, first_name), *others in places.values():
        for module, name in others:
            setattr(module, name, getattr(first, first_name))


def _initialise(model: torch.nn.Module, progress: ProgressFn | None) -> None:
    """Default inits in construction order, then the family's constants and init."""
    total = sum(p.numel() for p in model.parameters())
    done, seen = 0, set()
    report(progress, "initialising", 0, total, "parameters")
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            own = [p for p in module.parameters(recurse=False) if id(p) not in seen]
            seen.update(id(p) for p in own)
            if own:
                done += sum(p.numel() for p in own)
                report(progress, "initialising", done, total, "parameters")
        _init_constants(model)
        model.init_weights()


def _init_constants(model: torch.nn.Module) -> None:
    """What construction sets without random numbers (the model files stay as upstream's)."""
    for module in model.modules():
        if isinstance(module, nanogpt.LayerNorm):
            torch.nn.init.ones_(module.weight)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
    if not isinstance(model, nanochat.GPT):
        return
    config = model.config
    cos, sin = nanochat.rotary_tables(
        config.sequence_len, config.head_dim, config.rope_base, model.cos.device
    )
    model.cos.copy_(cos)
    model.sin.copy_(sin)
    if config.resid_x0_lambdas:
        torch.nn.init.ones_(model.resid_lambdas)
        torch.nn.init.zeros_(model.x0_lambdas)
    if config.smear:
        torch.nn.init.zeros_(model.smear_lambda)
    if config.backout:
        torch.nn.init.constant_(model.backout_lambda, nanochat.BACKOUT_INIT)


__all__ = [
    "DTYPES",
    "PRESETS",
    "ConfigError",
    "ModelConfig",
    "NanoChatConfig",
    "NanoGPTConfig",
    "OpenProgress",
    "ProgressFn",
    "build_model",
    "make_config",
    "model_class",
]
