"""Image-encoder self-attention straight from a ViT block's fused QKV projection, in bf16.

``encoder_attention(qkv, num_heads, scale=None, backend="auto") -> [B, N, H * D]``
    ``qkv [B, N, 3 * H * D]`` is the output of the block's ``qkv`` Linear (q | k | v, heads inside
    each, as timm lays it out). Returns ``softmax(scale * q kᵀ) v`` per image and head with the heads
    concatenated again, i.e. timm ``Attention``'s reshape, ``scaled_dot_product_attention`` and
    transpose back, in qkv's dtype; ``scale`` defaults to ``1/sqrt(D)``. No mask, no dropout, no
    gradient: it is the inference path of :class:`~pix2seq_fast.model.quantize.LowPrecisionEncoder`.

Backends: ``ref`` (this file: SDPA in fp32 on the given values), ``cpp`` (bf16 only;
``csrc/cpu/encoder_attention.cpp``: fp32 scores and softmax, probabilities rounded to bf16 before
they multiply V, output rounded to bf16; AVX512-BF16 ``vdpbf16ps`` for D in {16, 32, 64, 128}, a
scalar path otherwise or when ``P2S_CPU_ISA`` is below ``avx512``). ``auto`` takes ``cpp`` for
bf16 CPU tensors when the extension is built, else ``ref``. Non-finite inputs give NaN rows where
fp32 SDPA gives them (a row that sees a NaN score or value, or a +inf maximum score).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from pix2seq_fast._ext import load_extension
from pix2seq_fast.ops._backend import check_tensor

OP = "encoder_attention"
BACKENDS = ("auto", "ref", "cpp")
FAST_HEAD_DIMS = (16, 32, 64, 128)  # the head sizes the AVX512-BF16 path is built for

__all__ = ["encoder_attention", "encoder_attention_ref", "fast_encoder_attention_available", "FAST_HEAD_DIMS"]


def encoder_attention_ref(qkv: torch.Tensor, num_heads: int, scale: float | None = None) -> torch.Tensor:
    """Pure-PyTorch oracle: fp32 SDPA on ``qkv``'s values, returned in ``qkv.dtype``."""
    b, n, width = qkv.shape
    head_dim = width // (3 * num_heads)
    q, k, v = qkv.float().reshape(b, n, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(q, k, v, scale=scale)
    return out.transpose(1, 2).reshape(b, n, num_heads * head_dim).to(qkv.dtype)


def _check(qkv, num_heads, scale, backend) -> float:
    if backend not in BACKENDS:
        raise ValueError(f"{OP}: backend must be one of {BACKENDS}, got {backend!r}")
    check_tensor("qkv", qkv, op=OP, dim=3, dtypes=(torch.float32, torch.float16, torch.bfloat16))
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads <= 0:
        raise ValueError(f"{OP}: num_heads must be a positive int, got {num_heads!r}")
    width = qkv.shape[-1]
    if width % (3 * num_heads) != 0:
        raise ValueError(f"{OP}: qkv's last dimension ({width}) must be 3 * num_heads * head_dim "
                         f"with num_heads = {num_heads}")
    head_dim = width // (3 * num_heads)
    if scale is None:
        return head_dim ** -0.5
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not (0 < float(scale) < float("inf")):
        raise ValueError(f"{OP}: scale must be a positive finite number or None, got {scale!r}")
    return float(scale)


def encoder_attention(qkv: torch.Tensor, num_heads: int, scale: float | None = None,
                      backend: str = "auto") -> torch.Tensor:
    """See the module docstring. ``qkv [B, N, 3·H·D] -> [B, N, H·D]``."""
    scale = _check(qkv, num_heads, scale, backend)
    kernel = qkv.device.type == "cpu" and qkv.dtype == torch.bfloat16 and load_extension() is not None
    if backend == "cpp" and not kernel:
        raise ValueError(f"{OP}: backend='cpp' needs a bfloat16 CPU qkv and the compiled extension, got "
                         f"{qkv.dtype} on {qkv.device}")
    if backend == "ref" or not kernel:
        return encoder_attention_ref(qkv, num_heads, scale)
    if (qkv.shape[-1] // (3 * num_heads)) % 2:
        return encoder_attention_ref(qkv, num_heads, scale)  # odd head_dim: the kernel pairs channels
    return torch.ops.pix2seq_fast.encoder_attention(qkv.contiguous(), num_heads, scale)


@functools.cache
def fast_encoder_attention_available() -> bool:
    """Whether the kernel's AVX512-BF16 path can run here and is the faster choice: a CPU with
    AVX512-BF16 but no AMX. (With AMX, PyTorch's CPU flash attention multiplies on AMX tiles; ours
    was not measured against it, so SDPA stays there.)"""
    return (load_extension() is not None and torch.cpu._is_avx512_bf16_supported()
            and not torch.cpu._is_amx_tile_supported())
