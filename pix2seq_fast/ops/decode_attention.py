"""Decode-step attention over a KV cache, and the fused in-place cache append.

``decode_attention(q, k, v, lengths, kv_index=None, causal=True, scale=None, backend="auto")``
    q ``[B, H, Tq, D]`` (Tq = 1 in decode, a few in prompt prefill); k, v ``[N, H, L, D]``;
    lengths int ``[B]``. Sequence b attends to the first ``lengths[b]`` keys of K/V row
    ``kv_index[b]`` (identity when ``kv_index`` is None, which needs N == B), so many sequences can
    share one image's cross-attention K/V without expanding it. With ``causal=True`` query t of
    sequence b sees keys ``j < lengths[b] - Tq + t + 1`` (the cache already holds the Tq new
    tokens, so ``lengths[b] >= Tq``); with ``causal=False`` every query sees all ``lengths[b]``
    keys. Returns ``[B, H, Tq, D]`` in q's dtype; fp32/fp16/bf16 inputs, fp32 accumulation; ``scale``
    defaults to ``1/sqrt(D)``.

``kv_append(k_cache, v_cache, k_new, v_new, start, backend="auto")``
    Writes ``k_new``/``v_new`` ``[B, H, T, D]`` into ``k_cache``/``v_cache`` ``[B, H, L, D]`` in place
    at positions ``start[b] .. start[b] + T - 1`` (``start[b] + T <= L``), so the decode loop
    appends without any ``torch.cat`` or extra copy.

Backends (see ``_backend.py``): ``ref`` (this file), ``cpp`` (OpenMP CPU kernel), ``cuda``
(split-KV flash-decoding), ``triton`` (split-KV). The CPU kernel (csrc/cpu/decode_attention.cpp)
gathers the queries of every sequence that reads one K/V row and, when there are >= 8 of them (an
image shared by many sequences), streams that row's keys once per 16 queries as a small GEMM with an
online softmax between the two products; it splits keys across threads when sequences x heads are
few, and picks its AVX-512 / AVX2 / baseline build at run time (``P2S_CPU_ISA`` forces one). Argument errors raise ``ValueError`` naming the
argument. Value checks (``lengths``, ``kv_index``, ``start`` ranges) need the values on the host, so
they run for CPU tensors only; on CUDA they would sync every decode step, and the CUDA/Triton kernels
instead write NaN for a sequence whose ``lengths``/``kv_index`` are out of range (and skip an
out-of-range append) rather than touch memory outside the tensors.
"""
from __future__ import annotations

import math

import torch

from pix2seq_fast._ext import load_extension
from pix2seq_fast.ops._backend import check_tensor, resolve_backend

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
INDEX_DTYPES = (torch.int32, torch.int64)

__all__ = ["decode_attention", "kv_append", "decode_attention_ref", "kv_append_ref"]


# --------------------------------------------------------------------------------------------
# reference
# --------------------------------------------------------------------------------------------
def visible_limits(lengths: torch.Tensor, num_queries: int, causal: bool) -> torch.Tensor:
    """``[B, Tq]`` int64: query t of sequence b sees keys ``j < limit[b, t]``."""
    limit = lengths.to(torch.int64).view(-1, 1)
    if causal:
        offsets = torch.arange(num_queries, device=lengths.device) - (num_queries - 1)
        return limit + offsets.view(1, -1)
    return limit.expand(-1, num_queries)


def decode_attention_ref(q, k, v, lengths, kv_index=None, causal=True, scale=None):
    """Pure-PyTorch decode attention (masked softmax in fp32); see the module docstring.

    Non-finite inputs (the rule every backend follows): the output row ``[b, h, t, :]`` is all NaN
    when a score it sees (``q[b, h, t] . k[j]`` for visible ``j``) or a value it sees is NaN / +-inf,
    or when its output overflows float32; keys and values it does not see never matter.
    """
    batch, heads, num_queries, head_dim = q.shape
    max_keys = k.shape[2]
    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    if kv_index is not None:
        k = k.index_select(0, kv_index)
        v = v.index_select(0, kv_index)
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale  # [B, H, Tq, L]
    limit = visible_limits(lengths, num_queries, causal)  # [B, Tq]
    visible = (torch.arange(max_keys, device=q.device).view(1, 1, -1) < limit.unsqueeze(-1)).unsqueeze(1)
    values = v.float()  # [B, H, L, D]
    finite_values = torch.isfinite(values)
    nan_row = ((~torch.isfinite(scores) & visible).any(-1)  # [B, H, Tq]
               | (visible & ~finite_values.all(-1).unsqueeze(2)).any(-1))
    scores = scores.masked_fill(~visible | nan_row.unsqueeze(-1), float("-inf")).masked_fill(
        nan_row.unsqueeze(-1) & visible, 0.0)
    probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(probs, torch.where(finite_values, values, 0.0))  # [B, H, Tq, D]
    nan_row |= ~torch.isfinite(out).all(-1)
    return out.masked_fill(nan_row.unsqueeze(-1), float("nan")).to(q.dtype)


def kv_append_ref(k_cache, v_cache, k_new, v_new, start):
    """In-place ``cache[b, :, start[b] + t] = new[b, :, t]`` by one scatter per cache."""
    batch, heads, steps, head_dim = k_new.shape
    positions = start.to(torch.int64).view(-1, 1) + torch.arange(steps, device=start.device)
    index = positions.view(batch, 1, steps, 1).expand(batch, heads, steps, head_dim)
    k_cache.scatter_(2, index, k_new)
    v_cache.scatter_(2, index, v_new)


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------
def _check_last_dim_unit_stride(op: str, **tensors):
    for name, t in tensors.items():
        if t.shape[-1] > 1 and t.stride(-1) != 1:
            raise ValueError(f"{op}: {name} must have stride 1 in its last (head_dim) dimension, got "
                             f"strides {tuple(t.stride())}; call .contiguous() or use backend='ref'")


def _check_attention_args(q, k, v, lengths, kv_index, causal):
    op = "decode_attention"
    check_tensor("q", q, op=op, dim=4, dtypes=FLOAT_DTYPES)
    check_tensor("k", k, op=op, dim=4, dtypes=FLOAT_DTYPES, device=q.device)
    check_tensor("v", v, op=op, dim=4, dtypes=FLOAT_DTYPES, device=q.device)
    check_tensor("lengths", lengths, op=op, dim=1, dtypes=INDEX_DTYPES, device=q.device)
    batch, heads, num_queries, head_dim = q.shape
    rows, k_heads, max_keys, k_dim = k.shape
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"{op}: q, k and v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if v.shape != k.shape:
        raise ValueError(f"{op}: v must have k's shape {tuple(k.shape)}, got {tuple(v.shape)}")
    if k_heads != heads or k_dim != head_dim:
        raise ValueError(f"{op}: k [N, H, L, D] must match q [B, H, Tq, D] in H and D, got q "
                         f"{tuple(q.shape)} and k {tuple(k.shape)}")
    if min(batch, heads, num_queries, head_dim, rows, max_keys) < 1:
        raise ValueError(f"{op}: every dimension must be >= 1, got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}")
    if lengths.shape[0] != batch:
        raise ValueError(f"{op}: lengths must have shape [B] = [{batch}], got {tuple(lengths.shape)}")
    if kv_index is None:
        if rows != batch:
            raise ValueError(f"{op}: without kv_index, k and v need N == B rows; got N={rows}, "
                             f"B={batch} (pass kv_index[B] to share rows)")
    else:
        check_tensor("kv_index", kv_index, op=op, dim=1, dtypes=INDEX_DTYPES, device=q.device)
        if kv_index.shape[0] != batch:
            raise ValueError(f"{op}: kv_index must have shape [B] = [{batch}], got "
                             f"{tuple(kv_index.shape)}")
    # (.tolist() of a few ints is ~10x cheaper than tensor reductions; under torch.compile the
    # values are unknown while tracing and the C++ TORCH_CHECKs still check them on the CPU)
    if q.device.type == "cpu" and not torch.compiler.is_compiling():
        min_length = num_queries if causal else 1
        values = lengths.tolist()
        if min(values) < min_length or max(values) > max_keys:
            rule = f"in [Tq={num_queries} (causal), L={max_keys}]" if causal else \
                f"in [1, L={max_keys}]"
            raise ValueError(f"{op}: lengths must be {rule}, got {values}")
        if kv_index is not None:
            rows_used = kv_index.tolist()
            if min(rows_used) < 0 or max(rows_used) >= rows:
                raise ValueError(f"{op}: kv_index must be in [0, N={rows}), got {rows_used}")


def _check_append_args(k_cache, v_cache, k_new, v_new, start):
    op = "kv_append"
    check_tensor("k_cache", k_cache, op=op, dim=4, dtypes=FLOAT_DTYPES)
    check_tensor("v_cache", v_cache, op=op, dim=4, dtypes=FLOAT_DTYPES, device=k_cache.device)
    check_tensor("k_new", k_new, op=op, dim=4, dtypes=FLOAT_DTYPES, device=k_cache.device)
    check_tensor("v_new", v_new, op=op, dim=4, dtypes=FLOAT_DTYPES, device=k_cache.device)
    check_tensor("start", start, op=op, dim=1, dtypes=INDEX_DTYPES, device=k_cache.device)
    batch, heads, max_keys, head_dim = k_cache.shape
    steps = k_new.shape[2]
    if v_cache.shape != k_cache.shape:
        raise ValueError(f"{op}: v_cache must have k_cache's shape {tuple(k_cache.shape)}, got "
                         f"{tuple(v_cache.shape)}")
    if v_new.shape != k_new.shape:
        raise ValueError(f"{op}: v_new must have k_new's shape {tuple(k_new.shape)}, got "
                         f"{tuple(v_new.shape)}")
    if (k_new.shape[0], k_new.shape[1], k_new.shape[3]) != (batch, heads, head_dim):
        raise ValueError(f"{op}: k_new [B, H, T, D] must match k_cache [B, H, L, D] in B, H and D, "
                         f"got {tuple(k_new.shape)} and {tuple(k_cache.shape)}")
    dtypes = {k_cache.dtype, v_cache.dtype, k_new.dtype, v_new.dtype}
    if len(dtypes) != 1:
        raise ValueError(f"{op}: caches and new k/v must share one dtype, got k_cache "
                         f"{k_cache.dtype}, v_cache {v_cache.dtype}, k_new {k_new.dtype}, "
                         f"v_new {v_new.dtype}")
    if start.shape[0] != batch:
        raise ValueError(f"{op}: start must have shape [B] = [{batch}], got {tuple(start.shape)}")
    if steps > max_keys:
        raise ValueError(f"{op}: k_new has T={steps} steps but the cache holds only L={max_keys}")
    if k_cache.device.type == "cpu" and steps > 0 and batch > 0 and not torch.compiler.is_compiling():
        first = start.tolist()
        if min(first) < 0 or max(first) + steps > max_keys:
            raise ValueError(f"{op}: need 0 <= start[b] and start[b] + T <= L (T={steps}, "
                             f"L={max_keys}), got start {first}")


# --------------------------------------------------------------------------------------------
# public ops
# --------------------------------------------------------------------------------------------
def _native_op(name: str):
    """``torch.ops.pix2seq_fast.<name>`` or None when the extension was built without it."""
    namespace = getattr(torch.ops, "pix2seq_fast", None)
    try:
        return getattr(namespace, name)
    except (AttributeError, RuntimeError):
        return None


def _register_fake_kernels():
    """Shape-only versions of the compiled ops, so that ``torch.compile`` can trace through them."""
    if _native_op("decode_attention") is None or _native_op("kv_append") is None:
        return

    @torch.library.register_fake("pix2seq_fast::decode_attention")
    def _decode_attention_fake(q, k, v, lengths, kv_index, causal, scale):
        return q.new_empty(q.shape)

    @torch.library.register_fake("pix2seq_fast::kv_append")
    def _kv_append_fake(k_cache, v_cache, k_new, v_new, start):
        return None


if load_extension() is not None:
    _register_fake_kernels()


_RESOLVED: dict = {}  # (backend, device type, op) -> concrete backend; the choice never changes


def _resolve(backend: str, device: torch.device, op: str) -> str:
    key = (backend, device.type, op)
    chosen = _RESOLVED.get(key)
    if chosen is not None:
        return chosen
    chosen = resolve_backend(backend, device, op)
    if chosen in ("cpp", "cuda") and _native_op(op) is None:
        if backend != "auto":
            raise ValueError(f"{op}: backend={backend!r} but the compiled extension has no {op} op "
                             "(rebuild with .ci/dev-install)")
        chosen = "ref"
    _RESOLVED[key] = chosen
    return chosen


def decode_attention(q, k, v, lengths, kv_index=None, causal=True, scale=None, backend="auto"):
    """Attention of q ``[B, H, Tq, D]`` over K/V rows ``[N, H, L, D]`` -> ``[B, H, Tq, D]``.

    See the module docstring for the masking rule and ``kv_index`` sharing.
    """
    _check_attention_args(q, k, v, lengths, kv_index, causal)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    chosen = _resolve(backend, q.device, "decode_attention")
    if chosen == "ref":
        return decode_attention_ref(q, k, v, lengths, kv_index, causal, scale)
    _check_last_dim_unit_stride("decode_attention", q=q, k=k, v=v)
    if chosen == "triton":
        from pix2seq_fast.ops.triton_decode_attention import decode_attention_triton  # noqa: PLC0415
        return decode_attention_triton(q, k, v, lengths, kv_index, causal, scale)
    return torch.ops.pix2seq_fast.decode_attention(q, k, v, lengths, kv_index, bool(causal), scale)


def kv_append(k_cache, v_cache, k_new, v_new, start, backend="auto"):
    """In place: ``k_cache[b, :, start[b] + t] = k_new[b, :, t]`` (same for v), t < T."""
    _check_append_args(k_cache, v_cache, k_new, v_new, start)
    chosen = _resolve(backend, k_cache.device, "kv_append")
    if chosen == "ref":
        kv_append_ref(k_cache, v_cache, k_new, v_new, start)
        return
    _check_last_dim_unit_stride("kv_append", k_cache=k_cache, v_cache=v_cache, k_new=k_new,
                                v_new=v_new)
    if chosen == "triton":
        from pix2seq_fast.ops.triton_decode_attention import kv_append_triton  # noqa: PLC0415
        kv_append_triton(k_cache, v_cache, k_new, v_new, start)
        return
    torch.ops.pix2seq_fast.kv_append(k_cache, v_cache, k_new, v_new, start)
