"""The one token-sampling pipeline: logits -> /temperature -> top-k -> top-p -> softmax -> token.

Both `model.generate` and the engine's step-by-step view call `sample_next`, so what the
inspector shows is exactly what generation does. Sampling draws on a CPU generator so a
seeded run replays identically on any device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SamplingResult:
    token: int
    logits: torch.Tensor  # (V,) raw last-position logits, fp32, CPU
    scaled: torch.Tensor  # (V,) after temperature, before filtering
    filtered: torch.Tensor  # (V,) after top-k / top-p (removed tokens are -inf)
    probs: torch.Tensor  # (V,) softmax of `filtered`
    greedy: bool


def filter_logits(
    logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the top-p nucleus. 1-D input."""
    out = logits.clone()
    if top_k is not None and 0 < top_k < out.numel():
        kth = torch.topk(out, top_k).values[-1]
        out[out < kth] = float("-inf")
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(out, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = torch.cumsum(probs, dim=-1) - probs
        drop = mass_before >= top_p  # the most likely token always stays
        out[order[drop]] = float("-inf")
    return out


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> SamplingResult:
    """Choose the next token from one position's logits (V,). temperature 0 is greedy."""
    if temperature < 0:
        raise ValueError(f"temperature={temperature}: must be >= 0 (0 is greedy)")
    raw = logits.detach().float().cpu()
    greedy = temperature == 0
    scaled = raw if greedy else raw / temperature
    filtered = filter_logits(scaled, top_k, top_p)
    probs = torch.softmax(filtered, dim=-1)
    if greedy:
        token = int(torch.argmax(filtered))
    else:
        token = int(torch.multinomial(probs, 1, generator=generator))
    return SamplingResult(token, raw, scaled, filtered, probs, greedy)


def make_generator(seed: int | None) -> torch.Generator:
    gen = torch.Generator(device="cpu")
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen


@torch.inference_mode()
def generate(
    model: torch.nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    use_kv_cache: bool = True,
) -> torch.Tensor:
    """Append `max_new_tokens` tokens to idx (1, T) with one of our models; returns (1, T+n).

    The prompt is cropped from the left to the context length, as nanoGPT does. With the
    KV cache, a full cache is refilled from the last context-length tokens.
    """
    if idx.size(0) != 1:
        raise ValueError("generate samples one sequence at a time (batch size 1)")
    context = model.config.context_len
    gen = make_generator(seed)
    cache = model.make_kv_cache(batch_size=1) if use_kv_cache else None
    out = idx
    pending = out[:, -context:]
    for _ in range(max_new_tokens):
        if cache is not None and cache.used + pending.size(1) > context:
            cache.reset()
            pending = out[:, -context:]
        if cache is None:
            pending = out[:, -context:]
        logits, _ = model(pending, kv_cache=cache)
        result = sample_next(logits[0, -1], temperature, top_k, top_p, gen)
        nxt = torch.tensor([[result.token]], device=out.device, dtype=out.dtype)
        out = torch.cat([out, nxt], dim=1)
        pending = nxt
    return out
