"""Static, preallocated decoder caches (gpt-fast style): self-attention K/V written in place per step,
and the image's cross-attention K/V computed once per image and shared by index."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class KVCache:
    """``self_k``/``self_v`` ``[layers, B, H, L, K]`` (row b's positions ``0 .. L-1``);
    ``cross_k``/``cross_v`` ``[layers, N_img, H, S, K]`` (one entry per image, never per sequence)."""

    self_k: torch.Tensor
    self_v: torch.Tensor
    cross_k: torch.Tensor
    cross_v: torch.Tensor

    @property
    def max_length(self) -> int:
        return self.self_k.shape[3]

    @property
    def image_tokens(self) -> int:
        return self.cross_k.shape[3]


def cross_kv_dtype(decoder, memory: torch.Tensor) -> torch.dtype:
    """dtype of the image K/V: ``decoder.cross_kv_dtype`` when set (``model.quantize`` sets bf16 to
    halve the bytes every decode step reads), else the memory's."""
    return getattr(decoder, "cross_kv_dtype", None) or memory.dtype


def cross_keys_values(decoder, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every layer's cross-attention K and V of ``memory[N_img, S, D]``, each ``[layers, N_img, H, S, K]``
    (in :func:`cross_kv_dtype`)."""
    layers = decoder.layers
    attn = layers[0].cross_attn
    n_img, s, _ = memory.shape
    shape = (len(layers), n_img, attn.num_heads, s, attn.head_dim)
    dtype = cross_kv_dtype(decoder, memory)
    k = torch.empty(shape, dtype=dtype, device=memory.device)
    v = torch.empty(shape, dtype=dtype, device=memory.device)
    for i, layer in enumerate(layers):
        k[i], v[i] = layer.cross_attn.keys_values(memory)
    return k, v


def allocate_cache(decoder, memory: torch.Tensor, batch: int, max_length: int) -> KVCache:
    """Preallocate the self-attention cache for ``batch`` rows of ``max_length`` positions and compute
    the cross-attention K/V of ``memory[N_img, S, D]`` once."""
    attn = decoder.layers[0].self_attn
    shape = (len(decoder.layers), batch, attn.num_heads, max_length, attn.head_dim)
    cross_k, cross_v = cross_keys_values(decoder, memory)
    return KVCache(self_k=torch.zeros(shape, dtype=memory.dtype, device=memory.device),
                   self_v=torch.zeros(shape, dtype=memory.dtype, device=memory.device),
                   cross_k=cross_k, cross_v=cross_v)
