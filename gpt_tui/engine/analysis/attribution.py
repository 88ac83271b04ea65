"""Direct logit attribution: which parts of the model write a token's logit at a position.

The residual stream the head reads is a sum: the embeddings, then what each block's
attention and MLP add. Freezing the final norm's scale at its value on the full residual
makes the head linear in that sum, so each part's share of logit(answer) - logit(wrong)
(or of logit(answer) alone) is its vector through the frozen norm, dotted with the
difference of the two unembedding rows. The shares sum to the pre-softcap logit
difference; `Attribution.total` and `.logit_diff` show that they do.

- nanoGPT style (a final LayerNorm `ln_f`): each part is centred, divided by the frozen
  standard deviation and scaled by ln_f's weight; ln_f's bias is a part of its own.
- nanochat style (a parameter-free RMS norm): each part is divided by the frozen RMS.
- heads: each head's slice of the attention output before `c_proj`, times its columns of
  `c_proj`; `c_proj`'s bias is a part of its own.
- nanochat's later eras: `resid_lambdas` scale everything before block i (the parts are
  scaled alike), `x0_lambdas` add the normed embedding x0 again (one part, "x0 lambdas"),
  value embeddings enter through v (split from each head's share by running the attention
  again without them: attention weights do not depend on v; the attention's `ve` argument,
  by keyword or by position, so a nanochat gpt.py splits as the built-in model does),
  backout subtracts a multiple of the residual after the middle layer (the parts are
  scaled alike).

What a block adds beyond its attention and MLP (or anything else the reading above does
not know) lands in "remainder", with a note saying where.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ...errors import GptTuiError
from ..core.model_access import logits_from_residual, model_device, output_logits, unwrap_model
from .probe_points import find_probe_points, first_tensor

RESIDUAL_TOLERANCE = 1e-4  # relative mismatch of the tracked residual that earns a note


class AttributionError(GptTuiError, ValueError):
    """Attribution cannot be done for this model or these arguments."""


@dataclass(frozen=True)
class Component:
    name: str  # "embedding", "L0 head 3", "L0 mlp", "ln_f bias", "remainder", ...
    kind: str  # embedding, head, attn_bias, value_embeds, mlp, x0, norm_bias, head_bias, remainder
    value: float


@dataclass(frozen=True)
class Attribution:
    position: int
    answer: int
    wrong: int | None
    logit_diff: float  # pre-softcap, from the full residual through the model's own head
    total: float  # the sum of the components
    model_logit_diff: float  # what the model output (after any softcap)
    components: tuple[Component, ...]  # in the order they enter the residual stream
    notes: tuple[str, ...] = ()

    def ranked(self) -> list[Component]:
        return sorted(self.components, key=lambda c: -abs(c.value))


@dataclass
class _Layer:
    block: nn.Module
    attn: nn.Module | None
    mlp: nn.Module | None


def _layers(model: nn.Module) -> list[_Layer]:
    found: dict[int, _Layer] = {}
    for p in find_probe_points(model):
        if p.layer is None or p.module is None:
            continue
        if p.kind == "block":
            found[p.layer] = _Layer(p.module, None, None)
        elif p.kind in ("attn", "mlp") and p.layer in found:
            setattr(found[p.layer], p.kind, p.module)
    if not found:
        raise AttributionError("attribution needs a model with transformer blocks; found none")
    return [found[i] for i in sorted(found)]


class _Recorder:
    """Hooks that keep what each block takes and gives, and what its parts give."""

    def __init__(self, layers: list[_Layer], embeddings: dict[str, nn.Module]) -> None:
        self.seen: dict[tuple[str, Any], Any] = {}
        self.handles = []
        for name, module in embeddings.items():
            self._post(module, ("embedding", name))
        for i, layer in enumerate(layers):
            self._pre(layer.block, ("block_in", i))
            self._post(layer.block, ("block_out", i))
            if layer.attn is not None:
                self._pre(layer.attn, ("attn_call", i), whole=True)
                self._post(layer.attn, ("attn_out", i))
                proj = _head_proj(layer.attn)
                if proj is not None:
                    self._pre(proj, ("heads", i))
            if layer.mlp is not None:
                self._post(layer.mlp, ("mlp_out", i))

    def _pre(self, module: nn.Module, key: tuple[str, Any], whole: bool = False) -> None:
        def hook(_m, args, kwargs):
            self.seen.setdefault(key, (args, kwargs) if whole else first_tensor(args or kwargs))

        self.handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))

    def _post(self, module: nn.Module, key: tuple[str, Any]) -> None:
        def hook(_m, _args, out):
            self.seen.setdefault(key, first_tensor(out))

        self.handles.append(module.register_forward_hook(hook))

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _head_proj(attn: nn.Module) -> nn.Linear | None:
    proj = getattr(attn, "c_proj", None)
    if isinstance(proj, nn.Linear) and isinstance(getattr(attn, "n_head", None), int):
        return proj
    return None


class _Residual:
    """The residual stream at one position as named parts (fp32 vectors)."""

    def __init__(self) -> None:
        self.parts: dict[str, tuple[str, torch.Tensor]] = {}

    def add(self, name: str, kind: str, v: torch.Tensor) -> None:
        old = self.parts.get(name)
        self.parts[name] = (kind, v if old is None else old[1] + v)

    def scale(self, s: torch.Tensor | float) -> None:
        self.parts = {n: (k, v * s) for n, (k, v) in self.parts.items()}

    def total(self) -> torch.Tensor:
        return torch.stack([v for _, v in self.parts.values()]).sum(0)


def _lambda(model: nn.Module, name: str, i: int) -> torch.Tensor | None:
    value = getattr(model, name, None)
    return value[i].float() if isinstance(value, torch.Tensor) else None


def attribute(
    model: nn.Module,
    ids: Sequence[int],
    answer: int,
    wrong: int | None = None,
    position: int = -1,
) -> Attribution:
    """Direct logit attribution of logit(answer) [- logit(wrong)] at `position` of `ids`."""
    model = unwrap_model(model)
    T = len(ids)
    t = position + T if position < 0 else position
    if not 0 <= t < T:
        raise AttributionError(f"--position {position} is outside the prompt's {T} tokens")
    head = getattr(model, "lm_head", None)
    if not isinstance(head, nn.Linear):
        raise AttributionError("attribution needs the model's head as a Linear named lm_head")
    layers = _layers(model)
    embeddings = {
        p.name: p.module
        for p in find_probe_points(model)
        if p.kind == "embedding" and p.module is not None
    }
    recorder = _Recorder(layers, embeddings)
    idx = torch.tensor([list(ids)], device=model_device(model))
    try:
        with torch.inference_mode():
            logits = output_logits(model(idx))
    finally:
        recorder.close()
    seen = recorder.seen
    notes: list[str] = []
    with torch.inference_mode():
        stream = _decompose(model, layers, seen, t, notes)
        x_final = stream.total()
        u = head.weight[answer].float()
        if wrong is not None:
            u = u - head.weight[wrong].float()
        parts, constant, logit_diff = _through_head(model, head, x_final, stream, u, answer, wrong)
        last = logits[0, t if logits.size(1) == T else -1].float()
        model_diff = float(last[answer] - (last[wrong] if wrong is not None else 0.0))
        if logits.size(1) == T or t == T - 1:
            again = logits_from_residual(model, x_final.to(head.weight.dtype)[None, None])
            read = float(again[0, 0, answer] - (again[0, 0, wrong] if wrong is not None else 0))
            if abs(read - model_diff) > RESIDUAL_TOLERANCE * max(1.0, abs(model_diff)):
                notes.append(
                    f"the model's own logits differ from the residual read here ({model_diff:.4g}"
                    f" against {read:.4g}): its forward does something after the last block "
                    "that attribution does not know"
                )
    comps = [Component(n, k, float(v)) for n, (k, v) in parts.items()]
    comps += [Component(n, k, float(v)) for n, k, v in constant]
    total = sum(c.value for c in comps)
    return Attribution(t, answer, wrong, logit_diff, total, model_diff, tuple(comps), tuple(notes))


def _decompose(
    model: nn.Module, layers: list[_Layer], seen: dict, t: int, notes: list[str]
) -> _Residual:
    """The final residual at position t, as the parts that wrote it."""
    stream = _Residual()
    x0 = None
    config = getattr(model, "config", None)
    backout_at = getattr(config, "n_layer", 0) // 2 if getattr(config, "backout", False) else None
    snapshot: dict[str, tuple[str, torch.Tensor]] = {}
    for i, layer in enumerate(layers):
        x_in = seen[("block_in", i)][0, t].float()
        lr, lx = _lambda(model, "resid_lambdas", i), _lambda(model, "x0_lambdas", i)
        lambdas = lr is not None and lx is not None
        if i == 0:
            # Before the lambdas, the first block's input is the embedding x0.
            x0 = x_in / (lr + lx) if lambdas else x_in
            _add_embeddings(stream, seen, t, x0)
        if lambdas:
            stream.scale(lr)
            stream.add("x0 lambdas", "x0", lx * x0)
        _check(stream, x_in, f"block {i}'s input", notes)
        _add_attention(model, layer, i, seen, t, stream, notes)
        if layer.mlp is not None:
            stream.add(f"L{i} mlp", "mlp", seen[("mlp_out", i)][0, t].float())
        _check(stream, seen[("block_out", i)][0, t].float(), f"block {i}'s output", notes)
        if i == backout_at:
            snapshot = dict(stream.parts)
    if backout_at is not None and isinstance(getattr(model, "backout_lambda", None), torch.Tensor):
        lam = model.backout_lambda.float()
        for name, (kind, v) in snapshot.items():
            stream.add(name, kind, -lam * v)
    return stream


def _add_embeddings(stream: _Residual, seen: dict, t: int, x0: torch.Tensor) -> None:
    """The embedding tables' outputs when they sum to x0 (nanoGPT: wte + wpe), else x0 whole
    (nanochat normalises the embedding first)."""
    tables = []
    for (kind, name), out in seen.items():
        if kind == "embedding":
            tables.append((name, (out[0, t] if out.dim() == 3 else out[t]).float()))
    tables = [(name, v) for name, v in tables if v.shape == x0.shape]
    if tables:
        total = torch.stack([v for _, v in tables]).sum(0)
        if float((total - x0).norm()) <= RESIDUAL_TOLERANCE * max(float(x0.norm()), 1e-12):
            for name, v in tables:
                stream.add(name, "embedding", v)
            return
    stream.add("embedding", "embedding", x0)


def _check(stream: _Residual, actual: torch.Tensor, where: str, notes: list[str]) -> None:
    """Put what the parts miss of `actual` into the remainder, with a note when it matters."""
    gap = actual - stream.total()
    if float(gap.norm()) > RESIDUAL_TOLERANCE * max(float(actual.norm()), 1e-12):
        notes.append(
            f"{where} is not the sum of the parts read so far (off by {float(gap.norm()):.3g}): "
            "the difference is in the remainder"
        )
        stream.add("remainder", "remainder", gap)


def _add_attention(
    model: nn.Module, layer: _Layer, i: int, seen: dict, t: int, stream: _Residual, notes: list
) -> None:
    if layer.attn is None:
        return
    out = seen[("attn_out", i)][0, t].float()
    proj = _head_proj(layer.attn)
    if proj is None or ("heads", i) not in seen:
        stream.add(f"L{i} attn", "attn", out)
        if i == 0:
            notes.append("heads not split: the attention has no `n_head` and `c_proj`")
        return
    y = seen[("heads", i)][0, t].float()  # (C,) heads side by side
    ve_part = _value_embedding_part(layer.attn, proj, seen[("attn_call", i)], t)
    if ve_part is not None:
        y = y - ve_part
    W = proj.weight.float()  # (C, C)
    n_head = layer.attn.n_head
    hs = W.size(1) // n_head
    for h in range(n_head):
        cols = slice(h * hs, (h + 1) * hs)
        stream.add(f"L{i} head {h}", "head", W[:, cols] @ y[cols])
    if ve_part is not None:
        stream.add(f"L{i} value embeds", "value_embeds", W @ ve_part)
    if proj.bias is not None:
        stream.add(f"L{i} attn bias", "attn_bias", proj.bias.float())


def _value_embedding_part(
    attn: nn.Module, proj: nn.Linear, call: tuple[tuple, dict], t: int
) -> torch.Tensor | None:
    """What value embeddings add to the heads' output at t: the attention run again without
    them, the difference taken (the attention weights do not depend on v)."""
    args, kwargs = call
    try:  # by name: nanochat's Block passes ve by position, gpt-tui's by keyword
        bound = inspect.signature(attn.forward).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return None
    if bound.arguments.get("ve") is None:
        return None
    kept: list[torch.Tensor] = []
    handle = proj.register_forward_pre_hook(lambda _m, a: kept.append(a[0]))
    try:
        attn(*bound.args, **bound.kwargs)
        bound.arguments["ve"] = None
        attn(*bound.args, **bound.kwargs)
    finally:
        handle.remove()
    return (kept[0][0, t] - kept[1][0, t]).float()


def _through_head(
    model: nn.Module,
    head: nn.Linear,
    x: torch.Tensor,
    stream: _Residual,
    u: torch.Tensor,
    answer: int,
    wrong: int | None,
) -> tuple[dict[str, tuple[str, torch.Tensor]], list[tuple[str, str, float]], float]:
    """Each part's share through the frozen final norm, the constant shares, and the
    pre-softcap logit difference computed with the model's own norm and head."""
    ln_f = getattr(getattr(model, "transformer", None), "ln_f", None)
    constant: list[tuple[str, str, float]] = []
    if isinstance(ln_f, nn.Module):
        eps = float(getattr(ln_f, "eps", 1e-5))
        sigma = torch.sqrt(x.var(unbiased=False) + eps)
        weight = getattr(ln_f, "weight", None)
        w = weight.float() if weight is not None else torch.ones_like(x)
        parts = {n: (k, ((v - v.mean()) / sigma * w) @ u) for n, (k, v) in stream.parts.items()}
        bias = getattr(ln_f, "bias", None)
        if bias is not None:
            constant.append(("ln_f bias", "norm_bias", float(bias.float() @ u)))
        normed = ln_f(x.to(head.weight.dtype)[None])[0]
    else:
        rms = torch.sqrt((x * x).mean() + torch.finfo(torch.float32).eps)
        parts = {n: (k, (v / rms) @ u) for n, (k, v) in stream.parts.items()}
        normed = torch.nn.functional.rms_norm(x, (x.size(-1),)).to(head.weight.dtype)
    if head.bias is not None:
        b = head.bias.float()
        constant.append(
            ("lm_head bias", "head_bias", float(b[answer] - (b[wrong] if wrong is not None else 0)))
        )
    pre = head(normed).float()
    diff = float(pre[answer] - (pre[wrong] if wrong is not None else 0.0))
    return parts, constant, diff
