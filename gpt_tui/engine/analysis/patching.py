"""Activation patching: which activations of a clean run carry its answer into a corrupted one.

Both prompts have the same token length. The clean run's activations are recorded once;
each patched run is the corrupted prompt with some of them put back:

- `resid_pre`: the residual stream entering a block (the block's input), at one position;
- `attn` / `mlp`: the attention or MLP output of a block, at one position;
- `heads`: one head's slice of the attention output before the output projection
  (columns h*hs:(h+1)*hs of `c_proj`'s input, as `HeadScale` ablates it), at every position.

The metric is the answer-minus-wrong logit difference at the last position, normalised so
that the clean run scores 1 and the corrupted run 0. A sweep runs its patched passes as the
rows of batched forwards (a row is one patched run; rows never mix), so a whole layer x
position sweep costs about as much as that many single forwards, usually less.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn as nn

from ...errors import GptTuiError, describe_error
from ...io.tokenizers import WHITESPACE_GLYPHS
from ..core.model_access import model_device, output_logits, unwrap_model
from .probe_points import find_probe_points, first_tensor

What = Literal["resid_pre", "attn", "mlp", "heads"]
WHATS: tuple[What, ...] = ("resid_pre", "attn", "mlp", "heads")
LOGITS_BUDGET = 128 * 2**20  # bytes of logits one batched forward may hold


class PatchError(GptTuiError, ValueError):
    """The patching asked for cannot be done on these prompts or this model."""


@dataclass(frozen=True)
class Patch:
    """Put the clean run's `what` of block `layer` back, at `position` (None = all) and for
    head `head` (heads only)."""

    what: What
    layer: int
    position: int | None = None
    head: int | None = None


@dataclass(frozen=True)
class PatchSweep:
    """Normalised logit differences: `values[i][j]` for layer `layers[i]` and column j, a
    token position (resid_pre, attn, mlp) or a head (heads)."""

    what: What
    layers: tuple[int, ...]
    columns: tuple[int, ...]
    values: tuple[tuple[float, ...], ...]
    clean_diff: float  # answer-minus-wrong logit difference of the clean run
    corrupted_diff: float


@dataclass(frozen=True)
class _Sites:
    """Where each kind of activation lives: per layer, the module and how it is reached."""

    blocks: list[nn.Module]
    attns: list[nn.Module]
    mlps: list[nn.Module]

    def module(self, what: What, layer: int) -> nn.Module:
        if what == "resid_pre":
            return self.blocks[layer]
        if what == "mlp":
            return self.mlps[layer]
        attn = self.attns[layer]
        return _out_proj(attn) if what == "heads" else attn


def _out_proj(attn: nn.Module) -> nn.Linear:
    proj = getattr(attn, "c_proj", None)
    if not isinstance(proj, nn.Linear) or not isinstance(getattr(attn, "n_head", None), int):
        raise PatchError(
            "head patching needs attention modules with an `n_head` attribute and an output "
            "projection `c_proj` (as nanoGPT and nanochat have); patch attn instead"
        )
    return proj


def _sites(model: nn.Module) -> _Sites:
    points = find_probe_points(model)
    by_kind: dict[str, dict[int, nn.Module]] = {"block": {}, "attn": {}, "mlp": {}}
    for p in points:
        if p.kind in by_kind and p.layer is not None and p.module is not None:
            by_kind[p.kind].setdefault(p.layer, p.module)
    n = len(by_kind["block"])
    if n == 0:
        raise PatchError("patching needs a model with transformer blocks; found none")
    found = [[by_kind[k].get(i) for i in range(n)] for k in ("block", "attn", "mlp")]
    return _Sites(*found)  # type: ignore[arg-type]


GLYPH_CHARACTERS = {glyph: char for char, glyph in WHITESPACE_GLYPHS.items()}


def one_token(tokenizer: Any, vocab_size: int, text: str, what: str) -> int:
    """The id of the one token `text` is, or a one-line error saying what it is instead.
    A glyph the tables draw for whitespace (␣ ⏎ ⇥ ␍), alone and not a token itself, is
    read as that character: what a user copies from a table."""
    from ..generation.sampling import token_label

    def encode(text: str) -> list[int] | GptTuiError:
        try:
            return tokenizer.encode(text)
        except GptTuiError as err:
            return err

    ids = encode(text)
    if text in GLYPH_CHARACTERS and (isinstance(ids, GptTuiError) or len(ids) != 1):
        text = GLYPH_CHARACTERS[text]
        ids = encode(text)
    if isinstance(ids, GptTuiError):
        raise PatchError(f"{what} {text!r}: {describe_error(ids)}") from None
    if len(ids) != 1:
        parts = ", ".join(repr(token_label(tokenizer, i)) for i in ids[:6])
        raise PatchError(
            f"{what} {text!r} is {len(ids)} tokens ({parts}), not one: give a single token "
            "(with its leading space, if the tokenizer has one)"
        )
    if ids[0] >= vocab_size:
        raise PatchError(f"{what} {text!r} is token {ids[0]}, outside the model's vocabulary")
    return ids[0]


def _uses_input(what: What) -> bool:
    """resid_pre and heads replace a module's input; attn and mlp its output."""
    return what in ("resid_pre", "heads")


def logit_diff(logits: Any, answer: int, wrong: int) -> torch.Tensor:
    """(B,) answer-minus-wrong logit difference at the last position, in fp32."""
    last = output_logits(logits)[:, -1].float()  # (B, V)
    return last[:, answer] - last[:, wrong]


def _ids(model: nn.Module, ids: Sequence[int], rows: int = 1) -> torch.Tensor:
    return torch.tensor([list(ids)], device=model_device(model)).expand(rows, -1)


def record_clean(
    model: nn.Module, ids: Sequence[int], whats: Sequence[What], sites: _Sites
) -> tuple[dict[tuple[What, int], torch.Tensor], float]:
    """The clean run's activations (what, layer) -> (1, T, ...), and the run's output."""
    kept: dict[tuple[What, int], torch.Tensor] = {}
    handles = []
    for what in whats:
        for layer in range(len(sites.blocks)):
            module = sites.module(what, layer)
            if module is None:
                raise PatchError(f"block {layer} has no {what} module to patch")
            key = (what, layer)
            if _uses_input(what):

                def pre(_m, args, kwargs, key=key):
                    kept[key] = first_tensor(args or kwargs).detach().clone()

                handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
            else:

                def post(_m, _args, out, key=key):
                    kept[key] = first_tensor(out).detach().clone()

                handles.append(module.register_forward_hook(post))
    try:
        with torch.inference_mode():
            out = model(_ids(model, ids))
    finally:
        for h in handles:
            h.remove()
    return kept, out


def _head_slice(sites: _Sites, layer: int, head: int) -> slice:
    attn = sites.attns[layer]
    n_head = attn.n_head
    if not 0 <= head < n_head:
        raise PatchError(f"head {head} is out of range: layer {layer} has {n_head} heads")
    hs = _out_proj(attn).in_features // n_head
    return slice(head * hs, (head + 1) * hs)


def _apply(x: torch.Tensor, row: int, patch: Patch, clean: torch.Tensor, sites: _Sites) -> None:
    """Write the clean activation into row `row` of x (B, T, ...), in place."""
    pos = slice(None) if patch.position is None else patch.position
    if patch.head is None:
        x[row, pos] = clean[0, pos]
    else:
        cols = _head_slice(sites, patch.layer, patch.head)
        x[row, pos, cols] = clean[0, pos, cols]


def _run_rows(
    model: nn.Module,
    corrupt: Sequence[int],
    rows: Sequence[Sequence[Patch]],
    clean: dict[tuple[What, int], torch.Tensor],
    sites: _Sites,
    answer: int,
    wrong: int,
) -> torch.Tensor:
    """Logit differences of one batched forward: row r is the corrupted run with rows[r]."""
    at: dict[tuple[What, int], list[tuple[int, Patch]]] = {}
    for r, patches in enumerate(rows):
        for patch in patches:
            at.setdefault((patch.what, patch.layer), []).append((r, patch))
    handles = []
    for key, todo in at.items():
        what, layer = key
        module = sites.module(what, layer)

        def patched(x: torch.Tensor, key=key, todo=todo) -> torch.Tensor:
            x = x.clone()
            for r, patch in todo:
                _apply(x, r, patch, clean[key], sites)
            return x

        if _uses_input(what):

            def pre(_m, args, kwargs, patched=patched):
                if args:
                    return (patched(args[0]), *args[1:]), kwargs
                name = next(iter(kwargs))
                return args, {**kwargs, name: patched(kwargs[name])}

            handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        else:

            def post(_m, _args, out, patched=patched):
                if isinstance(out, tuple):
                    return (patched(out[0]), *out[1:])
                return patched(out)

            handles.append(module.register_forward_hook(post))
    try:
        with torch.inference_mode():
            return logit_diff(model(_ids(model, corrupt, len(rows))), answer, wrong)
    finally:
        for h in handles:
            h.remove()


class Patcher:
    """A clean and a corrupted prompt of one model, ready to patch between.

    Args:
        model: the model (any interventions active on it apply to every run).
        clean / corrupted: token ids, the same number of them.
        answer / wrong: token ids; the metric is logit(answer) - logit(wrong).
        whats: the kinds of activation to record from the clean run.
    """

    def __init__(
        self,
        model: nn.Module,
        clean: Sequence[int],
        corrupted: Sequence[int],
        answer: int,
        wrong: int,
        whats: Sequence[What] = WHATS,
    ) -> None:
        if len(clean) != len(corrupted):
            raise PatchError(
                f"the clean prompt has {len(clean)} tokens and the corrupted one "
                f"{len(corrupted)}: patching needs prompts of the same token length"
            )
        if answer == wrong:
            raise PatchError("--answer and --wrong are the same token: give two different ones")
        self.model = unwrap_model(model)
        self.clean_ids, self.corrupted_ids = list(clean), list(corrupted)
        self.answer, self.wrong = answer, wrong
        self.sites = _sites(self.model)
        self.n_layer = len(self.sites.blocks)
        if "heads" in whats:
            _out_proj(self.sites.attns[0])
        self.clean, out = record_clean(self.model, self.clean_ids, whats, self.sites)
        self.clean_diff = float(logit_diff(out, answer, wrong)[0])
        self.vocab = output_logits(out).size(-1)
        with torch.inference_mode():
            corrupted_out = self.model(_ids(self.model, self.corrupted_ids))
        self.corrupted_diff = float(logit_diff(corrupted_out, answer, wrong)[0])
        if abs(self.clean_diff - self.corrupted_diff) < 1e-6 * max(1.0, abs(self.clean_diff)):
            raise PatchError(
                f"the clean and corrupted prompts give the same logit difference "
                f"({self.clean_diff:.4g}): nothing to recover; choose prompts whose answer differs"
            )

    def normalise(self, diffs: torch.Tensor) -> list[float]:
        span = self.clean_diff - self.corrupted_diff
        return ((diffs - self.corrupted_diff) / span).tolist()

    def effects(self, rows: Sequence[Sequence[Patch]]) -> list[float]:
        """The normalised metric of each row: a row is one patched run with all its patches."""
        vocab_row = max(1, len(self.clean_ids) * self.vocab * 4)
        per_batch = max(1, LOGITS_BUDGET // vocab_row)
        out: list[float] = []
        for start in range(0, len(rows), per_batch):
            chunk = rows[start : start + per_batch]
            diffs = _run_rows(
                self.model, self.corrupted_ids, chunk, self.clean, self.sites,
                self.answer, self.wrong,
            )  # fmt: skip
            out.extend(self.normalise(diffs.cpu()))
        return out

    def sweep(self, what: What) -> PatchSweep:
        """Every layer x position (resid_pre, attn, mlp) or layer x head (heads)."""
        if what not in WHATS:
            raise PatchError(f"unknown patch site {what!r}: use {', '.join(WHATS)}")
        layers = tuple(range(self.n_layer))
        if what == "heads":
            cols = tuple(range(self.sites.attns[0].n_head))
            rows = [[Patch(what, layer, None, h)] for layer in layers for h in cols]
        else:
            cols = tuple(range(len(self.clean_ids)))
            rows = [[Patch(what, layer, p)] for layer in layers for p in cols]
        flat = self.effects(rows)
        n = len(cols)
        values = tuple(tuple(flat[i * n : (i + 1) * n]) for i in range(len(layers)))
        return PatchSweep(what, layers, cols, values, self.clean_diff, self.corrupted_diff)
