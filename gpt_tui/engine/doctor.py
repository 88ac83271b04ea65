"""`gpt-tui doctor`: what was detected about a model, one line each, for bug reports."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..models import NanoChatConfig, NanoGPTConfig
from .probes import Probes, find_block_list, find_probe_points

if TYPE_CHECKING:
    from .session import Session


def _architecture(session: Session) -> str:
    config = session.config
    if isinstance(config, NanoChatConfig):
        from ..io.nanochat_eras import era_name

        gqa = (
            f", GQA {config.n_head}/{config.n_kv_head}" if config.n_kv_head < config.n_head else ""
        )
        return f"nanochat, era {era_name(config)}{gqa}, softcap {config.softcap:g}"
    if isinstance(config, NanoGPTConfig):
        return f"nanoGPT (GPT-2 style), bias={config.bias}, dropout={config.dropout:g}"
    return f"{session.family}-like user model ({type(session.model).__name__})"


def _attention_check(session: Session) -> str:
    """Run a short pass capturing layer 0's pattern and report the recomputation error."""
    if session.device.type == "meta":
        return "not checked: the meta device has no values"
    context = session.context_len or 8
    ids = list(range(1, min(8, context, session.vocab_size - 1) + 1))
    idx = torch.tensor([ids], dtype=torch.long, device=session.device)
    try:
        with Probes(session.model, attention_layers=[0]) as probes:
            probes.run(idx)
            pattern = probes.pattern(0)
    except KeyError:
        return "NOT capturable: no attention kernel call was seen in layer 0"
    except Exception as err:  # a user's model can fail in any way; report it, don't crash
        return f"check failed: {type(err).__name__}: {err}"
    # The kernel ran in the model's dtype; the recomputation is fp32.
    tolerance = {torch.float16: 2e-3, torch.bfloat16: 2e-2}.get(session.dtype, 1e-4)
    verdict = "ok" if pattern.max_abs_error <= tolerance else "MISMATCH"
    return (
        f"captured ({verdict}): layer 0, {pattern.weights.shape[0]} heads, "
        f"max |W·V − y| = {pattern.max_abs_error:.2e}"
    )


def diagnose(session: Session) -> list[tuple[str, str]]:
    """(topic, finding) pairs, in the order a bug report reads them."""
    points = find_probe_points(session.model)
    counts = {kind: sum(1 for p in points if p.kind == kind) for kind in ("block", "attn", "mlp")}
    blocks = find_block_list(session.model)
    summary = session.summary()
    tok = session.tokenizer
    info = session.info
    lines = [
        ("model", f"{session.name} ({summary.class_name}) from {session.source}"),
        ("architecture", _architecture(session)),
        ("device", f"{session.device}, {str(session.dtype).removeprefix('torch.')}"),
        (
            "cuda",
            f"available, {torch.cuda.device_count()} device(s)"
            if torch.cuda.is_available()
            else "not available",
        ),
        (
            "parameters",
            f"{summary.total_params:,} ({summary.non_embedding_params:,} non-embedding)",
        ),
        ("blocks", f"{len(blocks[1])} at {blocks[0]}" if blocks else "NOT FOUND"),
        (
            "probes",
            f"{counts['block']} blocks, {counts['attn']} attention, {counts['mlp']} MLP, "
            f"{len(points)} points in all",
        ),
        ("attention", _attention_check(session)),
        ("tokenizer", f"{getattr(tok, 'name', type(tok).__name__)}, {tok.vocab_size} tokens"),
        ("torch", torch.__version__),
    ]
    for key in ("attention_kernel", "model_file", "tokenizer_source", "tokenizer_note", "note"):
        if info.get(key):
            lines.append((key.replace("_", " "), str(info[key])))
    for key in ("iter_num", "step", "best_val_loss", "val_loss"):
        value = info.get(key)
        if value is not None:
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            lines.append((key.replace("_", " "), shown))
    lines += [("note", note) for note in session.notes]
    return lines
