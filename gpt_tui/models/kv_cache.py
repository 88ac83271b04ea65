"""One key/value cache for incremental decoding, shared by both GPT families.

Keys and values are stored per layer as (B, n_kv_head, max_len, hs). A forward pass
writes its new positions at `pos` in every layer, then the model calls `advance(T)`
once, so every layer of one pass sees the same starting position.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(
        self,
        n_layer: int,
        batch_size: int,
        n_kv_head: int,
        head_dim: int,
        max_len: int,
        device: torch.device | str,
        dtype: torch.dtype,
    ) -> None:
        shape = (n_layer, batch_size, n_kv_head, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.pos = 0

    @property
    def used(self) -> int:
        return self.pos

    def insert(
        self, layer_idx: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this pass's k, v (B, nkv, T, hs) and return all keys/values so far."""
        end = self.pos + k.size(2)
        if end > self.max_len:
            raise ValueError(
                f"KV cache full: {end} positions needed, {self.max_len} available; "
                "reset the cache or crop the context"
            )
        self.k[layer_idx, :, :, self.pos : end] = k
        self.v[layer_idx, :, :, self.pos : end] = v
        return self.k[layer_idx, :, :, :end], self.v[layer_idx, :, :, :end]

    def advance(self, n: int) -> None:
        self.pos += n

    def reset(self) -> None:
        self.pos = 0


def attention_mask(
    t_query: int, t_key: int, device: torch.device, window: int | None = None
) -> torch.Tensor | None:
    """Boolean mask (Tq, Tk), True = may attend, for queries at the last Tq of Tk positions.

    Returns None where `is_causal=True` (Tq == Tk) or no mask (one query) says the same
    thing, so the fast kernels stay in use.
    """
    if window is None and (t_query == t_key or t_query == 1):
        return None
    q_pos = torch.arange(t_key - t_query, t_key, device=device)[:, None]
    k_pos = torch.arange(t_key, device=device)[None, :]
    allowed = k_pos <= q_pos
    if window is not None:
        allowed &= k_pos > q_pos - window
    return allowed
