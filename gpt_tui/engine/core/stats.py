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
  one transfer per device.

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
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .trace import TensorStats

# Packed row layout: four float32 values bit-cast into int64 slots, then three int64
# counts. One dtype lets a whole pass travel to the host as one tensor, with counts exact
# beyond 2**24 elements (float32 counts would not be) and no float64 (which MPS lacks).
_FLOATS = 4  # sum, l2 norm, min, max (over finite elements)
ROW_WIDTH = _FLOATS + 3  # + nonzero count, nan count, inf count


def _pack(floats: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    bits = floats.to(torch.float32).view(torch.int32).to(torch.int64)
    return torch.cat([bits, counts.to(torch.int64)])


def _finite_row(x: torch.Tensor) -> torch.Tensor:
    """Moments and extremes over finite elements, counts over all: always correct, slower."""
    finite = torch.isfinite(x)
    nan = torch.count_nonzero(torch.isnan(x))
    inf = torch.count_nonzero(finite.logical_not()) - nan
    zeroed = torch.where(finite, x, 0.0)
    lo = torch.where(finite, x, torch.inf).amin()
    hi = torch.where(finite, x, -torch.inf).amax()
    floats = torch.stack([zeroed.sum(), torch.linalg.vector_norm(zeroed), lo, hi])
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
    flat = finite.reshape(-1)
    return _host_pack(flat.sum(), np.sqrt(np.dot(flat, flat)), lo, hi, a.size - _zeros(a), nan, inf)


def _host_pack(total: float, norm: float, lo: float, hi: float, *counts: int) -> np.ndarray:
    floats = np.array([total, norm, lo, hi], dtype=np.float32)
    return np.concatenate([floats.view(np.int32).astype(np.int64), np.array(counts, np.int64)])


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
    total = np.add.reduceat(flat, starts)
    norm = np.sqrt(np.add.reduceat(flat * flat, starts))
    lo = np.minimum.reduceat(flat, starts)
    hi = np.maximum.reduceat(flat, starts)
    zeros = np.add.reduceat(flat == 0, starts, dtype=np.int64)
    floats = np.stack([total, norm, lo, hi], axis=1).astype(np.float32)
    counts = np.stack([sizes - zeros, np.zeros_like(zeros), np.zeros_like(zeros)], axis=1)
    packed = np.concatenate([floats.view(np.int32).astype(np.int64), counts], axis=1)
    return [row if ok else _host_row(a) for row, ok, a in zip(packed, finite, arrays, strict=True)]


def stats_row(x: torch.Tensor) -> Row | None:
    """One packed statistics row (int64, `ROW_WIDTH`) for `x`: on `x`'s device, or a numpy
    row already on the host where reads are free (`FREE_READS`); a small CPU tensor's
    values, whose row `rows_to_stats` makes with the others.

    Returns None for tensors without data (the `meta` device) or of complex dtype.
    """
    if x.device.type == "meta" or x.is_complex():
        return None
    x = x.detach().float()
    if x.numel() == 0:
        return _pack(torch.zeros(_FLOATS), torch.zeros(3)).to(x.device)
    if x.device.type not in FREE_READS:
        return _finite_row(x)
    if x.numel() <= SMALL_CPU_NUMEL:
        return HostValues(x.reshape(-1).numpy().copy())
    lo, hi = (float(v) for v in torch.aminmax(x))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return _finite_row(x)
    # A dot product is the cheapest sum of squares on the CPU (half a vector_norm); it can
    # only overflow for values beyond ~1e19, where vector_norm's scaling takes over.
    flat = x.reshape(-1)
    sumsq = float(torch.dot(flat, flat))
    norm = math.sqrt(sumsq) if math.isfinite(sumsq) else float(torch.linalg.vector_norm(x))
    return _host_pack(float(x.sum()), norm, lo, hi, x.numel() - _zeros(x.numpy()), 0, 0)


def _unknown(numel: int) -> TensorStats:
    nan = float("nan")
    return TensorStats(nan, nan, nan, nan, nan, nan, nan, 0, 0, numel)


def _from_host_rows(rows: np.ndarray, numels: np.ndarray) -> list[TensorStats]:
    """`TensorStats` of packed host rows (n, ROW_WIDTH), computed for all rows at once."""
    floats = rows[:, :_FLOATS].astype(np.int32).view(np.float32).astype(np.float64)
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
    return [
        TensorStats(*values, numel=numel)
        for *values, numel in zip(*columns, numels.tolist(), strict=True)
    ]


def rows_to_stats(rows: Sequence[Row | None], numels: Sequence[int]) -> list[TensorStats]:
    """Turn packed rows into `TensorStats` with one host transfer per device.

    A None row (no data, e.g. `meta`) becomes stats of NaN with the right `numel`.
    """
    by_device: dict[torch.device, list[int]] = {}
    host: dict[int, np.ndarray] = {}
    small = [i for i, row in enumerate(rows) if isinstance(row, HostValues)]
    if small:
        made = _batch_rows([rows[i].values for i in small])  # type: ignore[union-attr]
        host.update(zip(small, made, strict=True))
    for i, row in enumerate(rows):
        if isinstance(row, np.ndarray):
            host[i] = row
        elif row is not None and not isinstance(row, HostValues):
            by_device.setdefault(row.device, []).append(i)
    for indices in by_device.values():
        stacked = torch.stack([rows[i] for i in indices]).cpu().numpy()  # the one transfer
        host.update(zip(indices, stacked, strict=True))
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


def tensor_stats(x: torch.Tensor) -> TensorStats:
    """Statistics of one tensor (one transfer). For many tensors use `stats_row` + batch."""
    return rows_to_stats([stats_row(x)], [x.numel()])[0]
