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
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn as nn

from ...errors import GptTuiError
from ..core.model_access import model_device, unwrap_model
from .interventions import Interventions, InterventionSpec
from .probe_points import MODEL_OUTPUT, ProbePoint, find_probe_points, first_tensor

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
    tokens: Sequence[str] | None = None  # the ids as text, to name a token the runs differ in


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
    token_position: int | None = None  # the first position where the runs' token ids differ


@dataclass(frozen=True)
class Comparison:
    records: tuple[ProbeDiff, ...]  # A's execution order
    first_divergence: Divergence | None
    tolerance: float
    positions: tuple[int, ...]  # token positions compared (A's numbering)
    unmatched: tuple[str, ...] = ()  # A's probes with no counterpart in B
    notes: tuple[str, ...] = field(default_factory=tuple)
    # with `inputs`: ‖Δ‖/‖a‖ of every module's input, by A's name
    input_rel: dict[str, float] = field(default_factory=dict)


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


class _Keeper:
    """Hooks that keep a copy of each probe point's input and output in one pass.

    The virtual points are what Probes records: a block's input is its `resid_pre`, its
    output its `resid_post`, and `resid_mid` is the block input plus the attention output.
    """

    def __init__(self, model: nn.Module, points: list[ProbePoint]) -> None:
        self.outputs: dict[str, torch.Tensor] = {}  # insertion order = execution order
        self.inputs: dict[str, torch.Tensor] = {}
        names = {p.name for p in points}
        self.handles = [model.register_forward_hook(self._root)]
        for p in points:
            if p.module is None:
                continue
            parent = p.name.rsplit(".", 1)[0]
            virtual = {
                "pre": f"{p.name}.resid_pre" if p.kind == "block" else None,
                "post": f"{p.name}.resid_post" if p.kind == "block" else None,
                "mid": f"{parent}.resid_mid" if p.kind == "attn" else None,
            }
            virtual = {k: v for k, v in virtual.items() if v in names}
            pre, post = self._hooks(p.name, parent, virtual)
            self.handles.append(p.module.register_forward_pre_hook(pre, with_kwargs=True))
            self.handles.append(p.module.register_forward_hook(post))

    def _hooks(self, name: str, parent: str, virtual: dict[str, str]):
        def pre(_m: nn.Module, args: tuple, kwargs: dict) -> None:
            x = first_tensor(args) if args else first_tensor(kwargs)
            if x is not None and name not in self.inputs:
                kept = self.inputs[name] = x.detach().clone()
                if "pre" in virtual:
                    self.outputs.setdefault(virtual["pre"], kept)

        def post(_m: nn.Module, _args: tuple, out: Any) -> None:
            y = first_tensor(out)
            if y is None or name in self.outputs:
                return
            kept = self.outputs[name] = y.detach().clone()
            if "post" in virtual:
                self.outputs.setdefault(virtual["post"], kept)
            x = self.inputs.get(parent)
            if "mid" in virtual and x is not None and x.shape == kept.shape:
                self.outputs.setdefault(virtual["mid"], x + kept)

        return pre, post

    def _root(self, _m: nn.Module, _args: tuple, out: Any) -> None:
        y = first_tensor(out)
        if y is not None:
            self.outputs.setdefault(MODEL_OUTPUT, y.detach().clone())

    def clear(self) -> None:
        self.outputs.clear()
        self.inputs.clear()

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def capture(run: Run, leaves: bool = False) -> _Captured:
    """Every probe's input and output in one pass of `run` (the decode pass with a cache)."""
    model = unwrap_model(run.model)
    ids = [int(i) for i in run.ids]
    device = model_device(model)
    dtype = next(model.parameters(), torch.empty(0)).dtype
    points = find_probe_points(model, leaves=leaves)
    start = 0
    with Interventions(model) as active, torch.inference_mode():
        for spec in run.interventions:
            active.add(spec)
        keeper = _Keeper(model, points)  # after the interventions: it sees what they made
        try:
            if run.kv_cache:
                make = getattr(model, "make_kv_cache", None)
                if not callable(make) or len(ids) < 2:
                    raise CompareError(
                        f"run {run.label}: KV-cached decoding needs a model with make_kv_cache() "
                        "(the built-in families) and a prompt of at least two tokens"
                    )
                cache = make(1, len(ids))
                model(torch.tensor([ids[:-1]], device=device), kv_cache=cache)
                keeper.clear()
                start = len(ids) - 1
                model(torch.tensor([ids[-1:]], device=device), kv_cache=cache)
            else:
                model(torch.tensor([ids], device=device))
        finally:
            keeper.close()
    return _Captured(points, keeper.outputs, keeper.inputs, start, len(ids) - start, dtype)


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
    if common != list(ra):  # whole tensors need no copy
        xa = xa[:, [p - ra.start for p in common]]
    if common != list(rb):
        xb = xb[:, [p - rb.start for p in common]]
    return (xa.float(), xb.float()) if xa.shape == xb.shape else None


def _distances(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[float, float, float]]:
    """(max |Δ|, ‖Δ‖/‖a‖, cosine) per pair, read back in one transfer. Pairs of one size are
    stacked and reduced together: a pass has a hundred probes, and a handful of small
    kernels for each would cost more than the forward."""
    if not pairs:
        return []
    groups: dict[int, list[int]] = {}
    for i, (x, _) in enumerate(pairs):
        groups.setdefault(x.numel(), []).append(i)
    device = pairs[0][0].device
    out = torch.zeros(len(pairs), 3, device=device)
    for members in groups.values():
        a = torch.stack([pairs[i][0].flatten() for i in members])  # (n, N)
        b = torch.stack([pairs[i][1].to(device).flatten() for i in members])  # (n, N)
        d = a - b
        dn, an, bn = d.norm(dim=1), a.norm(dim=1), b.norm(dim=1)
        inf = torch.full_like(dn, torch.inf)
        rel = torch.where(an > 0, dn / an.clamp_min(1e-30), torch.where(dn > 0, inf, 0.0))
        both = (an > 0) & (bn > 0)
        cos = torch.where(both, (a * b).sum(1) / (an * bn).clamp_min(1e-30), (an == bn).float())
        out[members] = torch.stack([d.abs().amax(1), rel, cos], 1)
    return [tuple(r) for r in out.cpu().tolist()]  # type: ignore[misc]


def compare(
    run_a: Run,
    run_b: Run,
    *,
    leaves: bool = False,
    tolerance: float | None = None,
    inputs: bool = False,
) -> Comparison:
    """Probe-by-probe distances between two runs, and their first divergence.

    `tolerance` overrides the relative tolerance the dtypes imply (see `TOLERANCES`);
    `inputs` also measures every module's input (`Comparison.input_rel`).
    """
    positions = _positions(run_a, run_b)
    if run_a.kv_cache or run_b.kv_cache:
        positions = positions[-1:]  # a cached decode computes the last position only
    cap_a, cap_b = capture(run_a, leaves), capture(run_b, leaves)
    tol = tolerance if tolerance is not None else tolerance_for(cap_a.dtype, cap_b.dtype)
    matched = match_points(cap_a.points, cap_b.points)
    by_name = {p.name: p for p in cap_a.points}
    names: list[tuple[str, str]] = []  # A's name, B's
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    unmatched: list[str] = []
    misshapen: list[str] = []  # matched in B, with a shape that does not line up
    for name, out_a in cap_a.outputs.items():
        b_name = matched.get(name, "")
        out_b = cap_b.outputs.get(b_name)
        pair = _aligned(out_a, cap_a, out_b, cap_b, positions) if out_b is not None else None
        if pair is None:
            unmatched.append(name)
            if out_b is not None:
                misshapen.append(f"{name} is {tuple(out_a.shape)} in A, {tuple(out_b.shape)} in B")
            continue
        names.append((name, b_name))
        pairs.append(pair)
    if not pairs:
        raise CompareError(_nothing_compared(len(unmatched), misshapen))
    # `not rel <= tol`: a NaN distance (a non-finite value in either run) is a divergence,
    # where `rel > tol` would let it pass as agreement.
    records = [
        ProbeDiff(name, b, by_name[name].kind, by_name[name].layer, mx, rel, cos, not rel <= tol)
        for (name, b), (mx, rel, cos) in zip(names, _distances(pairs), strict=True)
    ]
    first = next((r for r in records if r.diverged), None)
    input_dist: dict[str, tuple[float, float, float]] = {}
    if first is not None or inputs:  # by default only the diverged module and its parents
        wanted = [
            (a, b)
            for a, b in names
            if inputs or a == first.name or first.name.startswith(a + ".")  # type: ignore[union-attr]
        ]
        in_names, in_pairs = [], []
        for a_name, b_name in wanted:
            in_a, in_b = cap_a.inputs.get(a_name), cap_b.inputs.get(b_name)
            pair = (
                None
                if in_a is None or in_b is None
                else _aligned(in_a, cap_a, in_b, cap_b, positions)
            )
            if pair is not None:
                in_names.append(a_name)
                in_pairs.append(pair)
        input_dist = dict(zip(in_names, _distances(in_pairs), strict=True))
    divergence = _first_divergence(records, input_dist, by_name, tol)
    token = _first_token_difference(run_a, run_b, positions)
    if divergence is not None and token is not None:
        # The inputs differ by the user's choice: "lost in code between probes" would mislead.
        position, said = token
        d = divergence
        said += f" (from {d.name} on, by up to {d.max_abs_diff:.3g})"
        divergence = replace(d, message=said, token_position=position)
    notes = []
    if cap_a.dtype != cap_b.dtype:
        notes.append(
            f"dtypes differ ({_short(cap_a.dtype)} vs {_short(cap_b.dtype)}): "
            f"tolerance {tol:g} relative"
        )
    return Comparison(
        tuple(records),
        divergence,
        tol,
        tuple(positions),
        tuple(unmatched),
        tuple(notes),
        {name: d[1] for name, d in input_dist.items()} if inputs else {},
    )


def _first_token_difference(a: Run, b: Run, positions: list[int]) -> tuple[int, str] | None:
    """The first position up to the last compared where the runs are given different token
    ids, and a sentence naming it: there the inputs differ by the user's choice, not by code
    (a KV-cached run's earlier tokens count too: they fill its cache)."""
    last = positions[-1] if positions else -1
    ids_a, ids_b = [int(i) for i in a.ids[: last + 1]], [int(i) for i in b.ids[: last + 1]]
    pairs = zip(ids_a, ids_b, strict=True)  # positions are ones both runs have
    at = next((p for p, (x, y) in enumerate(pairs) if x != y), None)
    if at is None:
        return None

    def name(run: Run) -> str:
        return repr(run.tokens[at]) if run.tokens is not None else f"id {int(run.ids[at])}"

    return at, (
        f"the prompts differ at token {at} ({name(a)} vs {name(b)}): every module after it differs"
    )


def _nothing_compared(probes: int, misshapen: list[str]) -> str:
    """Why no probe could be compared, for the one line a user sees instead of a verdict."""
    why = f"{len(misshapen)} differ in shape (e.g. {misshapen[0]})" if misshapen else ""
    lost = probes - len(misshapen)
    why += (", " if why and lost else "") + (f"{lost} have no counterpart in B" if lost else "")
    return (
        f"nothing could be compared: of A's {probes} probes, {why}; diff compares two models "
        "of the same shape (the same n_layer, n_embd and vocabulary)"
    )


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
        # A non-zero input difference agrees only up to the dtype's tolerance: say so.
        within = f" (relative {inp[1]:.1g}, within {tol:g})" if inp[0] else ""
        detail = (
            f"its input agrees to {inp[0]:.2g}{within}, its output differs by {at.max_abs_diff:.3g}"
        )
    else:
        detail = (
            f"its input already differs by {inp[0]:.3g} (lost in code between probes), "
            f"its output by {at.max_abs_diff:.3g}"
        )
    message = f"diverges at {at.name}{where}: {detail}"
    return Divergence(at.name, at.max_abs_diff, at.rel_diff, input_abs, first.name, message)
