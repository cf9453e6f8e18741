"""The weight-only low-precision linear layer of ``quantize_decoder`` (``LowPrecisionLinear``) on the
CPU: the ``lowp_linear`` kernel against

- ``fp32``: ``F.linear`` with the fp32 weight (what the layer replaces; MKL);
- ``bf16_gemm``: ``F.linear`` on activations rounded to bf16 with the bf16 weight (oneDNN), the path
  the layer takes beyond ``KERNEL_MAX_ROWS_NATIVE_BF16`` rows on a CPU that multiplies bf16 natively.

Shapes are a decoder step's: the 35K-token output projection and the 2048 x 512 MLP layer, at 1, 8
and 32 rows. Each timed call cycles through enough copies of the weight (>= 96 MB) that it streams
from memory, as a decode step does. Each case runs at one thread and at all cores
(``P2S_BENCH_THREADS=n``: only n). The last test prints best-of-rounds microseconds and the kernel's
weight bandwidth (``pytest bench/bench_lowp_linear.py -s``; GB/s = weight bytes / time, a bandwidth at one row). No goal: it shows what the decode-step
numbers of ``bench_generation.py`` rest on, and where the bf16 GEMM overtakes the kernel.
"""
import time

import pytest
import torch
import torch.nn.functional as F

from pix2seq_fast.model.quantize import LowPrecisionLinear, _kernel

SHAPES = {"projection 35000x512": (35000, 512), "mlp 2048x512": (2048, 512)}
ROWS = (1, 8, 32)
DTYPES = ("bf16", "int8")
STREAM_BYTES = 96 << 20
RESULTS: dict = {}  # (threads, shape, dtype, rows, impl) -> seconds per call


def copies_of(layer):
    count = max(2, STREAM_BYTES // (layer.weight.numel() * layer.weight.element_size()))
    return [LowPrecisionLinear(layer.dequantized(), None, layer.dtype_name) for _ in range(count)]


def best_per_call(fn, calls, rounds=5):
    fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_lowp_linear_cpu(benchmark, bench_threads, shape, dtype, rows):
    n, k = SHAPES[shape]
    g = torch.Generator().manual_seed(0)
    layers = copies_of(LowPrecisionLinear(torch.randn(n, k, generator=g) * 0.05, None, dtype))
    x = torch.randn(rows, k, generator=g)
    kernel = _kernel()
    assert kernel is not None, "pix2seq_fast._C has no lowp_linear kernel (pip install .)"
    torch.testing.assert_close(kernel(x, layers[0].weight, layers[0].scale, None),
                               F.linear(x, layers[0].dequantized()), rtol=1e-4, atol=1e-3)
    fns = {"ours": lambda: [kernel(x, m.weight, m.scale, None) for m in layers]}
    fp32 = [m.dequantized() for m in layers[:max(2, len(layers) // 2)]]  # fp32 is twice bf16's bytes
    fns["fp32"] = lambda: [F.linear(x, w) for w in fp32]
    if dtype == "bf16":
        fns["bf16_gemm"] = lambda: [F.linear(x.to(torch.bfloat16), m.weight).float() for m in layers]
    calls = {"ours": len(layers), "fp32": len(fp32), "bf16_gemm": len(layers)}
    with torch.inference_mode():
        for impl, fn in fns.items():
            RESULTS[(bench_threads, shape, dtype, rows, impl)] = best_per_call(fn, calls[impl])
        benchmark.group = f"lowp_linear {shape} {dtype} rows {rows}, {bench_threads} threads"
        benchmark.pedantic(fns["ours"], rounds=3, iterations=1, warmup_rounds=0)


def test_zz_print_lowp_table(capsys):
    assert RESULTS, "run the whole file: the table uses the benchmarks above"
    lines = []
    for threads in sorted({key[0] for key in RESULTS}):
        lines += [f"lowp_linear, CPU, {threads} threads, weights streamed from memory; best-of-rounds us per call",
                  f"{'shape':22s} {'dtype':5s} {'rows':>4s} {'ours':>9s} {'GB/s':>6s} {'fp32':>9s} "
                  f"{'bf16_gemm':>9s} {'fp32/ours':>9s} {'gemm/ours':>9s}"]
        for shape, (n, k) in SHAPES.items():
            for dtype in DTYPES:
                for rows in ROWS:
                    us = {impl: RESULTS.get((threads, shape, dtype, rows, impl), float("nan")) * 1e6
                          for impl in ("ours", "fp32", "bf16_gemm")}
                    gbps = n * k * (2 if dtype == "bf16" else 1) / (us["ours"] * 1e-6) / 1e9
                    gemm = (f"{us['bf16_gemm']:9.1f}", f"{us['bf16_gemm'] / us['ours']:8.2f}x") \
                        if dtype == "bf16" else (f"{'-':>9s}", f"{'-':>9s}")
                    lines.append(f"{shape:22s} {dtype:5s} {rows:4d} {us['ours']:9.1f} {gbps:6.1f} "
                                 f"{us['fp32']:9.1f} {gemm[0]} {us['fp32'] / us['ours']:8.2f}x {gemm[1]}")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
