"""Hooks that record what the probe points (probe_points.py) see in one pass.

`Probes` hooks the points and records a `ProbeRecord` per point in execution order. A pass
starts in the root module's pre-hook and ends in its post-hook, so any call of the model
(`probes.run(idx)` or a plain `model(idx)`) is recorded, while calls of single submodules
outside a pass (the logit lens applying `lm_head`) and calls from other threads are not.
Stats rows are computed on the device in the hooks and read back once per pass, when the
records are read (`records`, `flush`): until then they wait in a `Parcel`, which the next
`to_host` copy of the pass's thread carries along (sampling's logits: one transfer).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn as nn

from ..core.model_access import unwrap_model
from ..core.stats import Parcel, Row, stats_row
from ..core.trace import AttentionPattern, Phase, ProbeRecord
from .attention import AttentionCapture, LazyPatterns
from .probe_points import ProbePoint, find_probe_points, first_tensor


@dataclass
class PendingRecord:
    """A record whose stats row is still on the device, waiting for the pass's transfer."""

    point: ProbePoint
    phase: Phase
    shape: tuple[int, ...]
    dtype: str
    device: str
    numel: int
    row: Row | None
    order: int
    same_as: str | None = None  # the first "out" record of the same tensor in this pass


class _Last(NamedTuple):
    """The last tensor recorded, its stats row, and its first "out" record's name."""

    tensor: torch.Tensor | None = None
    row: Row | None = None
    first_out: str | None = None


# Names of dtypes and devices as records show them, made once each (a record is made for
# every point of every pass, a decoding step's included).
_DTYPE_NAMES: dict[torch.dtype, str] = {}
_DEVICE_NAMES: dict[torch.device, str] = {}


def _names(x: torch.Tensor) -> tuple[str, str]:
    dtype, device = x.dtype, x.device
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype).removeprefix("torch.")
    where = _DEVICE_NAMES.get(device)
    if where is None:
        where = _DEVICE_NAMES[device] = str(device)
    return name, where


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
        self._records: list[ProbeRecord] = []
        self._parcel: Parcel | None = None  # the ended pass's rows, not read yet
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
            if self.inputs or block_layer is not None or pattern:  # else it has nothing to do
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
        self._parcel = None
        self._records = []
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
        if self._pending:
            pending = self._pending
            self._parcel = Parcel([r.row for r in pending], [r.numel for r in pending]).post()
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
        self._parcel = None
        self._block_inputs = {}
        self._last = _Last()
        self._thread = None

    def _record(
        self, p: ProbePoint, phase: Phase, x: torch.Tensor, row: Row | None = None
    ) -> Row | None:
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
            p, phase, tuple(x.shape), *_names(x), x.numel(), row, self._order, same_as
        )
        self._order += 1
        self._pending.append(pending)
        if self.listener is not None:
            self.listener(pending, x)
        return row

    @property
    def records(self) -> list[ProbeRecord]:
        """The records of the last (or current) pass, in execution order, read back now if
        they were not yet."""
        if self._pending:
            self.flush()
        return self._records

    def flush(self) -> list[ProbeRecord]:
        """Move queued stats to the host (one transfer, unless they rode along with one)
        and return the new records."""
        pending, self._pending = self._pending, []
        parcel, self._parcel = self._parcel, None
        if parcel is None or len(parcel.rows) != len(pending):
            parcel = Parcel([r.row for r in pending], [r.numel for r in pending])
        stats = parcel.read()
        new = []
        for r, s in zip(pending, stats, strict=True):
            p = r.point  # positional arguments: a decoding step makes dozens of records
            args = (p.name, p.kind, r.phase, p.depth, r.shape, r.dtype, r.device, s, r.order)
            new.append(ProbeRecord(*args, r.same_as))
        self._records.extend(new)
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
