"""What a pause shows of a value: a local's or an expression's `Value`, with its short
form (`repr`), the same in the CLI's text and JSON and in the app. A tensor of up to
`SMALL_NUMEL` elements shows its values (`tensor(0.788) float32 cpu`), a bigger one its
shape and statistics, a tuple or list of tensors (`topk`) each element's short form within
the width; statistics and small values come back in one transfer per device."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn as nn

from .stats import rows_to_stats, stats_row
from .trace import TensorStats

_REPR_WIDTH = 60
_CONTAINER_WIDTH = 120  # a tuple of tensors: room for each element's short form
_MAX_ELEMENTS = 8  # a longer tuple or list is shown by its repr
SMALL_NUMEL = 8  # a tensor this small shows its values, not its statistics


@dataclass(frozen=True)
class Value:
    """One local (or an expression's result): a tensor's summary, or a short repr."""

    name: str
    kind: str  # "tensor" | "value"
    repr: str
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    device: str | None = None
    requires_grad: bool | None = None
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    nan: int | None = None
    inf: int | None = None


def one_line(err: BaseException) -> str:
    """`NameError: name 'x' is not defined`: an error the user's expression raised."""
    first = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first}".rstrip(": ")


def short_repr(value: object) -> str:
    if isinstance(value, nn.Module):
        return f"<{type(value).__name__}>"
    try:
        text = repr(value)
    except Exception as err:  # a user's object with a broken __repr__
        return f"<repr failed: {type(err).__name__}>"
    return _clip(" ".join(text.split()))


def _clip(text: str, width: int = _REPR_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _number(x: float, dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return str(bool(x))
    if not dtype.is_floating_point and math.isfinite(x):
        return str(int(x))
    text = f"{x:.3g}"
    return text + "." if text.lstrip("-").isdigit() else text  # 1. is a float, as torch's


def _nested(flat: list[str], shape: tuple[int, ...]) -> str:
    """`[[a, b], [c, d]]` for values listed in row-major order."""
    if not shape:
        return flat[0]
    step = len(flat) // shape[0] if shape[0] else 0
    parts = [_nested(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]
    return "[" + ", ".join(parts) + "]"


def _small_values(tensors: list[torch.Tensor]) -> list[list[float]]:
    """The values of small tensors, with one host transfer per device."""
    by_device: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    out: list[list[float]] = [[] for _ in tensors]
    for device, indices in by_device.items():
        wide = torch.float32 if device.type == "mps" else torch.float64  # mps: no float64
        flat = [tensors[i].detach().reshape(-1).to(wide) for i in indices]
        host = torch.cat(flat).cpu().tolist()  # the one transfer
        start = 0
        for i, part in zip(indices, flat, strict=True):
            out[i], start = host[start : start + part.numel()], start + part.numel()
    return out


def _tensor_repr(t: torch.Tensor, st: TensorStats, values: list[float] | None) -> str:
    """`tensor(0.788) float32 cpu` for a small tensor (its values), else the shape and
    the statistics: `tensor[1, 6, 32] float32 cpu μ 0.0123 σ 0.98 [-2.1, 3.05]`."""
    dtype = str(t.dtype).removeprefix("torch.")
    if values is not None:
        shown = _nested([_number(x, t.dtype) for x in values], tuple(t.shape))
        return f"tensor({shown}) {dtype} {t.device}"
    head = f"tensor{list(t.shape)} {dtype} {t.device}"
    if t.numel() == 0 or t.device.type == "meta" or math.isnan(st.mean) and not st.nan_count:
        return head
    text = f"{head} μ {st.mean:.3g} σ {st.std:.3g} [{st.min:.3g}, {st.max:.3g}]"
    bad = [f"NaN {st.nan_count}"] * bool(st.nan_count) + [f"Inf {st.inf_count}"] * bool(
        st.inf_count
    )
    return " ".join([text, *bad])


def _element_repr(value: object, short: dict[int, str]) -> str:
    """A tuple's or list's element: a tensor's short form, anything else its repr."""
    if id(value) in short:
        return short[id(value)]
    if isinstance(value, nn.Module):
        return f"<{type(value).__name__}>"
    try:
        return " ".join(repr(value).split())
    except Exception as err:
        return f"<repr failed: {type(err).__name__}>"


def _container_repr(value: tuple | list, short: dict[int, str]) -> str:
    """`topk(values=tensor([0.278, 0.191]) float32 cpu, indices=tensor([3, 7]) int64 cpu)`:
    each element's short form, each cut to its share of the width so all of them show."""
    names = list(getattr(type(value), "__match_args__", ()))  # named tuples, torch's too
    names = names if len(names) == len(value) and all(isinstance(n, str) for n in names) else []
    items = [_element_repr(v, short) for v in value]
    if isinstance(value, list):
        open_, close = "[", "]"
    else:
        label = type(value).__name__ if type(value) is not tuple else ""
        open_, close = f"{label}(", ",)" if len(value) == 1 and not label else ")"
    items = [(f"{names[i]}=" if names else "") + item for i, item in enumerate(items)]
    room = _CONTAINER_WIDTH - len(open_) - len(close) - 2 * (len(items) - 1)
    width = dict.fromkeys(range(len(items)), 0)
    # the shortest first take what they need: what they leave goes to the longer ones
    for done, i in enumerate(sorted(width, key=lambda i: len(items[i]))):
        width[i] = min(len(items[i]), max(room // (len(items) - done), 12))
        room -= width[i]
    return open_ + ", ".join(_clip(item, width[i]) for i, item in enumerate(items)) + close


def summarise(items: Iterable[tuple[str, object]]) -> tuple[Value, ...]:
    """Values for named objects; every tensor's statistics come back in one transfer, and
    so do the values of the small ones (up to `SMALL_NUMEL` elements, shown as such). The
    tensors of a tuple or list (`topk`'s values and indices) are summarised with them."""
    items = list(items)
    wanted: list[torch.Tensor] = []
    for _, v in items:
        inner = list(v) if isinstance(v, (tuple, list)) and len(v) <= _MAX_ELEMENTS else [v]
        wanted += [t for t in inner if _summable(t)]
    unique = list({id(t): t for t in wanted}.values())
    rows = [stats_row(t) for t in unique]
    numels = [t.numel() for t in unique]
    stats = dict(zip((id(t) for t in unique), rows_to_stats(rows, numels), strict=True))
    small = [t for t in unique if _shows_values(t)]
    values = dict(zip((id(t) for t in small), _small_values(small), strict=True))
    short = {id(t): _tensor_repr(t, stats[id(t)], values.get(id(t))) for t in unique}
    out = []
    for name, value in items:
        if _holds_tensors(value, short):
            out.append(Value(name, "value", _container_repr(value, short)))
            continue
        if id(value) not in stats or not isinstance(value, torch.Tensor):
            out.append(Value(name, "value", short_repr(value)))
            continue
        st = stats[id(value)]
        shape = tuple(value.shape)
        dtype = str(value.dtype).removeprefix("torch.")
        out.append(
            Value(
                name,
                "tensor",
                short[id(value)],
                shape=shape,
                dtype=dtype,
                device=str(value.device),
                requires_grad=value.requires_grad,
                mean=st.mean,
                std=st.std,
                min=st.min,
                max=st.max,
                nan=st.nan_count,
                inf=st.inf_count,
            )
        )
    return tuple(out)


def _holds_tensors(value: object, short: dict[int, str]) -> bool:
    if not isinstance(value, (tuple, list)) or len(value) > _MAX_ELEMENTS:
        return False
    return any(id(v) in short for v in value)


def _summable(value: object) -> bool:
    return isinstance(value, torch.Tensor) and value.layout == torch.strided  # not sparse


def _shows_values(t: torch.Tensor) -> bool:
    return t.numel() <= SMALL_NUMEL and t.device.type != "meta" and not t.is_complex()
