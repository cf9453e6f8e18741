"""The bf16 encoder's self-attention (``encoder_attention``, one ViT-B layer at the 640 canvas: 1600
tokens, 12 heads of 64) on the CPU against what timm's ``Attention`` runs in its place:

- ``sdpa_bf16``: reshape/permute of the QKV projection, ``F.scaled_dot_product_attention`` on bf16
  (PyTorch's CPU flash attention) and the transpose back — the bf16 encoder without the kernel;
- ``sdpa_fp32``: the same in fp32 (the fp32 encoder's attention).

At one and at all cores (``P2S_BENCH_THREADS=n``: only n); best-of-rounds ms and GFLOP/s (4 N² D
flops per image and head). No goal of its own: it is what the keypoints and detection rows of
``bench_predict.py`` rest on. The kernel's vdpbf16ps path needs AVX512-BF16; elsewhere the scalar
path is far slower and the bench skips, saying so.
"""
import pytest
import torch
import torch.nn.functional as F

from bench_lowp_linear import best_per_call
from pix2seq_fast.ops.encoder_attention import encoder_attention, encoder_attention_ref

HEADS, HEAD_DIM, TOKENS = 12, 64, 1600
BATCHES = (1, 4)  # one image; the 4 person crops of a keypoints call
RESULTS: dict = {}  # (threads, batch, impl) -> seconds

pytestmark = pytest.mark.skipif(not torch.cpu._is_avx512_bf16_supported(),
                                reason="encoder_attention's vector path needs an AVX512-BF16 CPU")


def sdpa(qkv):
    b, n, _ = qkv.shape
    q, k, v = qkv.reshape(b, n, 3, HEADS, HEAD_DIM).permute(2, 0, 3, 1, 4).unbind(0)
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, HEADS * HEAD_DIM)


@pytest.mark.parametrize("batch", BATCHES)
def test_encoder_attention_cpu(benchmark, bench_threads, batch):
    qkv = torch.randn(batch, TOKENS, 3 * HEADS * HEAD_DIM, generator=torch.Generator().manual_seed(0))
    qkv_bf16, qkv_fp32 = qkv.bfloat16(), qkv
    with torch.inference_mode():
        ours = encoder_attention(qkv_bf16, HEADS, backend="cpp")
        torch.testing.assert_close(ours.float(), encoder_attention_ref(qkv_bf16.float(), HEADS), rtol=8e-3,
                                   atol=2e-2)
        fns = {"ours": lambda: encoder_attention(qkv_bf16, HEADS, backend="cpp"),
               "sdpa_bf16": lambda: sdpa(qkv_bf16), "sdpa_fp32": lambda: sdpa(qkv_fp32)}
        for impl, fn in fns.items():
            RESULTS[(bench_threads, batch, impl)] = best_per_call(fn, calls=1, rounds=3)
        benchmark.group = f"encoder_attention B {batch}, {bench_threads} threads"
        benchmark.pedantic(fns["ours"], rounds=2, iterations=1, warmup_rounds=0)


def test_zz_print_encoder_attention_table(capsys):
    assert RESULTS, "run the whole file: the table uses the benchmarks above"
    lines = [f"encoder_attention, CPU, {TOKENS} tokens x {HEADS} heads x {HEAD_DIM}; best-of-rounds ms (GFLOP/s)",
             f"{'threads':>7s} {'B':>2s} {'ours':>15s} {'SDPA bf16':>15s} {'SDPA fp32':>15s} "
             f"{'bf16/ours':>9s} {'fp32/ours':>9s}"]
    for threads, batch in sorted({key[:2] for key in RESULTS}):
        s = {impl: RESULTS[(threads, batch, impl)] for impl in ("ours", "sdpa_bf16", "sdpa_fp32")}
        flops = 4 * batch * HEADS * TOKENS * TOKENS * HEAD_DIM
        cell = {impl: f"{t * 1e3:7.1f} ({flops / t / 1e9:4.0f})" for impl, t in s.items()}
        lines.append(f"{threads:7d} {batch:2d} {cell['ours']:>15s} {cell['sdpa_bf16']:>15s} {cell['sdpa_fp32']:>15s} "
                     f"{s['sdpa_bf16'] / s['ours']:8.2f}x {s['sdpa_fp32'] / s['ours']:8.2f}x")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
