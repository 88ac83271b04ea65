"""Logit lens: the residual stream after every block, read out as if it were the last.

Each block's output goes through what the model does after its last block (its
`logits_from_residual`: nanoGPT's `ln_f` and `lm_head`; nanochat's RMS norm, head and
softcap; a user's file worked out by `model_access.logits_from_residual`), so the last
layer's lens is the model's output and the earlier layers show how the prediction forms.
When the model does more after its last block (nanochat's backout), the result's note
says how far the last layer is from the output. Blocks are found by structure, as the
probes find them, and observed with forward hooks (removed afterwards).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from gpt_tui.engine.core.model_access import (
    UnsupportedModelError,
    crop_to_context,
    find_block_list,
    last_position_logits,
    logits_from_residual,
    model_context_len,
    model_device,
    usable_vocab_size,
)
from gpt_tui.engine.generation.sampling import Tokenizer, check_token_ids, token_label


class LensNotSupportedError(UnsupportedModelError):
    """The model has no list of transformer blocks for the lens to read."""


@dataclass(frozen=True)
class LensToken:
    token_id: int
    label: str
    prob: float  # softmax of this layer's decoded logits
    logit: float


@dataclass(frozen=True)
class LensLayer:
    """The lens at one point of the residual stream."""

    layer: int  # block index; -1 for the embedding (the input to block 0)
    name: str  # the block's path, e.g. `transformer.h.3`; `<block 0>.resid_pre` for the embedding
    tokens: tuple[LensToken, ...]  # top-k, most likely first
    entropy: float  # nats
    final_rank: int  # rank here of the model's own top prediction (0 = top)
    final_prob: float  # probability here of the model's own top prediction


@dataclass(frozen=True)
class LensResult:
    position: int  # the position read out (non-negative, in the tokens actually used)
    token_id: int  # the input token at that position
    token_label: str
    layers: tuple[LensLayer, ...]  # embedding first (if asked), then every block
    note: str | None = None  # e.g. the prompt was cropped to the context


def find_blocks(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(path, module) of every transformer block, in order, found by structure as the
    probes find them (the largest ModuleList of one repeated class)."""
    found = find_block_list(model)
    if found is None:
        raise LensNotSupportedError(
            "not supported for this model: no list of repeated transformer blocks found"
        )
    path, blocks = found
    return [(f"{path}.{i}", block) for i, block in enumerate(blocks)]


@torch.inference_mode()
def lens_logits(
    model: torch.nn.Module, idx: torch.Tensor, include_embedding: bool = True
) -> torch.Tensor:
    """Decoded logits at every layer for idx (1, T): (L, T, V), or (L+1, T, V) with the embedding.

    One ordinary forward pass; hooks copy each block's output and, for the embedding, the
    input of block 0.
    """
    _, residuals, _ = _lens_pass(model, idx, include_embedding)
    return logits_from_residual(model, residuals)  # (L, T, V)


def _lens_pass(
    model: torch.nn.Module, idx: torch.Tensor, include_embedding: bool
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Layer names, the residual stream at each (L, T, C), and the model's own logits at
    the last position (V,)."""
    blocks = find_blocks(model)
    names = [name for name, _ in blocks]
    residuals: list[torch.Tensor] = []  # each (1, T, C)
    handles = []
    if include_embedding:
        names.insert(0, f"{names[0]}.resid_pre")
        handles.append(
            blocks[0][1].register_forward_pre_hook(lambda _m, args: residuals.append(args[0]))
        )
    for _, block in blocks:
        handles.append(
            block.register_forward_hook(
                lambda _m, _a, out: residuals.append(out[0] if isinstance(out, tuple) else out)
            )
        )
    try:
        output = last_position_logits(model(idx))  # (V,)
    finally:
        for handle in handles:
            handle.remove()
    return names, torch.cat(residuals), output  # (L, T, C) from L tensors (1, T, C)


def _output_gap_note(decoded_last: torch.Tensor, output: torch.Tensor) -> str | None:
    """A note when the last block's lens is not the model's output (beyond rounding)."""
    gap = float((decoded_last.float() - output.float()).abs().max())
    if gap <= 1e-3 * max(1.0, float(output.float().abs().max())):
        return None
    return (
        f"the last block's lens differs from the model's output by up to {gap:.3g} in a logit: "
        "the model does more after its last block than its head (nanochat's backout does)"
    )


def logit_lens(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    ids: Sequence[int],
    position: int = -1,
    k: int = 10,
    include_embedding: bool = True,
) -> LensResult:
    """Top-k tokens per layer at one position of the prompt `ids` (default: the last)."""
    ids = [int(i) for i in ids]
    if not ids:
        raise ValueError("the logit lens needs at least one token")
    check_token_ids(ids, usable_vocab_size(model, tokenizer))
    ids, note = crop_to_context(ids, model_context_len(model))
    if not -len(ids) <= position < len(ids):
        raise ValueError(f"position {position} is outside the {len(ids)} tokens of the prompt")
    position %= len(ids)
    idx = torch.tensor([ids], dtype=torch.long, device=model_device(model))
    with torch.inference_mode():
        names, residuals, output = _lens_pass(model, idx, include_embedding)
        # Only the position asked for and the last one (to check against the output).
        decoded = logits_from_residual(model, residuals[:, [position, -1]])  # (L, 2, V)
    logits = decoded[:, 0].float()  # (L, V)
    gap = _output_gap_note(decoded[-1, 1], output)
    note = "; ".join(n for n in (note, gap) if n) or None
    probs = torch.softmax(logits, dim=-1)
    final = int(torch.argmax(logits[-1]))
    top = torch.topk(probs, min(k, probs.size(-1)), dim=-1)
    ranks = (probs > probs[:, final : final + 1]).sum(dim=-1)  # (L,)
    entropy = torch.special.entr(probs).sum(dim=-1)
    # One host transfer per quantity, not per layer.
    top_ids, top_probs = top.indices.tolist(), top.values.tolist()
    top_logits = torch.gather(logits, 1, top.indices).tolist()
    ranks_l, final_probs, entropy_l = ranks.tolist(), probs[:, final].tolist(), entropy.tolist()
    first = -1 if include_embedding else 0
    layers = []
    for row in range(logits.size(0)):
        layer = first + row
        layers.append(
            LensLayer(
                layer=layer,
                name=names[row],
                tokens=tuple(
                    LensToken(i, token_label(tokenizer, i), p, lg)
                    for i, p, lg in zip(top_ids[row], top_probs[row], top_logits[row], strict=True)
                ),
                entropy=entropy_l[row],
                final_rank=ranks_l[row],
                final_prob=final_probs[row],
            )
        )
    return LensResult(
        position=position,
        token_id=ids[position],
        token_label=token_label(tokenizer, ids[position]),
        layers=tuple(layers),
        note=note,
    )
