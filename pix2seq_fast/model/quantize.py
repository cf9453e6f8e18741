"""Lower-precision inference: weight-only int8 or bf16 decoder layers, and a bf16 image encoder.

At batch 1 a decode step reads every decoder weight and the whole output embedding once (~170 MB in
fp32 for vit-b with the 35K vocabulary), so its time is those bytes over the memory bandwidth.
:func:`quantize_decoder` replaces, in place, every ``nn.Linear`` of the decoder's layers and the tied
output projection with a :class:`LowPrecisionLinear` that keeps

- ``"int8"``: symmetric per-output-channel int8 weights, ``w ≈ q * scale[n]`` with
  ``scale[n] = max_k |w[n, k]| / 127`` (a quarter of the fp32 bytes), or
- ``"bf16"``: the weights rounded to bfloat16 (half the bytes),

and computes ``x @ w.T`` with fp32 activations and fp32 accumulation (the ``lowp_linear`` C++ kernel
on the CPU for up to ``LowPrecisionLinear.KERNEL_MAX_ROWS`` rows, or ``KERNEL_MAX_ROWS_NATIVE_BF16``
for bf16 weights on a CPU that multiplies bf16 natively (:func:`native_bf16`); beyond that, bf16
weights on such a CPU take a bf16 GEMM on the activations rounded to bf16; otherwise, and on other devices, ``F.linear`` with the dequantised weight). The encoder, the
projection, embeddings, LayerNorms and the self-attention cache stay fp32; the image's
cross-attention K/V are kept in bf16 by default (``cross_kv_dtype``). The token embedding used for *input* lookups keeps its fp32 values (the
output projection holds its own low-precision copy).

:func:`quantize_encoder` runs the whole image encoder in bfloat16 (weights, activations, its
LayerNorms and attention; images cast on the way in, features back to fp32 on the way out; on an
AVX512-BF16 CPU without AMX its self-attention takes the fused ``encoder_attention`` kernel). The
encoder is compute-bound (ViT-B at 640 px: ~370 GFLOP per image), so it is meant for CPUs that
multiply bf16 natively — AMX or AVX512-BF16 (:func:`native_bf16`; on the project's Intel VM a
ViT-B encode took 0.35 s against 1.21 s in fp32 at two threads). Elsewhere it still runs, on
hardware without bf16 arithmetic; it was not timed there.

Measured error (``tests/test_low_precision.py``, which asserts these bounds, and README Benchmarks):
the maximum |logit difference| to the fp32 model and the greedy-decode agreement on
``tf_parity/tiny_a`` and on a vit-b-sized random decoder; for the encoder, the error of its features
relative to their scale and the same decode agreement downstream.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

DTYPES = ("int8", "bf16")
ENCODER_DTYPES = ("bf16",)


def _kernel():
    from pix2seq_fast._ext import load_extension  # noqa: PLC0415

    if load_extension() is None or not hasattr(torch.ops.pix2seq_fast, "lowp_linear"):
        return None
    return torch.ops.pix2seq_fast.lowp_linear


class LowPrecisionLinear(nn.Module):
    """``y = x @ dequant(weight).T + bias`` with int8 (+ per-row fp32 ``scale``) or bf16 weights.

    ``weight [N, K]`` int8 or bfloat16, ``scale [N]`` fp32 (int8 only), ``bias [N]`` fp32 or None.
    ``forward(x[..., K]) -> [..., N]`` fp32."""

    KERNEL_MAX_ROWS = 32  # beyond this a dequantised fp32 GEMM (MKL) is faster than the GEMV kernel
    # bf16 weights where the CPU multiplies bf16 natively: beyond this the bf16 GEMM is faster (Zen 4,
    # 2 threads, K 512-2048: equal at 16 rows, 1.5-2.4x faster at 32)
    KERNEL_MAX_ROWS_NATIVE_BF16 = 8

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: str = "int8"):
        super().__init__()
        if dtype not in DTYPES:
            raise ValueError(f"LowPrecisionLinear: dtype must be one of {DTYPES}, got {dtype!r}")
        if weight.dim() != 2:
            raise ValueError(f"LowPrecisionLinear: weight must be [N, K], got {tuple(weight.shape)}")
        w = weight.detach().float()
        self.dtype_name = dtype
        self.out_features, self.in_features = w.shape
        if dtype == "int8":
            scale = (w.abs().amax(dim=1) / 127.0).clamp_min(torch.finfo(torch.float32).tiny)
            q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
            self.register_buffer("weight", q.contiguous())
            self.register_buffer("scale", scale.contiguous())
        else:
            self.register_buffer("weight", w.to(torch.bfloat16).contiguous())
            self.scale = None
        self.register_buffer("bias", None if bias is None else bias.detach().float().contiguous())

    @classmethod
    def from_linear(cls, linear: nn.Linear, dtype: str = "int8") -> "LowPrecisionLinear":
        return cls(linear.weight, linear.bias, dtype)

    def dequantized(self) -> torch.Tensor:
        """``[N, K]`` fp32 weight this layer multiplies by."""
        w = self.weight.float()
        return w * self.scale[:, None] if self.scale is not None else w

    def select_rows(self, index: torch.Tensor) -> "LowPrecisionLinear":
        """A layer computing only output features ``index`` (``[n]`` int64), same precision."""
        sub = LowPrecisionLinear.__new__(LowPrecisionLinear)
        nn.Module.__init__(sub)
        sub.dtype_name = self.dtype_name
        sub.out_features, sub.in_features = int(index.numel()), self.in_features
        sub.register_buffer("weight", self.weight.index_select(0, index).contiguous())
        if self.scale is not None:
            sub.register_buffer("scale", self.scale.index_select(0, index).contiguous())
        else:
            sub.scale = None
        sub.register_buffer("bias", None if self.bias is None else self.bias.index_select(0, index).contiguous())
        return sub

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"LowPrecisionLinear: x must end in {self.in_features} features, got {tuple(x.shape)}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        op = _kernel() if x2.device.type == "cpu" and x2.dtype == torch.float32 else None
        bf16_gemm = self.scale is None and x2.device.type == "cpu" and native_bf16()
        if op is not None and x2.shape[0] <= (self.KERNEL_MAX_ROWS_NATIVE_BF16 if bf16_gemm else self.KERNEL_MAX_ROWS):
            out = op(x2.contiguous(), self.weight, self.scale, self.bias)
        elif bf16_gemm:
            out = F.linear(x2.to(torch.bfloat16), self.weight).float()  # bf16 GEMM, fp32 accumulation
            if self.bias is not None:
                out += self.bias
        else:
            bias = None if self.bias is None else self.bias.to(x2.dtype)
            out = F.linear(x2, self.dequantized().to(x2.dtype), bias)
        return out.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, dtype={self.dtype_name}"


@torch.no_grad()
def quantize_decoder(model, dtype: str = "int8", output_projection: bool = True,
                     cross_kv_dtype: torch.dtype | None = torch.bfloat16):
    """Replace (in place) the decoder's linear layers, and with ``output_projection`` its tied output
    layer, by :class:`LowPrecisionLinear` of ``dtype`` (``"int8"`` | ``"bf16"``), and keep the image's
    cross-attention K/V in ``cross_kv_dtype`` during generation (bf16 by default: the step then reads
    half the K/V bytes; the attention runs on bf16 queries/K/V with fp32 accumulation; None keeps the
    memory's dtype). Returns ``model``. For inference: the replaced layers hold no trainable
    parameters."""
    if dtype not in DTYPES:
        raise ValueError(f"quantize_decoder: dtype must be one of {DTYPES}, got {dtype!r}")
    if cross_kv_dtype not in (None, torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"quantize_decoder: cross_kv_dtype must be None, float32, float16 or bfloat16, "
                         f"got {cross_kv_dtype}")
    decoder = model.decoder
    decoder.cross_kv_dtype = cross_kv_dtype
    for layer in decoder.layers:
        for parent in list(layer.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, LowPrecisionLinear.from_linear(child, dtype))
    if output_projection:
        decoder.output_projection = LowPrecisionLinear(decoder.token_embedding.weight, decoder.output_bias, dtype)
    return model


def is_quantized(model) -> bool:
    return any(isinstance(m, LowPrecisionLinear) for m in model.decoder.modules())


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX tiles or AVX512-BF16)."""
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


class FusedSelfAttention(nn.Module):
    """A timm ``Attention`` (no q/k norm, no gate) whose bf16 CPU inference runs the fused
    :func:`~pix2seq_fast.ops.encoder_attention.encoder_attention` kernel on its QKV projection
    (no permute copies, ~2× PyTorch's CPU flash attention on AVX512-BF16 without AMX: README
    Benchmarks); anything else (other devices or dtypes, gradients, a mask) takes the wrapped
    module's own forward. ``forward(x[B, N, C]) -> [B, N, C]``."""

    def __init__(self, attention: nn.Module):
        super().__init__()
        self.inner = attention
        self.train(attention.training)

    @staticmethod
    def applies_to(attention: nn.Module) -> bool:
        from timm.models.vision_transformer import Attention  # noqa: PLC0415

        from pix2seq_fast.ops.encoder_attention import FAST_HEAD_DIMS  # noqa: PLC0415

        return (type(attention) is Attention and isinstance(attention.q_norm, nn.Identity)
                and isinstance(attention.k_norm, nn.Identity) and isinstance(attention.norm, nn.Identity)
                and getattr(attention, "gate", None) is None and attention.head_dim in FAST_HEAD_DIMS)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False,
                **kwargs) -> torch.Tensor:
        fused = (x.device.type == "cpu" and x.dtype == torch.bfloat16 and attn_mask is None and not is_causal
                 and not kwargs and not (torch.is_grad_enabled() and x.requires_grad) and not self.training)
        if not fused:
            return self.inner(x, attn_mask=attn_mask, is_causal=is_causal, **kwargs)
        from pix2seq_fast.ops.encoder_attention import encoder_attention  # noqa: PLC0415

        att = self.inner
        out = encoder_attention(att.qkv(x), att.num_heads, att.scale, backend="cpp")
        return att.proj_drop(att.proj(out))


class LowPrecisionEncoder(nn.Module):
    """``encoder`` with its weights in bfloat16, run on bf16 activations end to end; with
    ``fused_attention`` its ViT self-attention layers become :class:`FusedSelfAttention`.

    ``forward(images[B, 3, H, W] fp32) -> features`` fp32, shaped as the wrapped encoder's."""

    def __init__(self, encoder: nn.Module, fused_attention: bool = False):
        super().__init__()
        self.inner = encoder.to(torch.bfloat16)
        if fused_attention:
            for parent in list(self.inner.modules()):
                for name, child in list(parent.named_children()):
                    if FusedSelfAttention.applies_to(child):
                        setattr(parent, name, FusedSelfAttention(child))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.inner(images.to(torch.bfloat16)).float()


def quantize_encoder(model, dtype: str = "bf16", fused_attention: bool | None = None):
    """Replace (in place) ``model.encoder`` by a :class:`LowPrecisionEncoder` of ``dtype`` (``"bf16"``).
    ``fused_attention`` (default: where it is the faster choice, i.e. an AVX512-BF16 CPU without AMX,
    :func:`~pix2seq_fast.ops.encoder_attention.fast_encoder_attention_available`) runs its
    self-attention through the fused CPU kernel. Returns ``model``. For inference; the projection and
    decoder are untouched (see :func:`quantize_decoder` for those)."""
    if dtype not in ENCODER_DTYPES:
        raise ValueError(f"quantize_encoder: dtype must be one of {ENCODER_DTYPES}, got {dtype!r}")
    if fused_attention is not None and not isinstance(fused_attention, bool):
        raise ValueError(f"quantize_encoder: fused_attention must be None, True or False, got {fused_attention!r}")
    if isinstance(model.encoder, LowPrecisionEncoder):
        raise ValueError("quantize_encoder: the model's encoder is already in bf16")
    if fused_attention is None:
        from pix2seq_fast.ops.encoder_attention import fast_encoder_attention_available  # noqa: PLC0415

        fused_attention = fast_encoder_attention_available()
    model.encoder = LowPrecisionEncoder(model.encoder, fused_attention)
    return model
