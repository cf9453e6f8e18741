"""Polygon rasterization + 8-sample mask voting on the CPU (SPEC §4 segmentation), 640x480 images:
ours (``rasterize_vote`` from a ``PackedPolygons``, C++ kernel) against

- ``authors``: pycocotools ``_mask.frPoly`` per sample + ``merge`` + ``decode``, then
  ``np.mean(masks, 0) >= 0.5`` — the authors' path; our masks must equal it pixel for pixel;
- ``cv2``: ``cv2.fillPoly`` per sample into a uint8 canvas, summed, ``>= half`` (not pixel-exact).

Variants of ours: default threads (``ours``), one thread (``ours_1t``), COCO RLE output (``ours_rle``).
Polygons are star-shaped with 16-128 vertices, radii from 8 px to ~190 px, the 8 samples of an
instance jittered around a common shape (as model samples are). The last test prints the ratio
table measured in this run (``pytest bench/bench_rasterize.py -s``).
"""
import time

import cv2
import numpy as np
import pytest
import torch
from pycocotools import _mask

from pix2seq_fast.ops import pack_polygons, rasterize_vote

HEIGHT, WIDTH, SAMPLES = 480, 640, 8
CASES = {"10 inst x 8 samples": 10, "100 inst x 8 samples": 100}
IMPLS = ["ours", "ours_1t", "ours_rle", "authors", "cv2"]
RESULTS: dict = {}

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def make_polygons(num_instances, seed=0):
    """``[N][S][1]`` flat float64 ``[x0, y0, ...]`` polygons in pixels."""
    rng = np.random.default_rng(seed)
    polys = []
    for _ in range(num_instances):
        radius = float(np.exp(rng.uniform(np.log(8), np.log(190))))
        cx, cy = rng.uniform(radius, WIDTH - radius), rng.uniform(radius, HEIGHT - radius)
        k = int(rng.integers(16, 129))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        shape = radius * (1 + 0.25 * np.sin(3 * ang + rng.uniform(0, 6)))
        samples = []
        for _ in range(SAMPLES):
            r = shape * (1 + rng.normal(0, 0.03, k))
            x = cx + r * np.cos(ang) + rng.normal(0, 1, k)
            y = cy + r * np.sin(ang) + rng.normal(0, 1, k)
            samples.append([np.stack([x, y], 1).reshape(-1)])
        polys.append(samples)
    return polys


def authors_path(polys):
    out = []
    for samples in polys:
        masks = [_mask.decode([_mask.merge(_mask.frPoly(parts, HEIGHT, WIDTH), 0)])[:, :, 0]
                 for parts in samples]
        out.append(np.mean(masks, axis=0) >= 0.5)
    return out


def cv2_voting(polys):
    out = []
    for samples in polys:
        votes = np.zeros((HEIGHT, WIDTH), np.uint8)
        for parts in samples:
            canvas = np.zeros((HEIGHT, WIDTH), np.uint8)
            cv2.fillPoly(canvas, [np.round(p.reshape(-1, 2)).astype(np.int32) for p in parts], 1)
            votes += canvas
        out.append(votes * 2 >= len(samples))
    return out


GOAL = 15.0  # authors / ours, at all cores and at one thread


def ours_one_thread(packed):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return rasterize_vote(packed, HEIGHT, WIDTH)
    finally:
        torch.set_num_threads(threads)


def make_fn(impl, polys, packed):
    return {
        "ours": lambda: rasterize_vote(packed, HEIGHT, WIDTH, backend="cpp"),
        "ours_1t": lambda: ours_one_thread(packed),
        "ours_rle": lambda: rasterize_vote(packed, HEIGHT, WIDTH, backend="cpp", output="rle"),
        "authors": lambda: authors_path(polys),
        "cv2": lambda: cv2_voting(polys),
    }[impl]


def rounds_for(fn, budget_s=1.0):
    fn()
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    return max(2, min(100, int(budget_s / max(once, 1e-6))))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", list(CASES))
def test_rasterize_vote_cpu(benchmark, case, impl):
    polys = make_polygons(CASES[case])
    packed = pack_polygons(polys)
    fn = make_fn(impl, polys, packed)
    result = fn()
    if impl in ("ours", "ours_1t"):  # identical pixels to the authors' path
        np.testing.assert_array_equal(result.numpy(), np.stack(authors_path(polys)))
    benchmark.group = case
    benchmark.pedantic(fn, rounds=rounds_for(fn), iterations=1, warmup_rounds=0)
    RESULTS[(case, impl)] = benchmark.stats.stats.median


def test_zz_print_ratio_table(capsys):
    """Speed-up of ours over each baseline, from the medians measured above in this run."""
    assert RESULTS, "run the whole file: the table uses the benchmarks above"
    lines = [f"rasterize_vote, CPU, {torch.get_num_threads()} threads, {HEIGHT}x{WIDTH}, "
             f"{SAMPLES} samples/instance; median ms; speed-up = baseline / ours",
             f"{'case':22s} " + " ".join(f"{i:>9s}" for i in IMPLS) +
             f"  authors/ours authors/ours_1t cv2/ours cv2/ours_1t  goal authors/ours >= {GOAL}x at both"]
    for case in CASES:
        ms = {i: RESULTS.get((case, i), float("nan")) * 1e3 for i in IMPLS}
        lines.append(f"{case:22s} " + " ".join(f"{ms[i]:9.2f}" for i in IMPLS) +
                     f"  {ms['authors'] / ms['ours']:11.1f}x {ms['authors'] / ms['ours_1t']:14.1f}x"
                     f" {ms['cv2'] / ms['ours']:7.2f}x {ms['cv2'] / ms['ours_1t']:10.2f}x  "
                     f"{'met' if min(ms['authors'] / ms['ours'], ms['authors'] / ms['ours_1t']) >= GOAL else 'NOT met'}")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
