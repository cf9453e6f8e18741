"""One cached decoder pass — the prompt prefill or one decode step — the unit to ``torch.compile``.

Attention goes through ``pix2seq_fast.ops.decode_attention`` / ``kv_append`` with one backend setting.
"""
from __future__ import annotations

import torch

from pix2seq_fast.generation.kv_cache import KVCache
from pix2seq_fast.ops.decode_attention import decode_attention, kv_append


def cached_decoder_pass(decoder, cache: KVCache, tokens: torch.Tensor, positions: torch.Tensor,
                        start: torch.Tensor, lengths: torch.Tensor, image_index: torch.Tensor,
                        image_lengths: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Run ``tokens[B, T]`` at ``positions[B, T]`` through the decoder, writing their self-attention
    K/V into the cache at ``start[b] .. start[b] + T - 1``; the queries see the first ``lengths[b]``
    cached positions causally (``lengths = start + T``) and image ``image_index[b]``'s cross K/V
    (``image_lengths[B]`` = S). Returns the hidden states before the final LN, ``[B, T, D]``."""
    x = decoder.embed(tokens, positions)
    for i, layer in enumerate(decoder.layers):
        attn = layer.self_attn
        h = layer.self_norm(x)
        q = attn.split_heads(attn.q_proj(h))
        k, v = attn.keys_values(h)
        kv_append(cache.self_k[i], cache.self_v[i], k, v, start, backend=backend)
        o = decode_attention(q, cache.self_k[i], cache.self_v[i], lengths, causal=True, backend=backend)
        x = x + attn.out_proj(attn.merge_heads(o))

        attn = layer.cross_attn
        q = attn.split_heads(attn.q_proj(layer.cross_norm(x)))
        kv_dtype = cache.cross_k.dtype
        o = decode_attention(q.to(kv_dtype), cache.cross_k[i], cache.cross_v[i], image_lengths,
                             kv_index=image_index, causal=False, backend=backend)
        x = x + attn.out_proj(attn.merge_heads(o.to(x.dtype)))
        x = layer.mlp(x)
    return x


def decode_hidden(decoder, cache: KVCache, tokens: torch.Tensor, positions: torch.Tensor,
                  image_index: torch.Tensor, image_lengths: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """One new token per row: ``tokens[B]`` at ``positions[B]`` -> hidden state before the final LN
    ``[B, D]`` (constrained decoding projects it onto a slice of the vocabulary)."""
    hidden = cached_decoder_pass(decoder, cache, tokens[:, None], positions[:, None], positions,
                                 positions + 1, image_index, image_lengths, backend)
    return hidden[:, 0]


def decode_step(decoder, cache: KVCache, tokens: torch.Tensor, positions: torch.Tensor,
                image_index: torch.Tensor, image_lengths: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """One new token per row: ``tokens[B]`` at ``positions[B]`` -> next-token logits ``[B, V]``."""
    return decoder.logits(decode_hidden(decoder, cache, tokens, positions, image_index, image_lengths, backend))
