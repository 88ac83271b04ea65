"""Probe points found by structure, and hooks that record what they see in one pass.

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

`Probes` hooks the points and records a `ProbeRecord` per point in execution order. A pass
starts in the root module's pre-hook and ends in its post-hook, so any call of the model
(`probes.run(idx)` or a plain `model(idx)`) is recorded, while calls of single submodules
outside a pass (the logit lens applying `lm_head`) and calls from other threads are not.
Stats rows are computed on the device in the hooks and read back once per pass (`flush`).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..core.model_access import find_block_list, unwrap_model
from ..core.stats import rows_to_stats, stats_row
from ..core.trace import AttentionPattern, Phase, ProbeKind, ProbeRecord
from .attention import AttentionCapture, LazyPatterns

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


@dataclass
class PendingRecord:
    """A record whose stats row is still on the device, waiting for the pass's transfer."""

    point: ProbePoint
    phase: Phase
    shape: tuple[int, ...]
    dtype: str
    device: str
    numel: int
    row: torch.Tensor | None
    order: int
    same_as: str | None = None  # the first "out" record of the same tensor in this pass


@dataclass(frozen=True)
class _Last:
    """The last tensor recorded, its stats row, and its first "out" record's name."""

    tensor: torch.Tensor | None = None
    row: torch.Tensor | None = None
    first_out: str | None = None


# Called in the forward thread for every record as it is made (the stepper pauses here).
Listener = Callable[[PendingRecord, torch.Tensor], None]


class Probes:
    """Hooks on probe points that record one `ProbeRecord` per point per pass.

    Args:
        model: the model (a `torch.compile` wrapper is unwrapped).
        points: the points to hook (default: `find_probe_points(model, leaves)`); virtual
            points are recorded when their block / attention module is in the list.
        inputs: also record each module's input (phase "in", from the pre-hook).
        attention_layers: layers whose attention inputs are kept for `pattern()`;
            "all" for every layer.
        listener: called in the forward thread after each record is made.
    """

    def __init__(
        self,
        model: nn.Module,
        points: Sequence[ProbePoint] | None = None,
        *,
        leaves: bool = False,
        inputs: bool = False,
        attention_layers: Iterable[int] | str = (),
        listener: Listener | None = None,
    ) -> None:
        self.model = unwrap_model(model)
        self.points = list(points) if points is not None else find_probe_points(model, leaves)
        self._by_name = {p.name: p for p in self.points}
        self.inputs = inputs
        self.listener = listener
        self.records: list[ProbeRecord] = []
        self.capture = AttentionCapture(())
        self.attention_layers = attention_layers
        self._pending: list[PendingRecord] = []
        self._order = 0
        self._thread: int | None = None  # ident of the thread running the current pass
        # The pass's thread runs work that is not the pass (an expression at a pause).
        self.muted = False
        self._capturing = False
        self._block_inputs: dict[int, torch.Tensor] = {}
        self._last: _Last = _Last()
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._attach()

    # -- configuration --------------------------------------------------------------

    @property
    def attention_layers(self) -> set[int] | None:
        """Layers whose patterns are kept; None = all. Takes effect at the next pass."""
        return self.capture.layers

    @attention_layers.setter
    def attention_layers(self, layers: Iterable[int] | str) -> None:
        self.capture.layers = None if layers == "all" else {int(i) for i in layers}  # type: ignore[union-attr]

    def point(self, name: str) -> ProbePoint:
        """The hooked point called `name`."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no probe point named {name!r}") from None

    # -- hooks ----------------------------------------------------------------------

    def _attach(self) -> None:
        names = {p.name for p in self.points}
        by_name = {p.name: p for p in self.points}
        for p in self.points:
            if p.module is None:
                continue
            resid = {
                role: by_name.get(f"{p.name}.{role}")
                for role in ("resid_pre", "resid_post")
                if p.kind == "block"
            }
            pattern = p.kind in ("attn", "block") and f"{p.name}.pattern" in names
            mid = by_name.get(f"{p.name.rsplit('.', 1)[0]}.resid_mid") if p.kind == "attn" else None
            block_layer = p.layer if p.kind == "block" else None
            self._handles.append(
                p.module.register_forward_pre_hook(
                    self._pre_hook(p, resid.get("resid_pre"), block_layer, pattern),
                    with_kwargs=True,
                )
            )
            self._handles.append(
                p.module.register_forward_hook(
                    self._post_hook(p, resid.get("resid_post"), mid, pattern), with_kwargs=True
                )
            )
        output = next((p for p in self.points if p.kind == "model"), None)
        self._handles.append(self.model.register_forward_pre_hook(self._begin_pass))
        self._handles.append(
            self.model.register_forward_hook(
                lambda module, args, out: self._end_pass(output, out), always_call=True
            )
        )

    def _active(self) -> bool:
        return self._thread == threading.get_ident() and not self.muted

    def _pre_hook(
        self, p: ProbePoint, resid_pre: ProbePoint | None, block_layer: int | None, pattern: bool
    ):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if not self._active():
                return
            x = first_tensor(args) if args else first_tensor(kwargs)
            if block_layer is not None and x is not None:
                self._block_inputs[block_layer] = x
            if pattern and p.layer is not None:
                self.capture.enter_module(p.layer, p.name)
            if x is None:
                return
            row = self._record(p, "in", x) if self.inputs else None
            if resid_pre is not None:
                self._record(resid_pre, "out", x, row)

        return hook

    def _post_hook(
        self,
        p: ProbePoint,
        resid_post: ProbePoint | None,
        resid_mid: ProbePoint | None,
        pattern: bool,
    ):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            if not self._active():
                return
            if pattern:
                self.capture.exit_module()
            y = first_tensor(output)
            if y is None:
                return
            row = self._record(p, "out", y)
            if resid_post is not None:
                self._record(resid_post, "out", y, row)
            if resid_mid is not None and p.layer is not None:
                x = self._block_inputs.get(p.layer)
                if x is not None and x.shape == y.shape:
                    self._record(resid_mid, "out", x + y)

        return hook

    def _begin_pass(self, module: nn.Module, args: tuple) -> None:
        if self._thread is not None and not self._active():
            return  # another thread's pass is under way (e.g. a paused stepper)
        self._thread = threading.get_ident()
        self._pending = []
        self.records = []
        self._order = 0
        self._block_inputs = {}
        self.capture.reset()
        if self.capture.layers is None or self.capture.layers:
            self.capture.__enter__()
            self._capturing = True

    def _end_pass(self, output_point: ProbePoint | None, output: Any) -> None:
        if not self._active():
            return
        if self._capturing:
            self.capture.__exit__(None, None, None)
            self._capturing = False
        y = first_tensor(output)
        if output_point is not None and y is not None:
            self._record(output_point, "out", y)
        self.flush()
        self._block_inputs = {}
        self._last = _Last()
        self._thread = None

    def abandon_pass(self) -> None:
        """Forget a pass that will never end (its thread was unwound by `BaseException`).

        Call it in the thread that ran the pass: the attention capture leaves that
        thread's function-mode stack here.
        """
        if not self._active():
            return
        if self._capturing:
            self.capture.__exit__(None, None, None)
            self._capturing = False
        self._pending = []
        self._block_inputs = {}
        self._last = _Last()
        self._thread = None

    def _record(
        self, p: ProbePoint, phase: Phase, x: torch.Tensor, row: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Queue a record; `row` reuses stats already computed for the same tensor."""
        # The same tensor is often recorded several times in a row (a block's output is its
        # resid_post, the next block's input and resid_pre; the head's output is the
        # logits): one slot catches that without keeping every activation of the pass alive.
        last = self._last
        same = last.tensor is x
        if row is None:
            row = last.row if same else stats_row(x)
        same_as = last.first_out if same else None
        first_out = same_as or (p.name if phase == "out" else None)
        self._last = _Last(x, row, first_out)
        pending = PendingRecord(
            p, phase, tuple(x.shape), str(x.dtype).removeprefix("torch."), str(x.device),
            x.numel(), row, self._order, same_as,
        )  # fmt: skip
        self._order += 1
        self._pending.append(pending)
        if self.listener is not None:
            self.listener(pending, x)
        return row

    def flush(self) -> list[ProbeRecord]:
        """Move queued stats to the host (one transfer) and return the new records."""
        pending, self._pending = self._pending, []
        stats = rows_to_stats([r.row for r in pending], [r.numel for r in pending])
        new = [
            ProbeRecord(
                name=r.point.name,
                kind=r.point.kind,
                phase=r.phase,
                depth=r.point.depth,
                shape=r.shape,
                dtype=r.dtype,
                device=r.device,
                stats=s,
                order=r.order,
                same_as=r.same_as,
            )
            for r, s in zip(pending, stats, strict=True)
        ]
        self.records.extend(new)
        return new

    # -- use ------------------------------------------------------------------------

    def run(self, idx: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """One recorded forward pass under `inference_mode`; returns the logits."""
        try:
            with torch.inference_mode():
                out = first_tensor(self.model(idx, **kwargs))
        except BaseException:  # a cancelled or failed pass never reaches its end hook
            self.abandon_pass()
            raise
        if out is None:
            raise TypeError(f"{type(self.model).__name__} returned no tensor")
        return out

    def pattern(self, layer: int, batch: int = 0) -> AttentionPattern:
        """Attention pattern of `layer` in the last pass (it must have been requested)."""
        return self.capture.pattern(layer, batch)

    def has_pattern(self, layer: int) -> bool:
        """The last pass captured the attention inputs of `layer`."""
        return layer in self.capture.calls

    def patterns(self, batch: int = 0) -> LazyPatterns:
        """Patterns of every layer captured in the last pass, each computed when looked at."""
        return self.capture.lazy(batch)

    def close(self) -> None:
        """Remove every hook; the model runs as if never probed."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> Probes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
