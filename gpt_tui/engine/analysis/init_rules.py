"""How a model's parameters were initialised, and what changes between training and inference.

`init_rows` gives each parameter its standard deviation now and the rule of its family's
init that set it: nanoGPT draws N(0, 0.02) and its residual projections (`c_proj`)
N(0, 0.02/√(2·n_layer)); nanochat draws embeddings N(0, 1), every other Linear
N(0, 1/√fan_in · min(1, √(fan_out/fan_in))), and zeroes the head and the output projections
(its October 2025 init, kept for every era before smear/backout). From the smear/backout era
(2026-03-14) on, nanochat draws wte N(0, 0.8), lm_head N(0, 0.001), q/k/v and value
embeddings uniform with std 1/√n_embd, c_fc at 0.4x that, gates U(0, 0.02), and ramps
resid_lambdas 1.15 → 1.05 and x0_lambdas 0.20 → 0.05 from layer 0 to the last.
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

from ...models.nanochat import (
    BACKOUT_INIT,
    C_FC_INIT_SCALE,
    GATE_INIT_HIGH,
    HEAD_INIT_STD,
    RESID_LAMBDA_RAMP,
    WTE_INIT_STD,
    X0_LAMBDA_RAMP,
    NanoChatConfig,
    layer_ramp,
)
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


Rule = tuple[str, float, str]  # (init, init_std, rule)
UNIFORM_01 = 12**-0.5  # the std of U(0, 1); U(a, b) has (b - a) times it


def _family_rule(
    family: str, name: str, module: nn.Module, p: torch.Tensor, config: object
) -> Rule:
    """(init, init_std, rule) for one parameter of a nanoGPT or nanochat model."""
    leaf = name.rsplit(".", 1)[-1]
    is_linear, is_embedding = isinstance(module, nn.Linear), isinstance(module, nn.Embedding)
    if family == "nanogpt":
        n_layer = int(getattr(config, "n_layer", 1) or 1)
        if name.endswith("c_proj.weight"):
            std = NANOGPT_STD / math.sqrt(2 * n_layer)
            return f"N(0, {std:.3g})", std, "residual projection: 0.02/√(2·n_layer)"
        if (is_linear or is_embedding) and leaf == "weight":
            return "N(0, 0.02)", NANOGPT_STD, "GPT-2: every Linear and Embedding"
        if leaf == "bias":
            return "zeros", 0.0, "biases start at zero"
        if leaf == "weight" and p.dim() == 1:
            return "ones", 0.0, "LayerNorm gain starts at one"
    if family == "nanochat" and getattr(config, "smear_era_init", False):
        return _smear_era_rule(name, config)
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


def _smear_era_rule(name: str, config: NanoChatConfig) -> Rule:
    """nanochat's init_weights from the smear/backout era (2026-03-14) on."""
    std = config.n_embd**-0.5
    bound = 3**0.5 * std
    gate = GATE_INIT_HIGH * UNIFORM_01
    if name == "lm_head.weight":
        return (
            f"N(0, {HEAD_INIT_STD:g})",
            HEAD_INIT_STD,
            "head small: the first logits are near uniform",
        )
    if name.endswith(("attn.c_proj.weight", "mlp.c_proj.weight")):
        return "zeros", 0.0, "output zeroed: each block starts as identity"
    if name == "transformer.wte.weight":
        return f"N(0, {WTE_INIT_STD:g})", WTE_INIT_STD, f"token embedding N(0, {WTE_INIT_STD:g})"
    if name.endswith("mlp.c_fc.weight"):
        k = C_FC_INIT_SCALE
        return f"U(±{k * bound:.3g})", k * std, f"uniform, std {k:g}/√n_embd = {k * std:.3g}"
    if name.endswith(("attn.c_q.weight", "attn.c_k.weight", "attn.c_v.weight")):
        return f"U(±{bound:.3g})", std, f"uniform, std 1/√n_embd = {std:.3g}"
    if name.startswith("value_embeds."):
        return f"U(±{bound:.3g})", std, f"uniform like c_v, std {std:.3g}"
    if name.endswith(("ve_gate.weight", "smear_gate.weight")):
        return f"U(0, {GATE_INIT_HIGH:g})", gate, f"gate a little above neutral, std {gate:.2g}"
    ramps = {"resid_lambdas": RESID_LAMBDA_RAMP, "x0_lambdas": X0_LAMBDA_RAMP}
    if name in ramps:
        first, last = ramps[name]
        values = layer_ramp(first, last, config.n_layer)
        spread = float(values.std()) if values.numel() > 1 else 0.0
        return f"{first:g} → {last:g}", spread, "per layer, linear from layer 0 to the last"
    if name == "smear_lambda":
        return "zeros", 0.0, "smear off at the start"
    if name == "backout_lambda":
        return f"constant {BACKOUT_INIT:g}", 0.0, "backout at its start value"
    return "unknown", math.nan, "not a rule of nanochat's smear/backout-era init"


def rule_set(model: nn.Module, family: str) -> str:
    """Which init the rules are: the family's, and for nanochat the era's."""
    if user_model_source(model) is not None:
        return "the model file's own init (gpt-tui does not read it)"
    if family == "nanogpt":
        return "nanoGPT's init (GPT-2's)"
    if family != "nanochat":
        return "none known for this model"
    if getattr(getattr(model, "config", None), "smear_era_init", False):
        return "nanochat's init of the smear/backout era (2026-03-14 on)"
    return "nanochat's init of October 2025, kept for the eras before smear/backout"


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
    owners = {
        f"{path}.{leaf}" if path else leaf: module
        for path, module in model.named_modules()
        for leaf, _ in module.named_parameters(recurse=False)
    }
    rows = []
    for name, p in model.named_parameters():
        if source is None:
            init, init_std, rule = _family_rule(family, name, owners[name], p, config)
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
    """`nanochat.py:206`: the model's attention kernel call (torch's or FlashAttention's),
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
