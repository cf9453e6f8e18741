"""The GPU rows of the benchmarks, as one table; run by ``bench/gpu_check.sh`` (which builds with CUDA
and runs the CUDA/Triton tests first). Needs a CUDA GPU and ``TRITON_INTERPRET`` unset or 0.

For every op x GPU backend (``cuda``, ``triton``) at the benchmark shapes: the max error against the
PyTorch reference on the same GPU inputs (attention, kv_append: max |difference|; sampling: tokens
that differ from the reference given the same uniforms, on rows whose outcome is not within float
rounding of a boundary, plus the max |logprob| difference; raster: differing pixels against the C++
kernel, which equals pycocotools), the median time, and the speed-up over the PyTorch baseline
(attention: SDPA on K/V expanded per sequence; kv_append: ``index_put_``; sampling: Hugging Face's
sort-based top-p recipe; raster: the authors' pycocotools path on the CPU). Then generation on the GPU:
our engine's greedy tokens equal the CPU engine's, and its tokens/s against HF ``generate``.

Exits 1 when any error exceeds its tolerance (the table marks the row ``FAIL``).
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

ROWS = []
FAILED = []


def gpu_time(fn, reps=20):
    """Median seconds of ``fn`` (CUDA events; CPU functions by the wall clock)."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return float(np.median(times))


def wall_time(fn, reps=5):
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def row(op, shape, backend, error, tolerance, seconds, baseline_s, baseline):
    ok = error <= tolerance
    ROWS.append((op, shape, backend, error, tolerance, seconds * 1e3, baseline_s * 1e3, baseline,
                 baseline_s / seconds, "ok" if ok else "FAIL"))
    if not ok:
        FAILED.append(f"{op} {shape} {backend}: error {error:.3g} > {tolerance:.3g}")


def check_decode_attention():
    from pix2seq_fast.ops import decode_attention, kv_append
    from pix2seq_fast.ops.decode_attention import kv_append_ref

    heads, dim = 16, 32
    shapes = {  # name: (B, N, L, causal, shared)
        "det self B1 L501": (1, 1, 501, True, False),
        "det self B8 L501": (8, 8, 501, True, False),
        "det cross B8 L1600": (8, 8, 1600, False, False),
        "seg cross B80 shared L1600": (80, 1, 1600, False, True),
        "kp cross B16 shared L1600": (16, 1, 1600, False, True),
    }
    for dtype, tol in ((torch.float32, 2e-5), (torch.bfloat16, 1.6e-2)):
        for name, (b, n, length, causal, shared) in shapes.items():
            g = torch.Generator(device="cuda").manual_seed(0)
            q = torch.randn(b, heads, 1, dim, device="cuda", generator=g).to(dtype)
            k = torch.randn(n, heads, length, dim, device="cuda", generator=g).to(dtype)
            v = torch.randn(n, heads, length, dim, device="cuda", generator=g).to(dtype)
            lengths = torch.full((b,), length, dtype=torch.int64, device="cuda")
            kv_index = torch.zeros(b, dtype=torch.int64, device="cuda") if shared else None
            ref = decode_attention(q.float(), k.float(), v.float(), lengths, kv_index, causal, backend="ref")
            k_rows = k if kv_index is None else k.index_select(0, kv_index)
            v_rows = v if kv_index is None else v.index_select(0, kv_index)
            sdpa = gpu_time(lambda: F.scaled_dot_product_attention(q, k_rows, v_rows))
            for backend in ("cuda", "triton"):
                fn = lambda: decode_attention(q, k, v, lengths, kv_index, causal, backend=backend)  # noqa: E731
                err = (fn().float() - ref).abs().max().item()
                row("decode_attention", f"{name} {str(dtype)[6:]}", backend, err, tol, gpu_time(fn), sdpa,
                    "SDPA expanded")
    # kv_append: the detection cache, 8 rows, one new position each
    k_cache = torch.zeros(8, heads, 512, dim, device="cuda")
    v_cache = torch.zeros_like(k_cache)
    k_new = torch.randn(8, heads, 1, dim, device="cuda")
    v_new = torch.randn_like(k_new)
    start = torch.randint(0, 500, (8,), device="cuda")
    ref_k, ref_v = k_cache.clone(), v_cache.clone()
    kv_append_ref(ref_k, ref_v, k_new, v_new, start)
    rows_idx = torch.arange(8, device="cuda")

    def index_put():
        k_cache[rows_idx, :, start] = k_new[:, :, 0]
        v_cache[rows_idx, :, start] = v_new[:, :, 0]

    base = gpu_time(index_put)
    for backend in ("cuda", "triton"):
        kc, vc = torch.zeros_like(k_cache), torch.zeros_like(v_cache)
        fn = lambda: kv_append(kc, vc, k_new, v_new, start, backend=backend)  # noqa: E731
        fn()
        err = max((kc - ref_k).abs().max().item(), (vc - ref_v).abs().max().item())
        row("kv_append", "B8 H16 L512 T1", backend, err, 0.0, gpu_time(fn), base, "index_put_")


def sort_recipe(logits, top_p):
    sorted_logits, sorted_index = torch.sort(logits, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - top_p)
    remove_sorted[..., -1:] = False
    remove = remove_sorted.scatter(1, sorted_index, remove_sorted)
    return torch.multinomial(logits.masked_fill(remove, float("-inf")).softmax(dim=-1), 1).squeeze(1)


def check_top_p_sample():
    from pix2seq_fast.ops.sampling import kept_mask_reference, tempered_logits, top_p_sample_reference
    from pix2seq_fast.ops.triton_sampling import top_p_sample_triton

    def kernel(backend):
        if backend == "triton":
            return lambda *a: top_p_sample_triton(*a, "standard", True)
        return lambda *a: torch.ops.pix2seq_fast.top_p_sample(*a, "standard", True)

    for batch, vocab in ((1, 35000), (8, 35000), (80, 35000), (256, 3000)):
        g = torch.Generator(device="cuda").manual_seed(batch)
        x = torch.randn(batch, vocab, device="cuda", generator=g) * 3
        p = torch.full((batch,), 0.8, device="cuda")
        k = torch.zeros(batch, dtype=torch.int64, device="cuda")
        t = torch.ones(batch, device="cuda")
        u = torch.rand(batch, device="cuda", generator=g)
        ref_ids, ref_lp = top_p_sample_reference(x, p, k, t, u, "standard")
        # rows whose outcome is not within rounding of a CDF step or of the p boundary
        scaled = tempered_logits(x, p, t)
        stable = (kept_mask_reference(scaled, p + 1e-5, k, "standard")
                  == kept_mask_reference(scaled, p - 1e-5, k, "standard")).all(-1)
        w = torch.exp((scaled - scaled.max(-1, keepdim=True).values).double()) * kept_mask_reference(
            scaled, p, k, "standard")
        cdf = w.cumsum(-1) / w.sum(-1, keepdim=True)
        clear = stable & ((cdf - u.double()[:, None]).abs() > 1e-5).all(-1)
        base = gpu_time(lambda: sort_recipe(x, 0.8))
        for backend in ("cuda", "triton"):
            fn = lambda: kernel(backend)(x, p, k, t, u)  # noqa: E731
            ids, lp = fn()
            wrong = int(((ids != ref_ids) & clear).sum())
            lp_err = (lp - ref_lp).abs().max().item()
            row("top_p_sample", f"B{batch} V{vocab} tokens", backend, wrong, 0, gpu_time(fn), base, "sort recipe")
            row("top_p_sample", f"B{batch} V{vocab} logprob", backend, lp_err, 1e-4, gpu_time(fn), base,
                "sort recipe")


def check_rasterize():
    sys.path.insert(0, os.path.dirname(__file__))
    from bench_rasterize import HEIGHT, WIDTH, authors_path, make_polygons

    from pix2seq_fast.ops import pack_polygons, rasterize_vote

    for n in (10, 100):
        polys = make_polygons(n)
        packed = pack_polygons(polys)
        want = rasterize_vote(packed, HEIGHT, WIDTH, backend="cpp")
        on_gpu = packed.to("cuda")
        fn = lambda: rasterize_vote(on_gpu, HEIGHT, WIDTH, backend="cuda")  # noqa: E731
        wrong = int((fn().cpu() != want).sum())
        base = wall_time(lambda: authors_path(polys), reps=3)
        row("rasterize_vote", f"{n} inst x 8 samples {HEIGHT}x{WIDTH}", "cuda", wrong, 0, gpu_time(fn), base,
            "pycocotools (CPU)")


def check_generation():
    from transformers.modeling_outputs import BaseModelOutput

    from hf_baseline import mbart_like_vit_b

    from pix2seq_fast.generation import SamplingConfig, generate
    from pix2seq_fast.model import create_model

    torch.manual_seed(0)
    model = create_model("vit-b", enc_layers=1).eval()
    memory = torch.randn(1, 1600, 512, generator=torch.Generator().manual_seed(1))
    # Greedy tokens on the GPU (cuda kernels) == on the CPU (C++ kernels), on a sharpened copy so that
    # no step's top-2 gap is within float rounding.
    sharp = create_model("vit-b", enc_layers=1).eval()
    sharp.load_state_dict(model.state_dict())
    with torch.no_grad():
        sharp.decoder.token_embedding.weight.mul_(5)
    prompts = torch.full((2, 1), 10, dtype=torch.int64)
    mem2 = torch.cat([memory, memory.flip(1)])
    args = (torch.ones(2, dtype=torch.int64), torch.arange(2), 64, SamplingConfig(greedy=True))
    cpu = generate(sharp, mem2, prompts, *args)
    sharp.cuda()
    gpu_args = tuple(a.cuda() if isinstance(a, torch.Tensor) else a for a in args)
    greedy = lambda: generate(sharp, mem2.cuda(), prompts.cuda(), *gpu_args)  # noqa: E731
    differ = int((greedy().tokens.cpu() != cpu.tokens).sum())
    row("generate", "greedy B2 64 tok: tokens != CPU", "auto", differ, 0, gpu_time(greedy, reps=3),
        wall_time(lambda: generate(sharp.cpu(), mem2, prompts, *args), reps=1), "same engine, CPU")
    del sharp
    model.cuda()
    hf = mbart_like_vit_b().cuda()
    for batch, steps, top_p, name in ((1, 128, 0.4, "detect b1 128 tok"), (80, 64, 0.8, "segment b80 64 tok")):
        mem = memory.cuda()
        pr = torch.full((batch, 1), 10, dtype=torch.int64, device="cuda")
        ours = lambda: generate(model, mem, pr, torch.ones(batch, dtype=torch.int64, device="cuda"),  # noqa: E731
                                torch.zeros(batch, dtype=torch.int64, device="cuda"), steps,
                                SamplingConfig(top_p=top_p))

        def theirs():
            with torch.no_grad():
                hf.generate(encoder_outputs=BaseModelOutput(last_hidden_state=mem.expand(batch, -1, -1)),
                            decoder_input_ids=pr, max_new_tokens=steps, min_new_tokens=steps, do_sample=True,
                            top_p=top_p, top_k=0, pad_token_id=0, eos_token_id=None)

        row("generate", name, "auto", 0, 0, gpu_time(ours, reps=3), gpu_time(theirs, reps=3), "HF generate")


def main():
    if not torch.cuda.is_available():
        print("GPU CHECK FAILED: torch sees no CUDA device", file=sys.stderr)
        return 1
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        print("GPU CHECK FAILED: TRITON_INTERPRET=1 would run the Triton kernels on the CPU", file=sys.stderr)
        return 1
    from pix2seq_fast._ext import load_extension

    ext = load_extension()
    if ext is None or not ext.cuda_compiled:
        print("GPU CHECK FAILED: pix2seq_fast._C was built without CUDA (WITH_CUDA=ON)", file=sys.stderr)
        return 1
    for check in (check_decode_attention, check_top_p_sample, check_rasterize, check_generation):
        start = time.perf_counter()
        try:
            check()
        except Exception as e:  # a crash is a failure too, with its reason in the table
            ROWS.append((check.__name__[6:], "-", "-", float("nan"), 0, float("nan"), float("nan"), "-",
                         float("nan"), f"FAIL {type(e).__name__}: {e}"))
            FAILED.append(f"{check.__name__}: {type(e).__name__}: {e}")
        print(f"# {check.__name__}: {time.perf_counter() - start:.1f} s", flush=True)
    name = torch.cuda.get_device_name(0)
    print(f"\nGPU check on {name}, torch {torch.__version__}, CUDA {torch.version.cuda}; times are medians, "
          "speed-up = baseline / ours")
    print(f"{'op':17s} {'shape':36s} {'backend':9s} {'max err':>9s} {'tol':>7s} {'ms':>9s} {'base ms':>9s} "
          f"{'baseline':18s} {'speed-up':>8s}  status")
    for op, shape, backend, err, tol, ms, base_ms, baseline, speedup, status in ROWS:
        print(f"{op:17s} {shape:36s} {backend:9s} {err:9.3g} {tol:7.2g} {ms:9.3f} {base_ms:9.3f} "
              f"{baseline:18s} {speedup:7.1f}x  {status}")
    if FAILED:
        print("\nGPU CHECK FAILED:\n  " + "\n  ".join(FAILED), file=sys.stderr)
        return 1
    print("\nGPU check: every row within tolerance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
