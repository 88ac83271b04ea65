"""Probe points found by structure.

Discovery (`find_probe_points`) looks at the module tree and parameter shapes only, so it
works on any device including `meta` (a 1.5B model's points in a second, no forward):

- blocks: the children of the largest `nn.ModuleList` whose children share one class;
- inside a block, the branches added back to the residual stream: the MLP is the child
  holding a Linear from >= 2C back to the residual width C (the down projection after the
  4x expansion; C = the input width most of the block's Linears share); attention is a
  child with at least two Linears and no such contraction (q, k, v, output projections,
  fused or not) or an `nn.MultiheadAttention`. Names (`attn`, `attention`, `mlp`, `ffn`,
  `feed_forward`) only break ties;
- outside the blocks: `nn.Embedding`s, the final norm (a norm module after the blocks; a
  model like nanochat that normalises with a function has none), and the head (the Linear
  whose out_features is the vocabulary);
- virtual points with no module: `<block>.resid_pre` (the block's input),
  `<block>.resid_mid` (block input + attention output), `<block>.resid_post` (the block's
  output), `<block>.attn.pattern` (see attention.py) and `logits` (the model's output).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..core.model_access import find_block_list, unwrap_model
from ..core.trace import ProbeKind

MODEL_OUTPUT = "logits"  # name of the virtual point for the whole model's output
_ATTN_NAMES = ("attn", "attention")
_MLP_NAMES = ("mlp", "ffn", "feed_forward", "feedforward")
_NORM_TYPES: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.GroupNorm) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()
)


@dataclass(frozen=True, eq=False)
class ProbePoint:
    """A place where the probes look: a module, or a virtual point with no module."""

    name: str  # module path, or a virtual name (`transformer.h.3.resid_mid`, `logits`)
    kind: ProbeKind
    depth: int  # 0 for the model output; module paths: number of components
    layer: int | None = None  # the block index for points inside a block
    module: nn.Module | None = field(default=None, repr=False)

    @property
    def virtual(self) -> bool:
        return self.module is None


def _linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def _branch_kind(attr: str, module: nn.Module, width: int) -> ProbeKind | None:
    """attn / mlp / None for one child of a block of residual `width`, by shapes, then names."""
    linears = _linears(module)
    if any(lin.out_features == width and lin.in_features >= 2 * width for lin in linears):
        return "mlp"
    if any(isinstance(m, nn.MultiheadAttention) for m in module.modules()) or len(linears) >= 2:
        return "attn"
    label = f"{attr} {type(module).__name__}".lower()
    if linears and any(word in label for word in _ATTN_NAMES):
        return "attn"
    if linears and any(word in label for word in _MLP_NAMES):
        return "mlp"
    return None


def _block_branches(block: nn.Module) -> dict[str, ProbeKind]:
    """Child attribute name -> attn / mlp; if several look alike, the names decide."""
    # The residual width is the input width most of the block's Linears share (q, k, v, the
    # MLP's up projection, ...); GQA's narrow k/v projections must not look like an MLP.
    widths = Counter(lin.in_features for lin in _linears(block))
    width = widths.most_common(1)[0][0] if widths else 0
    kinds = {attr: _branch_kind(attr, child, width) for attr, child in block.named_children()}
    branches: dict[str, ProbeKind] = {}
    for kind, words in (("attn", _ATTN_NAMES), ("mlp", _MLP_NAMES)):
        found = [attr for attr, k in kinds.items() if k == kind]
        named = [a for a in found if any(w in a.lower() for w in words)]
        for attr in named or found:
            branches[attr] = kind
    return branches


def _is_attention_block(block: nn.Module) -> bool:
    """A block that is itself an attention layer: Linears, none of them an MLP expansion."""
    widths = Counter(lin.in_features for lin in _linears(block))
    width = widths.most_common(1)[0][0] if widths else 0
    return _branch_kind("", block, width) == "attn"


def _is_norm(module: nn.Module) -> bool:
    if isinstance(module, _NORM_TYPES):
        return True
    return "norm" in type(module).__name__.lower() and not _linears(module)


def _depth(name: str) -> int:
    return name.count(".") + 1 if name else 0


def find_probe_points(model: nn.Module, leaves: bool = False) -> list[ProbePoint]:
    """Every probe point of `model`, in module registration order, virtual points included.

    `leaves=True` adds every module without children (Linear, norms, activations, ...)
    that is not already a point.
    """
    model = unwrap_model(model)
    found = find_block_list(model)
    blocks_path, blocks = found if found is not None else ("", nn.ModuleList())
    block_ids = {id(b): i for i, b in enumerate(blocks)}
    in_blocks = f"{blocks_path}." if found is not None else None
    embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    vocab = max((e.num_embeddings for e in embeddings), default=None)

    outside: list[tuple[str, nn.Module]] = [
        (n, m)
        for n, m in model.named_modules()
        if n and not (in_blocks and n.startswith(in_blocks))
    ]
    heads = [n for n, m in outside if isinstance(m, nn.Linear)]
    head = next(
        (n for n, m in outside if isinstance(m, nn.Linear) and m.out_features == vocab),
        heads[-1] if heads else None,
    )
    seen_blocks = False
    points: list[ProbePoint] = []
    taken: set[int] = set()
    tails: dict[str, ProbePoint] = {}  # a block's last descendant -> its resid_post point

    def add(point: ProbePoint) -> None:
        points.append(point)
        if point.module is not None:
            taken.add(id(point.module))

    branch_of: dict[str, tuple[ProbeKind, int]] = {}
    for name, module in model.named_modules():
        if not name:
            continue
        layer = block_ids.get(id(module)) if name.startswith(blocks_path) else None
        if layer is not None and name == f"{blocks_path}.{layer}":
            seen_blocks = True
            add(ProbePoint(f"{name}.resid_pre", "resid", _depth(name) + 1, layer))
            add(ProbePoint(name, "block", _depth(name), layer, module))
            branches = _block_branches(module)
            for attr, kind in branches.items():
                branch_of[f"{name}.{attr}"] = (kind, layer)
            if "attn" not in branches.values() and _is_attention_block(module):
                # An attention-only block (no attention child): its own calls are the pattern.
                add(ProbePoint(f"{name}.pattern", "pattern", _depth(name) + 1, layer))
            last = [n for n, _ in module.named_modules(prefix=name)][-1]
            tails[last] = ProbePoint(f"{name}.resid_post", "resid", _depth(name) + 1, layer)
        elif name in branch_of:
            kind, layer = branch_of[name]
            add(ProbePoint(name, kind, _depth(name), layer, module))
            if kind == "attn":
                block = name.rsplit(".", 1)[0]
                add(ProbePoint(f"{name}.pattern", "pattern", _depth(name) + 1, layer))
                add(ProbePoint(f"{block}.resid_mid", "resid", _depth(name), layer))
        elif isinstance(module, nn.Embedding) and not (in_blocks and name.startswith(in_blocks)):
            add(ProbePoint(name, "embedding", _depth(name), None, module))
        elif name == head:
            add(ProbePoint(name, "head", _depth(name), None, module))
        elif seen_blocks and _is_norm(module) and not (in_blocks and name.startswith(in_blocks)):
            add(ProbePoint(name, "norm", _depth(name), None, module))
        elif leaves and not any(True for _ in module.children()) and id(module) not in taken:
            layer = _layer_of(name, blocks_path, len(blocks))
            add(ProbePoint(name, "leaf", _depth(name), layer, module))
        if name in tails:
            add(tails.pop(name))
    points.append(ProbePoint(MODEL_OUTPUT, "model", 0))
    return points


def _layer_of(name: str, blocks_path: str, n_blocks: int) -> int | None:
    prefix = f"{blocks_path}."
    if not blocks_path or not name.startswith(prefix):
        return None
    head = name[len(prefix) :].split(".", 1)[0]
    return int(head) if head.isdigit() and int(head) < n_blocks else None


def first_tensor(value: Any) -> torch.Tensor | None:
    """The first tensor in a module's output or arguments (blocks may return tuples)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            found = first_tensor(item)
            if found is not None:
                return found
    if isinstance(value, dict):
        return first_tensor(list(value.values()))
    return None
