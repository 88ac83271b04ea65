"""What the engine asks of any model, ours or one from a user's file: the device it lives on,
its context length, the token ids it may be given, the logits in what its forward returns,
and how its head reads a residual stream.

Our two families answer from their config and their own `logits_from_residual`. A user's
model is worked out from its structure and what its config says; what cannot be worked out
raises `UnsupportedModelError`, one line.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...errors import GptTuiError

_NORM_TYPES = (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module hooks must go on: `torch.compile` wrappers keep it in `_orig_mod`."""
    while isinstance(getattr(model, "_orig_mod", None), nn.Module):
        model = model._orig_mod
    return model


def find_block_list(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """Path and ModuleList of the transformer blocks: the largest list of same-class modules."""
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in unwrap_model(model).named_modules():
        if (
            isinstance(module, nn.ModuleList)
            and len(module) > 0
            and len({type(child) for child in module}) == 1
            and (best is None or len(module) > len(best[1]))
        ):
            best = (name, module)
    return best


class UnsupportedModelError(GptTuiError, ValueError):
    """The model's structure is not one gpt-tui knows how to read for what was asked."""


class ModelOutputError(GptTuiError, ValueError):
    """The model's forward returned something that is not logits."""


class HasVocabSize(Protocol):
    @property
    def vocab_size(self) -> int: ...


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def model_context_len(model: nn.Module) -> int | None:
    """The model's context length from its config, or None when it does not say."""
    config = getattr(model, "config", None)
    for name in ("context_len", "block_size", "sequence_len"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def usable_vocab_size(model: nn.Module, tokenizer: HasVocabSize) -> int:
    """Ids a prompt or forced token may use: the tokenizer's, within the model's vocabulary.

    Models pad their vocabulary (GPT-2: 50304 rows for 50257 tokens); the padding has no text.
    """
    model_vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    return min(tokenizer.vocab_size, model_vocab or tokenizer.vocab_size)


def crop_to_context(
    ids: Sequence[int],
    context_len: int | None,
    *,
    what: str = "prompt",
    limit: str = "the context length",
) -> tuple[list[int], str | None]:
    """The last `context_len` ids, as nanoGPT crops, and a note saying so when any were cut.

    `what` names the ids in the note ("prompt", "sequence"); `limit` says what the length is.
    No cropping when `context_len` is None (a model that does not say).
    """
    ids = list(ids)
    if context_len is None or len(ids) <= context_len:
        return ids, None
    note = (
        f"{what} of {len(ids)} tokens cropped from the left to the last {context_len} tokens "
        f"({limit}), as nanoGPT does"
    )
    return ids[-context_len:], note


def output_logits(output: Any) -> torch.Tensor:
    """The logits of a forward's output: a tensor, or the first item of a tuple/list."""
    logits = output[0] if isinstance(output, (tuple, list)) else output
    if not isinstance(logits, torch.Tensor):
        raise ModelOutputError(
            f"the model's forward returned {type(logits).__name__}, not logits (a tensor)"
        )
    return logits


def last_position_logits(output: Any) -> torch.Tensor:
    """(V,) logits of the last position of the first sequence, whatever shape came back."""
    logits = output_logits(output)
    if logits.dim() == 3:  # (B, T, V)
        return logits[0, -1]
    if logits.dim() == 2:  # (B, V): the model already kept only the last position
        return logits[0]
    if logits.dim() == 1:
        return logits
    raise ModelOutputError(f"cannot read logits of shape {tuple(logits.shape)}: expected (B, T, V)")


def logits_from_residual(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits (B, T, V) from residual-stream activations x (B, T, C), as the model's head
    reads the output of its last block.

    The model's own `logits_from_residual` when it has one (both our families). Otherwise
    by structure: nanoGPT-style, `transformer.ln_f` then `lm_head`; nanochat-style (no
    final norm module), the parameter-free RMS norm, `lm_head` in fp32, the rows beyond
    `config.vocab_size` dropped, and the softcap the model or its forward names.
    """
    model = unwrap_model(model)
    own = getattr(model, "logits_from_residual", None)
    if callable(own):
        return own(x)
    head = getattr(model, "lm_head", None)
    transformer = getattr(model, "transformer", None)
    if not isinstance(head, nn.Linear) or not isinstance(transformer, nn.Module):
        raise UnsupportedModelError(_UNSUPPORTED)
    ln_f = getattr(transformer, "ln_f", None)
    if isinstance(ln_f, nn.Module):
        return head(ln_f(x))  # (B, T, V)
    if _has_final_norm_module(model, transformer):
        raise UnsupportedModelError(_UNSUPPORTED)  # a norm we do not know the place of
    logits = head(F.rms_norm(x, (x.size(-1),))).float()  # (B, T, Vp)
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if isinstance(vocab, int) and 0 < vocab < logits.size(-1):
        logits = logits[..., :vocab]  # (B, T, V): padding rows dropped
    cap = _softcap_of(model)
    return cap * torch.tanh(logits / cap) if cap else logits


_UNSUPPORTED = (
    "not supported for this model: gpt-tui reads the residual stream through the head of "
    "nanoGPT-style (transformer.ln_f + lm_head) and nanochat-style (RMS norm + lm_head) "
    "models, not this one"
)


def _has_final_norm_module(model: nn.Module, transformer: nn.Module) -> bool:
    """A norm module outside the blocks, other than ln_f: its place is unknown to us."""
    found = find_block_list(model)
    blocks = found[1] if found is not None else None
    for parent in (model, transformer):
        for child in parent.children():
            if child is blocks or child is transformer:
                continue
            if isinstance(child, _NORM_TYPES) or "norm" in type(child).__name__.lower():
                return True
    return False


def _softcap_of(model: nn.Module) -> float:
    """The logit softcap of a nanochat-style model: a `softcap` number on the model or its
    config, else the literal `softcap = N` in its forward (where nanochat keeps it), else 0.
    """
    for owner in (model, getattr(model, "config", None)):
        value = getattr(owner, "softcap", None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    try:
        source = textwrap.dedent(inspect.getsource(type(model).forward))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return 0.0
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "softcap" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, (int, float))
        ):
            return float(node.value.value)
    return 0.0


def user_model_source(model: torch.nn.Module) -> Path | None:
    """The file of the model's class when it is the user's code, not one of gpt-tui's."""
    try:
        source = Path(inspect.getfile(type(unwrap_model(model)))).resolve()
    except (TypeError, OSError):
        return None
    if Path(__file__).resolve().parents[2] in source.parents:  # gpt_tui/
        return None  # gpt_tui's own model
    return source


def raised_in_user_code(err: BaseException, model: torch.nn.Module) -> str | None:
    """`file:line` of the innermost frame of `err` in the model's own source folder, when
    the model is not one of gpt-tui's families (their failures are gpt-tui's bugs)."""
    source = user_model_source(model)
    if source is None:
        return None
    where = None
    tb = err.__traceback__
    while tb is not None:
        path = Path(tb.tb_frame.f_code.co_filename).resolve()
        if path.parent == source.parent:
            where = f"{path.name}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where
