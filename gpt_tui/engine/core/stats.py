"""Per-tensor statistics computed on the tensor's device, read back once per pass.

Why it is built this way: reading a statistic with `.item()` synchronises the device and
costs a Python round trip, and a full set of separate reductions (var_mean, isinf, ...)
costs more than the forward pass itself on a big tensor like the logits. Measured on a
(1, 256, 50257) fp32 tensor on CPU: `sum`, `vector_norm`, `aminmax` and `count_nonzero`
take ~10-20 ms each, while `var_mean` takes ~160 ms and `isinf` ~100 ms. So:

- `stats_row(x)` makes ONE small packed row per probe from four cheap reductions: sum,
  L2 norm, aminmax and the zero count (on the CPU a numpy compare-and-count, 3x cheaper
  than torch's count_nonzero). Mean, rms and std are derived from sum and norm (std is
  the population std, sqrt(rms² − mean²), evaluated in float64 on the host).
- `rows_to_stats(rows, numels)` stacks all rows of a pass and moves them to the host with
  one transfer per device; a `Parcel` of them can instead ride along with the next
  `to_host` copy of the same thread (sampling's logits), one transfer for both.

NaN / Inf semantics: `nan_count` and `inf_count` count every element; the moments and
extremes (mean, std, rms, min, max, abs_max) are taken over the *finite* elements only, so
a single NaN does not hide the scale of everything else (they are NaN when nothing is
finite). `zero_frac` is over all elements. On the CPU a scalar read is free, so the
finite-only path runs only when aminmax shows a non-finite value; on accelerators, where a
read would stall the pipeline, the finite-only path always runs on the device (its extra
passes are cheap there).
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .trace import TensorStats

# Packed row layout: four float64 values bit-cast into int64 slots, then three int64
# counts. One dtype lets a whole pass travel to the host as one tensor, with counts exact
# beyond 2**24 elements (float32 counts would not be). The sum and the norm are float64:
# two float32 values of 3e38 sum past float32's range, and their mean is not inf.
_FLOATS = 4  # sum, l2 norm, min, max (over finite elements)
ROW_WIDTH = _FLOATS + 3  # + nonzero count, nan count, inf count

# Devices without float64 (MPS): their rows hold float32 bits in the float slots (sums
# past float32's range read inf there); `_widen` turns them into the float64 layout.
NO_FLOAT64 = frozenset({"mps"})


def _pack(floats: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    if floats.device.type in NO_FLOAT64:
        bits = floats.to(torch.float32).view(torch.int32).to(torch.int64)
    else:
        bits = floats.to(torch.float64).view(torch.int64)
    return torch.cat([bits, counts.to(torch.int64)])


def _widen(rows: np.ndarray) -> np.ndarray:
    """Rows of a device without float64, in the float64 layout."""
    out = rows.copy()
    out[:, :_FLOATS] = (
        rows[:, :_FLOATS].astype(np.int32).view(np.float32).astype(np.float64).view(np.int64)
    )
    return out


def _finite_row(x: torch.Tensor) -> torch.Tensor:
    """Moments and extremes over finite elements, counts over all: always correct, slower."""
    wide = torch.float32 if x.device.type in NO_FLOAT64 else torch.float64
    finite = torch.isfinite(x)
    nan = torch.count_nonzero(torch.isnan(x))
    inf = torch.count_nonzero(finite.logical_not()) - nan
    zeroed = torch.where(finite, x, 0.0)
    lo = torch.where(finite, x, torch.inf).amin()
    hi = torch.where(finite, x, -torch.inf).amax()
    total, norm = zeroed.sum(dtype=wide), torch.linalg.vector_norm(zeroed, dtype=wide)
    floats = torch.stack([total, norm, lo.to(wide), hi.to(wide)])
    return _pack(floats, torch.stack([torch.count_nonzero(x), nan, inf]))


# Below this many elements a CPU tensor's stats are cheaper in numpy on the same memory
# than as half a dozen torch ops, whose dispatch dominates for one decoding step's vectors.
SMALL_CPU_NUMEL = 1 << 15

# Device types where reading a scalar back is free (no device to wait for): there, stats
# are read as they are made and the finite-only path runs only when it must. On the
# others everything stays on the device until the pass's one transfer. benchmarks/syncs.py
# empties it to count, on the CPU, the reads an accelerator would make.
FREE_READS = frozenset({"cpu"})


def _zeros(a: np.ndarray) -> int:
    """Elements equal to zero (-0.0 included); numpy's compare and bool count are far
    cheaper than counting non-zero floats."""
    return int(np.count_nonzero(a == 0))


def _host_row(a: np.ndarray) -> np.ndarray:
    """The packed row of a small host array, with the same meaning as the torch path."""
    lo, hi = a.min(), a.max()
    nan = inf = 0
    finite = a
    if not (np.isfinite(lo) and np.isfinite(hi)):
        mask = np.isfinite(a)
        nan = int(np.isnan(a).sum())
        inf = int(a.size - mask.sum()) - nan
        finite = a[mask]
        lo, hi = (finite.min(), finite.max()) if finite.size else (np.inf, -np.inf)
    flat = finite.reshape(-1).astype(np.float64)  # float32 squares overflow beyond ~1.8e19
    return _host_pack(flat.sum(), np.sqrt(np.dot(flat, flat)), lo, hi, a.size - _zeros(a), nan, inf)


def _host_pack(total: float, norm: float, lo: float, hi: float, *counts: int) -> np.ndarray:
    floats = np.array([total, norm, lo, hi], dtype=np.float64)
    return np.concatenate([floats.view(np.int64), np.array(counts, np.int64)])


@dataclass(frozen=True, eq=False)
class HostValues:
    """A small CPU tensor's values, copied as it is recorded; its row is made with all the
    others of its pass in `rows_to_stats` (a handful of numpy reductions for all of them,
    where one row each would cost a dozen calls: what a decoding step's vectors need)."""

    values: np.ndarray  # flat


Row = torch.Tensor | np.ndarray | HostValues


def _batch_rows(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The packed rows of many small host arrays, reduced segment by segment in float64."""
    sizes = np.array([a.size for a in arrays])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    flat = np.concatenate(arrays).astype(np.float64)
    finite = np.logical_and.reduceat(np.isfinite(flat), starts)
    # A segment holding inf and -inf sums to NaN here; `_host_row` redoes such segments.
    with np.errstate(invalid="ignore", over="ignore"):
        total = np.add.reduceat(flat, starts)
        norm = np.sqrt(np.add.reduceat(flat * flat, starts))
        lo = np.minimum.reduceat(flat, starts)
        hi = np.maximum.reduceat(flat, starts)
        floats = np.stack([total, norm, lo, hi], axis=1)
    zeros = np.add.reduceat(flat == 0, starts, dtype=np.int64)
    counts = np.stack([sizes - zeros, np.zeros_like(zeros), np.zeros_like(zeros)], axis=1)
    packed = np.concatenate([floats.view(np.int64), counts], axis=1)
    return [row if ok else _host_row(a) for row, ok, a in zip(packed, finite, arrays, strict=True)]


def stats_row(x: torch.Tensor) -> Row | None:
    """One packed statistics row (int64, `ROW_WIDTH`) for `x`: on `x`'s device, or a numpy
    row already on the host where reads are free (`FREE_READS`); a small CPU tensor's
    values, whose row `rows_to_stats` makes with the others.

    Returns None for tensors without data (the `meta` device) or of complex dtype.
    """
    where, numel = x.device.type, x.numel()
    if where == "meta" or x.is_complex():
        return None
    if 0 < numel <= SMALL_CPU_NUMEL and where in FREE_READS and x.dtype == torch.float32:
        return HostValues(x.detach().numpy().reshape(-1).copy())  # a decoding step's path
    x = x.detach().float()
    if numel == 0:
        return _pack(torch.zeros(_FLOATS), torch.zeros(3)).to(x.device)
    if where not in FREE_READS:
        return _finite_row(x)
    if numel <= SMALL_CPU_NUMEL:
        return HostValues(x.reshape(-1).numpy().copy())
    lo, hi = (float(v) for v in torch.aminmax(x))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return _finite_row(x)
    # A dot product is the cheapest sum of squares on the CPU (half a vector_norm); it
    # overflows float32 only for values beyond ~1e19, and the sum only near 3e38: then
    # both are taken again in float64.
    flat = x.reshape(-1)
    sumsq, total = float(torch.dot(flat, flat)), float(x.sum())
    if not math.isfinite(sumsq):
        sumsq = float(torch.dot(flat.double(), flat.double()))
    if not math.isfinite(total):
        total = float(x.sum(dtype=torch.float64))
    return _host_pack(total, math.sqrt(sumsq), lo, hi, x.numel() - _zeros(x.numpy()), 0, 0)


def _unknown(numel: int) -> TensorStats:
    nan = float("nan")
    return TensorStats(nan, nan, nan, nan, nan, nan, nan, 0, 0, numel)


def _from_host_rows(rows: np.ndarray, numels: np.ndarray) -> list[TensorStats]:
    """`TensorStats` of packed host rows (n, ROW_WIDTH), computed for all rows at once."""
    floats = np.ascontiguousarray(rows[:, :_FLOATS]).view(np.float64)
    total, norm, lo, hi = floats.T
    nonzero, nan_count, inf_count = rows[:, _FLOATS:].T
    n_finite = numels - nan_count - inf_count
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = total / n_finite
        rms = norm / np.sqrt(n_finite)
        std = np.sqrt(np.maximum(rms * rms - mean * mean, 0.0))
        abs_max = np.maximum(np.abs(lo), np.abs(hi))
        zero_frac = np.where(numels > 0, (numels - nonzero) / np.maximum(numels, 1), 0.0)
    moments = np.stack([mean, std, rms, lo, hi, abs_max])
    moments[:, n_finite <= 0] = np.nan  # nothing finite to take them over
    columns = [*moments.tolist(), zero_frac.tolist(), nan_count.tolist(), inf_count.tolist()]
    return [TensorStats(*values) for values in zip(*columns, numels.tolist(), strict=True)]


class Parcel:
    """A pass's stats rows on their way to the host. Made where the rows are complete
    (the rows on a device stacked there, without waiting for it) and read when wanted:
    by a transfer of its own, or by riding along with another one, `to_host`, which
    carries every parcel `post`ed in its thread (the probes' stats ride with the logits
    that sampling copies anyway). A None row (no data, e.g. `meta`) reads as stats of
    NaN with the right `numel`."""

    def __init__(self, rows: Sequence[Row | None], numels: Sequence[int]) -> None:
        self.rows, self.numels = list(rows), list(numels)
        by_device: dict[torch.device, list[int]] = {}
        for i, row in enumerate(self.rows):
            if isinstance(row, torch.Tensor):
                by_device.setdefault(row.device, []).append(i)
        self._stacked = {
            device: (indices, torch.stack([self.rows[i] for i in indices]))  # type: ignore[misc]
            for device, indices in by_device.items()
        }
        self._arrived: dict[torch.device, np.ndarray] = {}
        self._lock = threading.Lock()
        self._stats: list[TensorStats] | None = None

    def post(self) -> Parcel:
        """Let the next `to_host` of this thread carry this parcel's device rows."""
        if self._stacked:
            box = _outbox()
            box[:] = [ref for ref in box if ref() is not None]
            box.append(weakref.ref(self))
        return self

    def _ride(self, device: torch.device) -> torch.Tensor | None:
        with self._lock:
            found = self._stacked.get(device) if self._stats is None else None
            return None if found is None or device in self._arrived else found[1]

    def _arrive(self, device: torch.device, rows: np.ndarray) -> None:
        with self._lock:
            self._arrived[device] = rows

    def read(self) -> list[TensorStats]:
        """The rows as `TensorStats`: one transfer per device not yet carried (none on
        the host, where the rows already are)."""
        with self._lock:
            if self._stats is None:
                self._stats = self._read()
            return self._stats

    def _read(self) -> list[TensorStats]:
        rows, numels = self.rows, self.numels
        host: dict[int, np.ndarray] = {}
        small = [i for i, row in enumerate(rows) if isinstance(row, HostValues)]
        if small:
            made = _batch_rows([rows[i].values for i in small])  # type: ignore[union-attr]
            host.update(zip(small, made, strict=True))
        host.update((i, row) for i, row in enumerate(rows) if isinstance(row, np.ndarray))
        for device, (indices, stacked) in self._stacked.items():
            arrived = self._arrived.get(device)
            if arrived is None:
                arrived = stacked.cpu().numpy()  # the one transfer
            if device.type in NO_FLOAT64:
                arrived = _widen(arrived)
            host.update(zip(indices, arrived, strict=True))
        self._stacked = {}  # the device rows are not needed any more
        out = [_unknown(numel) for numel in numels] if len(host) < len(numels) else []
        if host:
            order = sorted(host)
            made = _from_host_rows(
                np.stack([host[i] for i in order]), np.array([numels[i] for i in order], np.int64)
            )
            if not out:
                return made
            for i, st in zip(order, made, strict=True):
                out[i] = st
        return out


_LOCAL = threading.local()


def _outbox() -> list[weakref.ref[Parcel]]:
    box = getattr(_LOCAL, "box", None)
    if box is None:
        box = _LOCAL.box = []
    return box


def to_host(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Host copies of `tensors` (all on one device) in one transfer, which also carries
    the device rows of every parcel this thread posted there. Where reads are free
    (`FREE_READS`) it is `.cpu()` of each, and the parcels read on their own for free."""
    device = tensors[0].device
    if device.type in FREE_READS:
        return tuple(t.detach().cpu() for t in tensors)
    box, _LOCAL.box = _outbox(), []
    riders = [(p, rows) for p in (ref() for ref in box) if p is not None
              for rows in [p._ride(device)] if rows is not None]  # fmt: skip
    parts = [rows for _, rows in riders] + [t.detach() for t in tensors]
    # Widest elements first: every part then starts at a multiple of its element size.
    order = sorted(range(len(parts)), key=lambda i: -parts[i].element_size())
    flat = [parts[i].reshape(-1).view(torch.uint8) for i in order]
    host = torch.cat(flat).cpu()  # the one transfer
    out: list[torch.Tensor] = [host] * len(parts)
    start = 0
    for i, bytes_ in zip(order, flat, strict=True):
        out[i] = host[start : start + bytes_.numel()].view(parts[i].dtype).view(parts[i].shape)
        start += bytes_.numel()
    for (parcel, _), rows in zip(riders, out, strict=False):
        parcel._arrive(device, rows.numpy())
    return tuple(out[len(riders) :])


def rows_to_stats(rows: Sequence[Row | None], numels: Sequence[int]) -> list[TensorStats]:
    """Turn packed rows into `TensorStats` with one host transfer per device."""
    return Parcel(rows, numels).read()


def tensor_stats(x: torch.Tensor) -> TensorStats:
    """Statistics of one tensor (one transfer). For many tensors use `stats_row` + batch."""
    return rows_to_stats([stats_row(x)], [x.numel()])[0]
