"""Compare two runs probe by probe and find where they first part ways.

A `Run` is a model, token ids, and how to run them: plainly, or prefilling all but the last
token and decoding that one through the model's KV cache; interventions given with the run
apply to it alone. The two runs may differ in anything: prompt, checkpoint, a user's model
file against a built-in family, dtype, device, cache, interventions.

Probes are matched by name; where names differ (a user's model against ours) by structure:
blocks by index, attention and MLP by role in their block, embeddings and norms by order.
Each matched "out" record gives max |Δ|, ‖Δ‖/‖a‖ and the cosine, over the token positions
both runs computed. The first divergence is the earliest of them, in A's execution order,
whose relative Δ is beyond the tolerance of the coarser dtype; it is reported at the module
whose input still agreed (a module whose input already differs lost it in the code around
it, so the report climbs to the enclosing point whose input agreed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..errors import GptTuiError
from .interventions import Interventions, InterventionSpec
from .model_access import model_device
from .probes import PendingRecord, ProbePoint, Probes

# Relative ‖Δ‖/‖a‖ that still counts as agreement, by the coarser dtype of the two runs.
TOLERANCES: dict[torch.dtype, float] = {
    torch.float64: 1e-9,
    torch.float32: 1e-5,
    torch.float16: 3e-3,
    torch.bfloat16: 1e-2,
}


class CompareError(GptTuiError, ValueError):
    """The two runs cannot be compared as asked; the message says why and what to do."""


@dataclass
class Run:
    """One side of a comparison: a model on token ids, run plainly or through its KV cache."""

    model: nn.Module
    ids: Sequence[int]
    kv_cache: bool = False  # prefill ids[:-1], then decode ids[-1] with the cache
    interventions: Sequence[InterventionSpec] = ()
    label: str = "A"


@dataclass(frozen=True)
class ProbeDiff:
    """One matched probe: A's name, B's, and how far apart their outputs are."""

    name: str
    b_name: str
    kind: str
    layer: int | None
    max_abs_diff: float
    rel_diff: float  # ‖Δ‖ / ‖a‖
    cosine: float
    diverged: bool


@dataclass(frozen=True)
class Divergence:
    """Where the runs first part ways, named at the module whose input still agreed."""

    name: str
    max_abs_diff: float
    rel_diff: float
    input_max_abs_diff: float | None  # None: a point with no input of its own (embedding)
    first_probe: str  # the earliest probe beyond the tolerance (a leaf inside `name`)
    message: str


@dataclass(frozen=True)
class Comparison:
    records: tuple[ProbeDiff, ...]  # A's execution order
    first_divergence: Divergence | None
    tolerance: float
    positions: tuple[int, ...]  # token positions compared (A's numbering)
    unmatched: tuple[str, ...] = ()  # A's probes with no counterpart in B
    notes: tuple[str, ...] = field(default_factory=tuple)


@dataclass
class _Captured:
    points: list[ProbePoint]
    outputs: dict[str, torch.Tensor]  # name -> output, A's execution order
    inputs: dict[str, torch.Tensor]
    start: int  # absolute position of the pass's first token
    length: int  # tokens in the pass
    dtype: torch.dtype


def tolerance_for(*dtypes: torch.dtype) -> float:
    """The agreement tolerance of the coarsest dtype among `dtypes`."""
    return max(TOLERANCES.get(d, 1e-2) for d in dtypes)


def capture(run: Run, leaves: bool = False) -> _Captured:
    """Every probe's input and output in one pass of `run` (the decode pass with a cache)."""
    model = run.model
    outputs: dict[str, torch.Tensor] = {}
    inputs: dict[str, torch.Tensor] = {}

    def listen(record: PendingRecord, x: torch.Tensor) -> None:
        kept = x.detach().clone()
        (outputs if record.phase == "out" else inputs).setdefault(record.point.name, kept)

    ids = [int(i) for i in run.ids]
    device = model_device(model)
    dtype = next(model.parameters(), torch.empty(0)).dtype
    start = 0
    with Interventions(model) as active, torch.inference_mode():
        for spec in run.interventions:
            active.add(spec)
        with Probes(model, leaves=leaves, inputs=True, listener=listen) as probes:
            if run.kv_cache:
                make = getattr(model, "make_kv_cache", None)
                if not callable(make) or len(ids) < 2:
                    raise CompareError(
                        f"run {run.label}: KV-cached decoding needs a model with make_kv_cache() "
                        "(the built-in families) and a prompt of at least two tokens"
                    )
                cache = make(1, len(ids))
                probes.run(torch.tensor([ids[:-1]], device=device), kv_cache=cache)
                outputs.clear()
                inputs.clear()
                start = len(ids) - 1
                probes.run(torch.tensor([ids[-1:]], device=device), kv_cache=cache)
            else:
                probes.run(torch.tensor([ids], device=device))
            points = probes.points
    return _Captured(points, outputs, inputs, start, len(ids) - start, dtype)


def _structural_key(point: ProbePoint, ordinal: int, block_prefix: str | None) -> tuple:
    """What a point is, whatever it is called: role, block index, place inside the block."""
    if point.kind == "leaf" and point.layer is not None and block_prefix is not None:
        inner = point.name.removeprefix(block_prefix).split(".", 1)
        return ("leaf", point.layer, inner[1] if len(inner) > 1 else "")
    if point.kind == "resid":
        return ("resid", point.layer, point.name.rsplit(".", 1)[-1])
    if point.layer is not None:
        return (point.kind, point.layer)
    return (point.kind, ordinal)


def _keys(points: list[ProbePoint]) -> dict[tuple, str]:
    blocks = [p for p in points if p.kind == "block"]
    prefix = blocks[0].name.rsplit(".", 1)[0] + "." if blocks else None
    seen: dict[str, int] = {}
    keys: dict[tuple, str] = {}
    for p in points:
        ordinal = seen.get(p.kind, 0)
        seen[p.kind] = ordinal + 1
        keys.setdefault(_structural_key(p, ordinal, prefix), p.name)
    return keys


def match_points(a: list[ProbePoint], b: list[ProbePoint]) -> dict[str, str]:
    """A's probe name -> B's: the same name, else the same structural place."""
    b_names = {p.name for p in b}
    b_keys = _keys(b)
    matched: dict[str, str] = {}
    for key, name in _keys(a).items():
        if name in b_names:
            matched[name] = name
        elif key in b_keys and b_keys[key] not in matched.values():
            matched[name] = b_keys[key]
    return matched


def _positions(a: Run, b: Run) -> list[int]:
    """Absolute token positions both runs compute with the same meaning."""
    ia, ib = [int(i) for i in a.ids], [int(i) for i in b.ids]
    if len(ia) != len(ib):
        short, long_ = sorted((ia, ib), key=len)
        if long_[: len(short)] != short:
            raise CompareError(
                f"run A has {len(ia)} tokens and run B {len(ib)}: runs compare position by "
                "position, so give prompts of the same token length (or one a prefix of the other)"
            )
    return list(range(min(len(ia), len(ib))))


def _timed(x: torch.Tensor, cap: _Captured) -> tuple[torch.Tensor, range] | None:
    """x as (B, T', ...) and the absolute positions its time axis covers: dim 1 is time when
    it has the pass's length ((T, C) tensors such as position embeddings gain a batch axis);
    a time axis of 1 in a longer pass is its last position (a forward keeping only that)."""
    end = cap.start + cap.length
    if x.dim() == 2 and x.size(0) == cap.length:
        x = x.unsqueeze(0)
    if x.dim() < 3 and not (x.dim() == 2 and x.size(1) == cap.length):
        return None
    if x.size(1) == cap.length:
        return x, range(cap.start, end)
    if x.size(1) == 1:
        return x, range(end - 1, end)
    return None


def _aligned(
    xa: torch.Tensor, cap_a: _Captured, xb: torch.Tensor, cap_b: _Captured, positions: list[int]
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The rows of A's and B's tensors at the wanted positions both of them cover."""
    ta, tb = _timed(xa, cap_a), _timed(xb, cap_b)
    if ta is None or tb is None:
        return None
    (xa, ra), (xb, rb) = ta, tb
    common = [p for p in positions if p in ra and p in rb]
    if not common:
        return None
    xa = xa[:, [p - ra.start for p in common]].float()
    xb = xb[:, [p - rb.start for p in common]].float()
    return (xa, xb) if xa.shape == xb.shape else None


def _distances(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[float, float, float]]:
    """(max |Δ|, ‖Δ‖/‖a‖, cosine) per pair, read back in one transfer."""
    if not pairs:
        return []
    rows = []
    for a, b in pairs:
        a, b = a.flatten(), b.to(a.device).flatten()
        d = a - b
        na, nb = a.norm(), b.norm()
        rel = torch.where(na > 0, d.norm() / na, torch.where(d.norm() > 0, torch.inf, 0.0))
        cos = torch.where(
            (na > 0) & (nb > 0), (a @ b) / (na * nb).clamp_min(1e-30), (na == nb).float()
        )
        rows.append(torch.stack([d.abs().max(), rel, cos]).cpu())
    return [tuple(r) for r in torch.stack(rows).tolist()]  # type: ignore[misc]


def compare(
    run_a: Run, run_b: Run, *, leaves: bool = False, tolerance: float | None = None
) -> Comparison:
    """Probe-by-probe distances between two runs, and their first divergence.

    `tolerance` overrides the relative tolerance the dtypes imply (see `TOLERANCES`).
    """
    positions = _positions(run_a, run_b)
    if run_a.kv_cache or run_b.kv_cache:
        positions = positions[-1:]  # a cached decode computes the last position only
    cap_a, cap_b = capture(run_a, leaves), capture(run_b, leaves)
    tol = tolerance if tolerance is not None else tolerance_for(cap_a.dtype, cap_b.dtype)
    matched = match_points(cap_a.points, cap_b.points)
    by_name = {p.name: p for p in cap_a.points}
    names: list[tuple[str, str, int]] = []  # A's name, B's, index of the output pair
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    unmatched: list[str] = []
    in_pairs: dict[str, int] = {}
    for name, out_a in cap_a.outputs.items():
        b_name = matched.get(name, "")
        out_b = cap_b.outputs.get(b_name)
        pair = _aligned(out_a, cap_a, out_b, cap_b, positions) if out_b is not None else None
        if pair is None:
            unmatched.append(name)
            continue
        names.append((name, b_name, len(pairs)))
        pairs.append(pair)
        in_a, in_b = cap_a.inputs.get(name), cap_b.inputs.get(b_name)
        if in_a is not None and in_b is not None:
            pair = _aligned(in_a, cap_a, in_b, cap_b, positions)
            if pair is not None:
                in_pairs[name] = len(pairs)
                pairs.append(pair)
    dist = _distances(pairs)
    input_dist = {name: dist[i] for name, i in in_pairs.items()}
    records = []
    for name, b_name, i in names:
        mx, rel, cos = dist[i]
        p = by_name[name]
        records.append(ProbeDiff(name, b_name, p.kind, p.layer, mx, rel, cos, rel > tol))
    first = _first_divergence(records, input_dist, by_name, tol)
    notes = []
    if cap_a.dtype != cap_b.dtype:
        notes.append(
            f"dtypes differ ({_short(cap_a.dtype)} vs {_short(cap_b.dtype)}): "
            f"tolerance {tol:g} relative"
        )
    return Comparison(tuple(records), first, tol, tuple(positions), tuple(unmatched), tuple(notes))


def _short(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _first_divergence(
    records: list[ProbeDiff],
    input_dist: dict[str, tuple[float, float, float]],
    points: dict[str, ProbePoint],
    tol: float,
) -> Divergence | None:
    first = next((r for r in records if r.diverged), None)
    if first is None:
        return None
    diff = {r.name: r for r in records}
    at = first
    # A module whose input already differs lost it in the code around it: climb to the
    # innermost enclosing module point whose input still agreed.
    if first.name in input_dist and input_dist[first.name][1] > tol:
        parents = [
            n
            for n in input_dist
            if first.name.startswith(n + ".") and input_dist[n][1] <= tol and n in diff
        ]
        if parents:
            at = diff[max(parents, key=len)]
    inp = input_dist.get(at.name)
    input_abs = inp[0] if inp is not None else None
    where = "" if at is first else f" (first seen at {first.name})"
    if inp is None:
        detail = f"its output differs by {at.max_abs_diff:.3g}"
        if points[at.name].virtual:
            detail = f"the stream differs by {at.max_abs_diff:.3g}"
    elif inp[1] <= tol:
        detail = f"its input agrees to {inp[0]:.2g}, its output differs by {at.max_abs_diff:.3g}"
    else:
        detail = (
            f"its input already differs by {inp[0]:.3g} (lost in code between probes), "
            f"its output by {at.max_abs_diff:.3g}"
        )
    message = f"diverges at {at.name}{where}: {detail}"
    return Divergence(at.name, at.max_abs_diff, at.rel_diff, input_abs, first.name, message)
