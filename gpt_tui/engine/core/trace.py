"""Frozen records the engine hands out: plain CPU data, never live tensors.

Everything a pane or a CLI table shows is one of these. `to_jsonable` turns any of them
(or lists / dicts of them) into JSON-ready Python values.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Phase = Literal["in", "out"]
# What a probe point is: modules found by structure, plus virtual points with no module.
ProbeKind = Literal[
    "embedding", "block", "attn", "mlp", "norm", "head", "leaf", "resid", "pattern", "model"
]


# What the moments of a tensor holding NaN or Inf are: said wherever such a row is shown.
FINITE_ONLY = "their mean, std, rms, min and max are over the finite values only"


@dataclass(frozen=True)
class TensorStats:
    """Statistics of one tensor, computed in fp32: the counts over all its elements, the
    moments and extremes over its finite ones (`FINITE_ONLY`)."""

    mean: float
    std: float
    rms: float
    min: float
    max: float
    abs_max: float
    zero_frac: float
    nan_count: int
    inf_count: int
    numel: int

    @property
    def finite(self) -> bool:
        return self.nan_count == 0 and self.inf_count == 0


@dataclass(frozen=True)
class ProbeRecord:
    """What one probe point saw in one forward pass."""

    name: str  # stable name: a module path or a virtual point (`transformer.h.3.resid_mid`)
    kind: ProbeKind
    phase: Phase  # "in" = the module's input (pre-hook), "out" = its output
    depth: int  # nesting depth of the module path (dots), for indentation
    shape: tuple[int, ...]
    dtype: str
    device: str
    stats: TensorStats
    order: int  # position in execution order within the pass
    # The name of an earlier "out" record of this very tensor, when there is one: a block's
    # output is also its `resid_post` and the next block's `resid_pre` (and input).
    same_as: str | None = None


@dataclass(frozen=True)
class StepEvent:
    """One stop-able moment of a stepped forward pass: a module's input or output."""

    index: int  # position among the events of the pass
    name: str  # module path (or `logits` for the model's output)
    kind: ProbeKind
    phase: Phase  # "in" = about to run (pre-hook), "out" = just returned
    depth: int
    shape: tuple[int, ...]
    dtype: str
    stats: TensorStats
    pattern: AttentionPattern | None = None  # an attention module's "out", when asked for


@dataclass(frozen=True)
class AttentionPattern:
    """Softmax attention weights of one layer, recomputed from the kernel's inputs."""

    layer: int
    name: str  # e.g. transformer.h.3.attn.pattern
    weights: np.ndarray  # (n_head, Tq, Tk) float32, rows sum to 1 where anything is visible
    n_kv_head: int
    causal: bool
    window: int | None
    max_abs_error: float  # max |W·V − y| against the kernel's own output
    mask: np.ndarray | None = None  # (Tq, Tk) bool, True = may attend


@dataclass(frozen=True)
class ParamRow:
    name: str
    shape: tuple[int, ...]
    numel: int
    dtype: str
    device: str
    requires_grad: bool
    tied_with: str | None  # the first name this tensor was seen under, when shared
    block: int | None  # index of the transformer block that owns it, if any
    nbytes: int


@dataclass(frozen=True)
class ModuleNode:
    """One node of the module tree."""

    path: str  # "" for the root
    name: str  # last path component (or the model class for the root)
    class_name: str
    kind: ProbeKind | None  # what the probes consider it, None if not probed
    depth: int
    params: int  # parameters under this module, shared tensors counted once
    children: tuple[str, ...] = field(default=())


def _jsonable_float(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)


def to_jsonable(obj: Any) -> Any:
    """Records, numpy arrays, tuples and floats into plain JSON values (inf/nan as strings)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return _jsonable_float(obj)
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    return obj
