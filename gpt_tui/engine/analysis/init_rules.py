"""How a model's parameters were initialised, and what changes between training and inference.

`init_rows` gives each parameter its standard deviation now and the rule of its family's
init that set it: nanoGPT draws N(0, 0.02) and its residual projections (`c_proj`)
N(0, 0.02/√(2·n_layer)); nanochat draws embeddings N(0, 1), every other Linear
N(0, 1/√fan_in · min(1, √(fan_out/fan_in))), and zeroes the head and the output projections.
A model from the user's own file (--model-file) has its own init code, which gpt-tui does
not read: its rules are "unknown", even when its family is nanoGPT's or nanochat's.
`mode_facts` says whether the model is in train or eval mode, where dropout sits and with
what probability, and what eval mode turns off. `break_example` names a line of the model's
own code worth a breakpoint (its attention kernel call). Plain rows, for `gpt-tui init`,
the Params tab and the Train tab.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..core.frames import model_files
from ..core.line_breakpoints import break_examples
from ..core.model_access import user_model_source

NANOGPT_STD = 0.02


@dataclass(frozen=True)
class InitRow:
    """One parameter: its shape, its std and mean now, and what its family's init drew."""

    name: str
    shape: tuple[int, ...]
    std: float | None  # now (None on the meta device, or for one element)
    mean: float | None
    init: str  # what the init drew: "N(0, 0.0125)", "zeros", "ones", "constant 0.2"
    init_std: float  # the std that draw has (0 for a constant)
    rule: str  # why: "residual projection: 0.02/√(2·n_layer)"


@dataclass(frozen=True)
class ModeFacts:
    """Train vs inference for one model."""

    training: bool  # the model's mode flag as it stands
    dropout: tuple[tuple[str, float], ...]  # (module path or config field, p) where p > 0
    changes: tuple[str, ...]  # what switching to train mode would change

    @property
    def mode(self) -> str:
        return "train" if self.training else "eval"

    @property
    def dropout_on(self) -> bool:
        """Dropout actually drops values now: train mode and some p > 0."""
        return self.training and bool(self.dropout)

    def line(self, training: bool | None = None) -> str:
        """`eval mode · dropout off (p=0.1 in 9 places, on in train mode)` and the like;
        `training`: the mode a step runs in, when it is not the model's own flag."""
        training = self.training if training is None else training
        mode = "train" if training else "eval"
        if not self.dropout:
            return f"{mode} mode · no dropout (p=0): train and eval compute the same"
        ps = sorted({p for _, p in self.dropout})
        where = f"p={'/'.join(f'{p:g}' for p in ps)} in {len(self.dropout)} places"
        if training:
            return f"{mode} mode · dropout ON ({where})"
        return f"{mode} mode · dropout off ({where}; on in train mode)"


def _family_rule(family: str, name: str, module: nn.Module, p: torch.Tensor, n_layer: int):
    """(init, init_std, rule) for one parameter of a nanoGPT or nanochat model."""
    leaf = name.rsplit(".", 1)[-1]
    is_linear, is_embedding = isinstance(module, nn.Linear), isinstance(module, nn.Embedding)
    if family == "nanogpt":
        if name.endswith("c_proj.weight"):
            std = NANOGPT_STD / math.sqrt(2 * n_layer)
            return f"N(0, {std:.3g})", std, "residual projection: 0.02/√(2·n_layer)"
        if (is_linear or is_embedding) and leaf == "weight":
            return "N(0, 0.02)", NANOGPT_STD, "GPT-2: every Linear and Embedding"
        if leaf == "bias":
            return "zeros", 0.0, "biases start at zero"
        if leaf == "weight" and p.dim() == 1:
            return "ones", 0.0, "LayerNorm gain starts at one"
    if family == "nanochat":
        if name == "lm_head.weight":
            return "zeros", 0.0, "head zeroed: the first logits are uniform"
        if name.endswith(("attn.c_proj.weight", "mlp.c_proj.weight")):
            return "zeros", 0.0, "output zeroed: each block starts as identity"
        if is_embedding:
            return "N(0, 1)", 1.0, "embeddings N(0, 1)"
        if is_linear:
            fan_out, fan_in = p.shape
            std = 1.0 / math.sqrt(fan_in) * min(1.0, math.sqrt(fan_out / fan_in))
            return f"N(0, {std:.3g})", std, "1/√fan_in·min(1, √(fan_out/fan_in))"
        constants = {
            "resid_lambdas": "ones",
            "x0_lambdas": "zeros",
            "smear_lambda": "zeros",
            "backout_lambda": "constant 0.2",
        }
        if name in constants:
            return constants[name], 0.0, "a scalar per layer, at its neutral value"
    return "unknown", math.nan, "not a rule of the nanoGPT or nanochat init"


def _stats(p: torch.Tensor) -> tuple[float | None, float | None]:
    if p.device.type == "meta" or p.numel() < 2:
        return None, None
    with torch.no_grad():
        x = p.detach().float()
        return float(x.std()), float(x.mean())


def init_rows(model: nn.Module, family: str) -> list[InitRow]:
    """Every parameter (a tied one once, under its first name) with its init rule; a model
    from the user's own file gets "unknown": its code sets its init, not gpt-tui's rules."""
    source = user_model_source(model)
    config = getattr(model, "config", None)
    n_layer = int(getattr(config, "n_layer", 1) or 1)
    owners = {
        f"{path}.{leaf}" if path else leaf: module
        for path, module in model.named_modules()
        for leaf, _ in module.named_parameters(recurse=False)
    }
    rows = []
    for name, p in model.named_parameters():
        if source is None:
            init, init_std, rule = _family_rule(family, name, owners[name], p, n_layer)
        else:
            init, init_std, rule = "unknown", math.nan, f"set by {source.name}'s own code"
        std, mean = _stats(p)
        rows.append(InitRow(name, tuple(p.shape), std, mean, init, init_std, rule))
    return rows


def mode_facts(model: nn.Module) -> ModeFacts:
    """The mode flag, the dropout modules (and attention dropout kept as a float, as
    nanoGPT's `attn.dropout`), and what eval mode turns off."""
    dropout = []
    norms = []
    for path, module in model.named_modules():
        if isinstance(module, nn.Dropout):
            if module.p > 0:
                dropout.append((path, float(module.p)))
        elif isinstance(getattr(module, "dropout", None), float) and module.dropout > 0:
            dropout.append((f"{path}.dropout", float(module.dropout)))
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            norms.append(path)
    changes = []
    if dropout:
        changes.append("dropout: in train mode each place zeroes a share p of values")
    if norms:
        changes.append(f"batch norm ({len(norms)}): batch statistics instead of running ones")
    if not changes:
        changes.append("nothing in the forward: no dropout (p=0) and no batch norm")
    changes.append("a training step also records the graph for backward (inference does not)")
    return ModeFacts(model.training, tuple(dropout), tuple(changes))


def _own_files(model: nn.Module) -> tuple[str, ...]:
    """The model's source files, none of torch's own (a bare nn.Linear has no code of its own)."""
    torch_dir = Path(torch.__file__).resolve().parent
    return tuple(f for f in model_files(model) if not Path(f).is_relative_to(torch_dir))


def break_example(model: nn.Module) -> str:
    """`nanochat.py:185`: the model's attention kernel call (torch's or FlashAttention's),
    in its own file first, for the break-at box's example; `forward` without one."""
    return break_examples(_own_files(model))[0] or "forward"


@dataclass(frozen=True)
class ModelFacts:
    """What the app shows about a model once it is open: init rows, mode, a line to break at."""

    init: tuple[InitRow, ...]
    mode: ModeFacts
    break_example: str
    break_function: str = "forward"  # a function of the model's own code to break at


def model_facts(model: nn.Module, family: str) -> ModelFacts:
    at, function = break_examples(_own_files(model))
    rows = tuple(init_rows(model, family))
    return ModelFacts(rows, mode_facts(model), at or "forward", function or "forward")
