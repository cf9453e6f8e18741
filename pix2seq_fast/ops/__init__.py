"""The custom ops. Each has a pure-PyTorch reference, a CPU C++ kernel, a CUDA kernel and (attention
and sampling) a Triton kernel, chosen by ``backend="auto"|"ref"|"cpp"|"cuda"|"triton"``. ``encoder_attention`` is
CPU-only (reference + C++): the bf16 image encoder's inference path on CPUs without AMX."""
from pix2seq_fast.ops._backend import BACKENDS, resolve_backend
from pix2seq_fast.ops.decode_attention import decode_attention, kv_append
from pix2seq_fast.ops.encoder_attention import encoder_attention
from pix2seq_fast.ops.sampling import top_p_sample
from pix2seq_fast.ops.rasterize import PackedPolygons, pack_polygons, rasterize_vote

__all__ = ["BACKENDS", "resolve_backend", "decode_attention", "kv_append", "encoder_attention", "top_p_sample",
           "PackedPolygons", "pack_polygons", "rasterize_vote"]
