"""What a tensor viewer needs from any tensor at a pause (a probe's output, a local, an
expression's result): a 2-D slice of its values picked by fixed leading indices, a
histogram, per-row and per-column norms, and a one-line summary in the spirit of
lovely-tensors. Everything is computed in fp32 on the tensor's device and comes back as
frozen numpy data in one transfer; the view keeps at most `max_cells` values, so memory
stays bounded whatever the tensor's size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ...errors import GptTuiError
from .stats import tensor_stats

_SHORT_DTYPES = {
    torch.float32: "f32",
    torch.float16: "f16",
    torch.bfloat16: "bf16",
    torch.float64: "f64",
    torch.int64: "i64",
    torch.int32: "i32",
    torch.int16: "i16",
    torch.int8: "i8",
    torch.uint8: "u8",
    torch.bool: "bool",
}


class TensorViewError(GptTuiError, ValueError):
    """Indices that do not fit the tensor being viewed."""


@dataclass(frozen=True)
class TensorView:
    """A 2-D window on a tensor: rows are its second-to-last dimension (token positions
    for activations), columns its last (channels)."""

    shape: tuple[int, ...]
    dtype: str
    device: str
    summary: str  # one line: `tensor[1, 6, 32] n=192 x∈[-2.1, 2.3] μ=0.01 σ=1 f32 cpu`
    fixed: tuple[int, ...]  # the index of every dimension before the last two
    row_start: int
    col_start: int
    values: np.ndarray  # float32 (rows shown, columns shown) of the slice
    slice_shape: tuple[int, int]  # the whole slice's (rows, columns)
    row_norms: np.ndarray  # L2 norm of every row of the whole slice (NaN/inf: it holds one)
    col_norms: np.ndarray  # L2 norm of every column of the whole slice (the same)
    hist_counts: np.ndarray  # int64 counts over the finite values of the whole tensor
    hist_edges: np.ndarray  # bins + 1 edges


def _frozen(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a


def short_dtype(dtype: torch.dtype) -> str:
    return _SHORT_DTYPES.get(dtype, str(dtype).removeprefix("torch."))


def _num(x: float) -> str:
    if math.isnan(x):
        return "nan"
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e4):
        return f"{x:.1e}"
    return f"{x:.3g}"


def one_line(t: torch.Tensor) -> str:
    """`tensor[1, 6, 32] n=192 x∈[-2.1, 2.3] μ=0.01 σ=1 f32 cpu`, plus grad / NaN / Inf."""
    shape = f"tensor[{', '.join(map(str, t.shape))}]"
    where = f"{short_dtype(t.dtype)} {t.device}" + (" grad" if t.requires_grad else "")
    if t.device.type == "meta" or t.is_complex():
        return f"{shape} n={t.numel()} {where}"
    if t.numel() == 0:
        return f"{shape} n=0 empty {where}"
    st = tensor_stats(t)
    parts = [shape, f"n={t.numel()}"]
    if t.numel() == 1:
        parts.append(_num(st.mean if st.finite else float(t.detach().float().reshape(-1)[0])))
    else:
        parts += [f"x∈[{_num(st.min)}, {_num(st.max)}]", f"μ={_num(st.mean)}", f"σ={_num(st.std)}"]
    if st.nan_count:
        parts.append(f"NaN!{st.nan_count}")
    if st.inf_count:
        parts.append(f"Inf!{st.inf_count}")
    return " ".join(parts) + " " + where


def view_tensor(
    t: torch.Tensor,
    fixed: Sequence[int] = (),
    *,
    row_start: int = 0,
    col_start: int = 0,
    max_cells: int = 1 << 16,
    bins: int = 32,
) -> TensorView:
    """The view of `t` with the leading dimensions fixed at `fixed` (missing ones are 0,
    negative ones count from the end). At most `max_cells` values are kept, taken from
    (`row_start`, `col_start`); norms and the histogram cover the whole slice / tensor."""
    if t.device.type == "meta":
        raise TensorViewError("a tensor on the meta device has no values to view")
    if t.is_complex():
        raise TensorViewError("complex tensors cannot be viewed")
    x = t.detach()
    x2 = x.reshape(1, 1) if x.dim() == 0 else x.reshape(1, -1) if x.dim() == 1 else x
    lead = x2.shape[:-2]
    if len(fixed) > len(lead):
        raise TensorViewError(
            f"{len(fixed)} fixed indices for a tensor of shape {list(t.shape)}: "
            f"at most {len(lead)} (one per dimension before the last two)"
        )
    index = [*fixed, *([0] * (len(lead) - len(fixed)))]
    for dim, (i, size) in enumerate(zip(index, lead, strict=True)):
        if not -size <= i < size:
            raise TensorViewError(f"index {i} out of range for dimension {dim} of size {size}")
    index = [i % size for i, size in zip(index, lead, strict=True)]
    plane = x2[tuple(index)].float()
    n_rows, n_cols = plane.shape
    row_start = min(max(row_start, 0), max(n_rows - 1, 0))
    col_start = min(max(col_start, 0), max(n_cols - 1, 0))
    cols = max(1, min(n_cols - col_start, max_cells))
    rows = max(1, min(n_rows - row_start, max_cells // cols))
    window = plane[row_start : row_start + rows, col_start : col_start + cols]
    # A row or column holding NaN has a NaN norm (Inf: inf), so the norms point at it;
    # over its finite values only, an all-NaN column read as a column of zeros.
    row_norms = torch.linalg.vector_norm(plane, dim=1)
    col_norms = torch.linalg.vector_norm(plane, dim=0)
    flat = x.float().reshape(-1)
    finite = flat[torch.isfinite(flat)]
    lo, hi = (finite.min(), finite.max()) if finite.numel() else (flat.new_zeros(()),) * 2
    counts = torch.histc(finite, bins=bins, min=0, max=0) if finite.numel() else None
    packed = torch.cat(
        [
            window.reshape(-1),
            row_norms,
            col_norms,
            counts if counts is not None else flat.new_zeros(bins),
            torch.stack([lo, hi]),
        ]
    ).cpu()  # the one transfer
    host = packed.numpy()
    sizes = np.cumsum([window.numel(), n_rows, n_cols, bins])
    lo_v, hi_v = (float(v) for v in host[sizes[3] :])
    if hi_v <= lo_v:  # histc widens a constant tensor's range by one on each side
        lo_v, hi_v = lo_v - 1, hi_v + 1
    return TensorView(
        shape=tuple(t.shape),
        dtype=short_dtype(t.dtype),
        device=str(t.device),
        summary=one_line(t),
        fixed=tuple(index),
        row_start=row_start,
        col_start=col_start,
        values=_frozen(host[: sizes[0]].reshape(window.shape)),
        slice_shape=(n_rows, n_cols),
        row_norms=_frozen(host[sizes[0] : sizes[1]]),
        col_norms=_frozen(host[sizes[1] : sizes[2]]),
        hist_counts=_frozen(host[sizes[2] : sizes[3]].astype(np.int64)),
        hist_edges=_frozen(np.linspace(lo_v, hi_v, bins + 1)),
    )
