"""`gpt-tui doctor`: what was detected about a model, one finding per topic, for bug reports.

Each finding carries a structured value (numbers as numbers, for `--json`) and the line a
person reads.
"""

from __future__ import annotations

import math
import platform
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ...io.model_file import flash_switches
from ...io.tokenizers import describe_tokenizer
from ...models import NanoChatConfig, NanoGPTConfig
from ..core.line_tracer import BACKEND as LINE_BACKEND
from ..core.model_access import find_block_list
from .probe_points import find_probe_points
from .probes import Probes

_LINE_NOTES = {
    "sys.monitoring": "events on breakpoint code only",
    "sys.settrace": "traced only where a breakpoint can run",
}

if TYPE_CHECKING:
    from ..core.session import Session


@dataclass(frozen=True)
class Finding:
    topic: str
    value: Any  # JSON-able: numbers, strings, lists and dicts of them
    text: str  # for people; several lines for a list of notes


def _architecture(session: Session) -> Finding:
    config = session.config
    if isinstance(config, NanoChatConfig):
        from ...io.nanochat_eras import era_name

        era = era_name(config)
        gqa = (
            f", GQA {config.n_head}/{config.n_kv_head}" if config.n_kv_head < config.n_head else ""
        )
        value = dict(
            family="nanochat",
            era=era,
            n_head=config.n_head,
            n_kv_head=config.n_kv_head,
            softcap=config.softcap,
        )
        return Finding(
            "architecture", value, f"nanochat, era {era}{gqa}, softcap {config.softcap:g}"
        )
    if isinstance(config, NanoGPTConfig):
        value = dict(family="nanogpt", bias=config.bias, dropout=config.dropout)
        text = f"nanoGPT (GPT-2 style), bias={config.bias}, dropout={config.dropout:g}"
        return Finding("architecture", value, text)
    cls = type(session.model).__name__
    value = dict(family=session.family, user_model=True, model_class=cls)
    return Finding("architecture", value, f"{session.family}-like user model ({cls})")


def _attention_check(session: Session) -> Finding:
    """Run a short pass capturing layer 0's pattern and report the recomputation error."""

    def failed(reason: str, text: str) -> Finding:
        return Finding("attention", dict(captured=False, reason=reason), text)

    if session.device.type == "meta":
        return failed("meta device", "not checked: the meta device has no values")
    context = session.context_len or 8
    ids = list(range(1, min(8, context, session.vocab_size - 1) + 1))
    idx = torch.tensor([ids], dtype=torch.long, device=session.device)
    try:
        with Probes(session.model, attention_layers=[0]) as probes:
            probes.run(idx)
            pattern = probes.pattern(0)
    except KeyError:
        return failed(
            "no attention kernel call was seen in layer 0",
            "NOT capturable: no attention kernel call was seen in layer 0",
        )
    except Exception as err:  # a user's model can fail in any way; report it, don't crash
        return failed(f"{type(err).__name__}: {err}", f"check failed: {type(err).__name__}: {err}")
    # The kernel ran in the model's dtype; the recomputation is fp32.
    tolerance = {torch.float16: 2e-3, torch.bfloat16: 2e-2}.get(session.dtype, 1e-4)
    ok = pattern.max_abs_error <= tolerance
    heads = int(pattern.weights.shape[0])
    value = dict(captured=True, ok=ok, layer=0, heads=heads, max_abs_error=pattern.max_abs_error)
    text = (
        f"captured ({'ok' if ok else 'MISMATCH'}): layer 0, {heads} heads, "
        f"max |W·V − y| = {pattern.max_abs_error:.2e}"
    )
    return Finding("attention", value, text)


def _kernel(session: Session) -> str | None:
    """The model file's attention kernel; once its `flash` switches are off, the file runs
    its manual softmax path, which is captured whatever the file's flash kernel hides."""
    kernel = session.info.get("attention_kernel")
    if not kernel:
        return None
    switches = flash_switches(session.model)
    if switches and not any(session.model.get_submodule(n).flash for n in switches):
        return f"manual softmax path (`flash` off on {len(switches)} modules): patterns captured"
    return str(kernel)


def diagnose(session: Session) -> list[Finding]:
    """Findings with distinct topics, in the order a bug report reads them."""
    points = find_probe_points(session.model)
    counts = {kind: sum(1 for p in points if p.kind == kind) for kind in ("block", "attn", "mlp")}
    blocks = find_block_list(session.model)
    summary = session.summary()
    tok = session.tokenizer
    info = session.info
    dtype = str(session.dtype).removeprefix("torch.")
    cuda = torch.cuda.is_available()
    n_cuda = torch.cuda.device_count() if cuda else 0
    tok_name = getattr(tok, "name", type(tok).__name__)
    findings = [
        Finding(
            "model",
            dict(name=session.name, model_class=summary.class_name, source=session.source),
            f"{session.name} ({summary.class_name}) from {session.source}",
        ),
        _architecture(session),
        Finding(
            "device", dict(device=str(session.device), dtype=dtype), f"{session.device}, {dtype}"
        ),
        Finding(
            "cuda",
            dict(available=cuda, devices=n_cuda),
            f"available, {n_cuda} device(s)" if cuda else "not available",
        ),
        Finding(
            "parameters",
            dict(
                total=summary.total_params,
                non_embedding=summary.non_embedding_params,
                embedding_tables=list(summary.embedding_params),
            ),
            f"{summary.total_params:,} ({summary.non_embedding_params:,} non-embedding)",
        ),
        Finding(
            "blocks",
            dict(count=len(blocks[1]), path=blocks[0]) if blocks else None,
            f"{len(blocks[1])} at {blocks[0]}" if blocks else "NOT FOUND",
        ),
        Finding(
            "probes",
            dict(
                blocks=counts["block"],
                attention=counts["attn"],
                mlp=counts["mlp"],
                points=len(points),
            ),
            f"{counts['block']} blocks, {counts['attn']} attention, {counts['mlp']} MLP, "
            f"{len(points)} points in all",
        ),
        _attention_check(session),
        Finding(
            "tokenizer",
            dict(name=tok_name, vocab_size=tok.vocab_size),
            describe_tokenizer(tok, session.info.get("tokenizer_source")),
        ),
        Finding("torch", torch.__version__, torch.__version__),
        Finding(
            "line events",
            dict(backend=LINE_BACKEND, python=platform.python_version()),
            f"{LINE_BACKEND}, {_LINE_NOTES[LINE_BACKEND]} (Python {platform.python_version()})",
        ),
    ]
    kernel = _kernel(session)
    if kernel:
        findings.append(Finding("attention kernel", kernel, kernel))
    for key in ("model_file", "tokenizer_source"):
        if info.get(key):
            findings.append(Finding(key.replace("_", " "), str(info[key]), str(info[key])))
    for key in ("iter_num", "step", "best_val_loss", "val_loss"):
        value = info.get(key)
        # Not a loss but "none measured": train.py's inf before its first evaluation, a
        # watch case's nan (a case is one step of a run: it has no validation loss).
        if isinstance(value, float) and not math.isfinite(value):
            continue
        if value is not None:
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            findings.append(Finding(key.replace("_", " "), value, shown))
    # The loader's notes reach the session's notes; each is said once.
    notes = list(
        dict.fromkeys(
            [*session.notes, *(str(info[k]) for k in ("tokenizer_note", "note") if info.get(k))]
        )
    )
    if notes:
        findings.append(Finding("notes", notes, "\n".join(notes)))
    return findings
