"""A user's own model file (their nanoGPT `model.py`, nanochat `gpt.py`, or anything alike),
imported as it is and built from a checkpoint.

Debugging *their* code is the point, so nothing here edits or patches it: we import the
file, find the model class and its config dataclass, build it from the checkpoint's
`model_args` (nanoGPT) / `model_config` (nanochat), and load the weights strictly.
Every failure is a `ModelFileError` of one line naming the file (and line, when the
file's own code failed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn as nn

from ..models.config import ConfigError
from .checkpoints import LoadedCheckpoint, read_raw_checkpoint
from .checkpoints.raw import RawCheckpoint
from .compute_dtype import NAME, ComputeDtypeHold, compute_dtype_of
from .nanochat_eras import fit_user_config
from .user_import import ModelFileError, captured_output, import_model_file, where

COMPILED_PREFIX = "_orig_mod."


@dataclass(frozen=True)
class ModelFile:
    """An imported model file and the two classes found in it."""

    path: Path
    module: ModuleType
    model_class: type[nn.Module]
    config_class: type


def _classes(module: ModuleType) -> list[type]:
    """Classes the file itself defines, in source order."""
    found = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj) and obj.__module__ == module.__name__
    ]
    return sorted(found, key=lambda c: inspect.getsourcelines(c)[1])


def _config_annotation(model_class: type, module: ModuleType) -> type | None:
    """The dataclass named by the annotation of __init__'s first parameter, if any."""
    params = list(inspect.signature(model_class.__init__).parameters.values())[1:]
    if not params:
        return None
    annotation = params[0].annotation
    if isinstance(annotation, str):
        annotation = vars(module).get(annotation.split(".")[-1])
    return annotation if dataclasses.is_dataclass(annotation) else None


def _takes_one_config(cls: type) -> bool:
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    required = [
        p
        for p in params
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return len(required) == 1


def _field_overlap(config_class: type, model_args: Mapping[str, Any]) -> int:
    return len({f.name for f in dataclasses.fields(config_class)} & set(model_args))


def find_model_class(
    module: ModuleType,
    name: str | None = None,
    config_name: str | None = None,
    model_args: Mapping[str, Any] | None = None,
) -> tuple[type[nn.Module], type]:
    """The model class and its config dataclass.

    By name when given; else `GPT` / `GPTConfig`; else the nn.Module built from one config
    whose dataclass fields overlap `model_args` most. Blocks and attention usually take
    the config too, so ties go to a forward() with `targets`, then to the class defined
    last (files define the parts before the whole).
    """
    where = getattr(module, "__file__", module.__name__)
    classes = _classes(module)
    modules = [c for c in classes if issubclass(c, nn.Module)]
    configs = [c for c in classes if dataclasses.is_dataclass(c)]
    by_name = {c.__name__: c for c in classes}
    args = model_args or {}
    if name is not None:
        if name not in by_name or not issubclass(by_name[name], nn.Module):
            listed = ", ".join(c.__name__ for c in modules) or "none"
            raise ModelFileError(f"{where}: no nn.Module class {name!r}; the file has: {listed}")
        model_class = by_name[name]
    elif "GPT" in by_name and issubclass(by_name["GPT"], nn.Module):
        model_class = by_name["GPT"]
    else:

        def score(cls: type) -> tuple[int, bool, int]:
            config = _config_annotation(cls, module)
            overlap = _field_overlap(config, args) if config else 0
            has_targets = "targets" in inspect.signature(cls.forward).parameters
            return overlap, has_targets, inspect.getsourcelines(cls)[1]

        candidates = [c for c in modules if _takes_one_config(c)]
        if not candidates:
            raise ModelFileError(
                f"{where}: no nn.Module class built from one config argument; "
                "name it with --model-class"
            )
        model_class = max(candidates, key=score)
    if config_name is not None:
        if config_name not in by_name or not dataclasses.is_dataclass(by_name[config_name]):
            listed = ", ".join(c.__name__ for c in configs) or "none"
            raise ModelFileError(
                f"{where}: no config dataclass {config_name!r}; the file has: {listed}"
            )
        return model_class, by_name[config_name]
    config_class = _config_annotation(model_class, module)
    if config_class is None and "GPTConfig" in by_name and model_class.__name__ == "GPT":
        config_class = by_name["GPTConfig"]
    if config_class is None and configs:
        config_class = max(configs, key=lambda c: _field_overlap(c, args))
    if config_class is None:
        raise ModelFileError(
            f"{where}: no config dataclass for {model_class.__name__}; name it with --config-class"
        )
    return model_class, config_class


def load_model_file(
    path: str | Path,
    *,
    model_class: str | None = None,
    config_class: str | None = None,
    model_args: Mapping[str, Any] | None = None,
) -> ModelFile:
    """Import the file and find its model and config classes (see find_model_class)."""
    module = import_model_file(path)
    model_cls, config_cls = find_model_class(module, model_class, config_class, model_args)
    return ModelFile(Path(module.__file__), module, model_cls, config_cls)


def make_user_config(config_class: type, model_args: Mapping[str, Any], source: str) -> Any:
    """The config dataclass from the checkpoint's arguments; a key it lacks is an error."""
    fields = {f.name: f for f in dataclasses.fields(config_class) if f.init}
    unknown = sorted(set(model_args) - set(fields))
    if unknown:
        raise ModelFileError(
            f"{source}: checkpoint arguments {', '.join(unknown)} are not fields of "
            f"{config_class.__name__} ({', '.join(fields)}); is this the file it was trained with?"
        )
    missing = [
        n
        for n, f in fields.items()
        if n not in model_args
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ModelFileError(
            f"{source}: {config_class.__name__} needs {', '.join(missing)}, "
            "which the checkpoint does not record"
        )
    return config_class(**model_args)


def unwrap_compiled(model: nn.Module) -> nn.Module:
    """The plain module inside a torch.compile wrapper: hooks on the wrapper never fire."""
    while isinstance(getattr(model, "_orig_mod", None), nn.Module):
        model = model._orig_mod
    return model


def strip_compiled_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix(COMPILED_PREFIX): v for k, v in state_dict.items()}


def _is_mask_buffer(model: nn.Module, key: str, tensor: torch.Tensor) -> bool:
    """nanoGPT saves its causal mask `attn.bias` (1, 1, T, T) only where flash is missing."""
    owner, _, leaf = key.rpartition(".")
    try:
        module = model.get_submodule(owner)
    except AttributeError:
        return False
    return leaf == "bias" and tensor.dim() == 4 and not isinstance(module, nn.Linear)


def load_user_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str):
    """Load strictly, except buffers the model rebuilds itself; list the keys on mismatch."""
    state = strip_compiled_prefix(state_dict)
    expected = model.state_dict()
    params = {name for name, _ in model.named_parameters()}
    missing = sorted(k for k in expected if k not in state and k in params)
    unexpected = sorted(
        k for k in state if k not in expected and not _is_mask_buffer(model, k, state[k])
    )
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:6])}" + (" ..." if len(missing) > 6 else ""))
    if unexpected:
        problems.append(
            f"unexpected {', '.join(unexpected[:6])}" + (" ..." if len(unexpected) > 6 else "")
        )
    if wrong:
        problems.append(f"shapes (checkpoint vs model) {', '.join(wrong[:4])}")
    if problems:
        raise ModelFileError(f"{source}: weights do not fit the model: {'; '.join(problems)}")
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)


def _to_dtype(model: nn.Module, dtype: torch.dtype) -> list[str]:
    """Move the parameters to `dtype`; floating buffers keep the dtype the file built them
    in when it differs (nanochat asserts its rotary cos/sin are in its own compute dtype:
    bfloat16 before March 2026, float32 on CPU since). Returns the names of those kept."""
    kept = {
        name: b for name, b in model.named_buffers() if b.is_floating_point() and b.dtype != dtype
    }
    model.to(dtype=dtype)
    for name, b in kept.items():
        owner, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(owner) if owner else model, leaf, b)
    return list(kept)


def build_user_model(
    path: str | Path,
    model_args: Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    model_class: str | None = None,
    config_class: str | None = None,
    notes: list[str] | None = None,
    found: ModelFile | None = None,
) -> nn.Module:
    """Import the file (unless `found` is it, imported), build its model from `model_args`,
    load the weights, eval(). What the build had to decide (buffers kept in the file's own
    dtype) goes to `notes`."""
    if found is None:
        found = load_model_file(
            path, model_class=model_class, config_class=config_class, model_args=model_args
        )
    source = str(found.path)
    config = make_user_config(found.config_class, model_args, source)
    try:
        with torch.device(device):
            model = found.model_class(config)
    except (Exception, SystemExit) as e:  # a sys.exit() in the file is its failure too
        raise ModelFileError(
            f"{where(found.path, e)}: building {found.model_class.__name__} failed: "
            f"{type(e).__name__}: {e}"
        ) from None
    model = unwrap_compiled(model)
    load_user_weights(model, state_dict, source)
    own = compute_dtype_of(model)
    if own is not None and own != dtype and dtype.is_floating_point:
        # a file that computes in its module's COMPUTE_DTYPE (nanochat's) computes in
        # `dtype` here, rotary tables and all: held for each pass of this model
        model.to(dtype=dtype)
        ComputeDtypeHold(model, dtype)
        if notes is not None:
            name = str(dtype).removeprefix("torch.")
            notes.append(f"{found.path.name} computes in {name} here: its {NAME} is "
                         f"{name} in each of this model's passes, as NANOCHAT_DTYPE={name} "
                         "would set it")  # fmt: skip
        return model.eval()
    kept = _to_dtype(model, dtype)
    if kept and notes is not None:
        dtypes = sorted({str(model.get_buffer(n).dtype).removeprefix("torch.") for n in kept})
        notes.append(
            f"buffers {', '.join(kept[:4])} stay in {', '.join(dtypes)} as {found.path.name} "
            f"builds them; the weights are in {str(dtype).removeprefix('torch.')}"
        )
    return model.eval()


def _nanochat_args(raw: RawCheckpoint, found: ModelFile, notes: list[str]) -> dict[str, Any]:
    """A nanochat checkpoint's settings for the file's config class: ours that it has no
    field for are left out, with a note, when they are what nanochat's code does anyway."""
    config = found.config_class
    try:
        args, left = fit_user_config(raw.model_args, config, raw.state_dict, found.path.name)
    except ConfigError as e:
        raise ModelFileError(str(e)) from None
    if left:
        notes.append(
            f"gpt-tui settings {', '.join(left)} left out: {config.__name__} has no such "
            "fields, and nanochat's code of these weights' era does the same"
        )
    return args


def _logits_of(output: Any) -> torch.Tensor:
    """The logits in whatever forward returned: a tensor, (logits, loss), or `.logits`."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor) and item.dim() == 3:
                return item
    if isinstance(getattr(output, "logits", None), torch.Tensor):
        return output.logits
    raise ModelFileError(f"forward returned {type(output).__name__}; expected logits (B, T, V)")


@torch.no_grad()
def user_forward(model: nn.Module, idx: torch.Tensor, all_positions: bool = True) -> torch.Tensor:
    """Logits (B, T, V) from the user's forward; (B, 1, V) if `all_positions` is False.

    nanoGPT's forward without targets computes only the last position (B, 1, V), a saving
    for generation. For per-position logits we call it again with dummy targets, which
    makes nanoGPT compute every position (and a loss we ignore): the file stays as it is
    and the logits are its own, at the price of a second pass on such models. Generation
    only needs the last position, so it passes `all_positions=False` and pays nothing.
    """
    logits = _logits_of(model(idx))
    if not all_positions:
        return logits[:, -1:]
    if logits.size(1) == idx.size(1):
        return logits
    if "targets" not in inspect.signature(model.forward).parameters:
        raise ModelFileError(
            f"{type(model).__name__}.forward returned {logits.size(1)} of {idx.size(1)} "
            "positions and takes no targets to ask for all of them"
        )
    logits = _logits_of(model(idx, targets=torch.zeros_like(idx)))
    if logits.size(1) != idx.size(1):
        raise ModelFileError(
            f"{type(model).__name__}.forward returned {logits.size(1)} of {idx.size(1)} "
            "positions even with targets"
        )
    return logits


def flash_switches(model: nn.Module) -> list[str]:
    """Paths of modules with nanoGPT's boolean `flash` attribute (True = SDPA kernel)."""
    return [n for n, m in model.named_modules() if isinstance(getattr(m, "flash", None), bool)]


def use_manual_attention(model: nn.Module, block_size: int | None = None) -> int:
    """Turn nanoGPT's `flash` switches off, so attention runs its manual softmax path.

    That path needs the causal mask buffer `bias` (1, 1, T, T), which nanoGPT registers
    only when it starts without flash; it is added here (not saved with the weights).
    Returns the number of modules switched.
    """
    size = block_size or getattr(getattr(model, "config", None), "block_size", None)
    switched = 0
    for name in flash_switches(model):
        module = model.get_submodule(name)
        if not hasattr(module, "bias") or module.bias is None:
            if size is None:
                raise ModelFileError(f"{name}: no block_size known to build the causal mask")
            device = next(model.parameters()).device
            mask = torch.tril(torch.ones(size, size, device=device)).view(1, 1, size, size)
            module.register_buffer("bias", mask, persistent=False)
        module.flash = False
        switched += 1
    return switched


def attention_kernel_report(model: nn.Module, module: ModuleType) -> str:
    """One line: which attention kernel the file uses and whether patterns are capturable.

    SDPA calls are seen by the engine's interception and a manual softmax by its hooks;
    FlashAttention's own functions (flash_attn_func, FA3 kernels) are invisible to both.
    """
    # The file itself and every file its modules' classes come from (sibling imports).
    sources = {inspect.getsource(module)}
    for sub in model.modules():
        cls_module = inspect.getmodule(type(sub))
        if cls_module is not None and not cls_module.__name__.startswith("torch"):
            try:
                sources.add(inspect.getsource(cls_module))
            except (OSError, TypeError):  # built without a source file
                continue
    package = module.__name__.rpartition(".")[0]
    if package:  # the package's other modules, e.g. nanochat's flash_attention.py
        for name, sub_module in list(sys.modules.items()):
            if name.startswith(package + ".") and sub_module is not None:
                with contextlib.suppress(OSError, TypeError):
                    sources.add(inspect.getsource(sub_module))
    source = "\n".join(sources)
    uses_flash_attn = "flash_attn" in source
    uses_sdpa = "scaled_dot_product_attention" in source
    uses_softmax = "softmax" in source
    switches = flash_switches(model)
    parts = []
    fallback = uses_sdpa and not switches  # e.g. nanochat's flash_attention.py on CPU
    if uses_flash_attn and fallback:
        parts.append(
            "FlashAttention functions with a fallback: patterns captured where the fallback "
            "runs (CPU, or no FlashAttention installed)"
        )
    elif uses_flash_attn:
        parts.append("FlashAttention functions: patterns not capturable by SDPA interception")
    if uses_sdpa:
        parts.append("SDPA: patterns captured at the kernel call")
    if uses_softmax and not uses_sdpa:
        parts.append("manual softmax: patterns captured")
    if switches:
        parts.append(
            f"`flash` switch on {len(switches)} modules: off selects the manual softmax path "
            "(use_manual_attention)"
        )
    elif uses_flash_attn and not fallback:
        parts.append("no fallback switch in this file")
    return "; ".join(parts) or "attention kernel not recognised: patterns may not be capturable"


def check_forward(model: nn.Module, path: Path, dtype: torch.dtype) -> None:
    """Run two tokens through the model once, so a file that cannot run as loaded (a dtype
    its own asserts refuse, a missing kernel) fails here in one line, not mid-session."""
    device = next(model.parameters()).device
    if device.type == "meta":
        return
    idx = torch.zeros((1, 2), dtype=torch.long, device=device)
    try:
        with torch.no_grad():
            model(idx)
    except (Exception, SystemExit) as e:
        hint = "; try --dtype float32" if dtype != torch.float32 else ""
        detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelFileError(
            f"{where(path, e)}: {type(model).__name__} cannot run as loaded "
            f"({str(dtype).removeprefix('torch.')} on {device}): {type(e).__name__}: "
            f"{detail}{hint}"
        ) from None


def load_user_checkpoint(
    model_file: str | Path,
    checkpoint: str | Path,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    model_class: str | None = None,
    config_class: str | None = None,
    meta_path: str | Path | None = None,
    tokenizer: str | Path | None = None,
) -> LoadedCheckpoint:
    """The user's own model class, built from the checkpoint's recorded arguments, weights
    loaded: what `--model-file PATH --checkpoint CKPT` opens. What the file prints while
    it is imported and built becomes `info["notes"]`, never output of ours."""
    raw = read_raw_checkpoint(checkpoint, meta_path, tokenizer)
    notes: list[str] = []
    with captured_output(notes, Path(model_file).name):
        found = load_model_file(
            model_file,
            model_class=model_class,
            config_class=config_class,
            model_args=raw.model_args,
        )
        args = _nanochat_args(raw, found, notes) if raw.nanochat else raw.model_args
        model = build_user_model(
            model_file,
            args,
            raw.state_dict,
            device,
            dtype,
            notes=notes,
            found=found,
        )
        check_forward(model, found.path, dtype)
    # nanochat files name their head/embedding like nanoGPT; their blocks carry c_q/c_k/c_v.
    family = "nanochat" if any(".attn.c_q." in k for k in raw.state_dict) else "nanogpt"
    kernel = attention_kernel_report(model, found.module)
    info = {
        **raw.info,
        "model_file": str(found.path),
        "model_class": found.model_class.__name__,
        "attention_kernel": kernel,
        "notes": notes,
    }
    if "not capturable" in kernel:
        if flash_switches(model):
            # The file's own switch selects its manual-softmax path, which the engine sees.
            switched = use_manual_attention(model)
            info["note"] = (
                f"attention: FlashAttention kernels hide the weights; switched {switched} "
                "modules to the file's manual softmax path (flash=False) to capture patterns"
            )
        else:
            info["note"] = "attention: " + kernel
    return LoadedCheckpoint(
        model=model,
        config=getattr(model, "config", None),
        family=family,
        tokenizer=raw.tokenizer,
        format="model-file",
        path=raw.path,
        info=info,
    )
