"""The frozen CNN trunk of the tiny recipes (timm ``tf_efficientnet_lite0`` to stride 16, random
weights: speed only) in ``channels_last``, as ``BackboneEncoder`` runs it, against the same trunk in
the default contiguous (NCHW) layout. Batch 16, canvases 128 and 256 px; ms per image, best of rounds.

Each case runs at one thread and at all cores (``P2S_BENCH_THREADS=n``: only n);
``pytest bench/bench_trunk.py -s`` prints the table.
"""
import copy
import time

import pytest
import torch

from pix2seq_fast.model import create_model

SIZES = (128, 256)
LAYOUTS = ("channels_last", "nchw")
BATCH = 16
RESULTS: dict = {}  # (threads, size, layout) -> seconds per image


@pytest.fixture(scope="module")
def trunks():
    encoder = create_model("tiny-lite0", feature_stride=16).eval().encoder
    nchw = copy.deepcopy(encoder.trunk).to(memory_format=torch.contiguous_format)
    return {"channels_last": encoder, "nchw": nchw}


def layout_fn(layout, trunks, images):
    if layout == "channels_last":
        return lambda: trunks["channels_last"].trunk_features(images)
    tap = trunks["channels_last"].taps
    return lambda: trunks["nchw"].forward_intermediates(images, indices=tap, intermediates_only=True)[0]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("size", SIZES)
def test_trunk_cpu(benchmark, bench_threads, trunks, size, layout):
    images = torch.rand(BATCH, 3, size, size, generator=torch.Generator().manual_seed(0))
    fn = layout_fn(layout, trunks, images)
    with torch.no_grad():
        if layout == "nchw":  # the same features either way (the encoder normalises first; raw here)
            torch.testing.assert_close(fn(), trunks["channels_last"].trunk.forward_intermediates(
                images.contiguous(memory_format=torch.channels_last), indices=trunks["channels_last"].taps,
                intermediates_only=True)[0], rtol=1e-4, atol=1e-4)
        start = time.perf_counter()
        fn()
        rounds = max(3, min(20, int(2.0 / max(time.perf_counter() - start, 1e-6))))
        benchmark.group = f"trunk {size} px, {bench_threads} threads"
        benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
    RESULTS[(bench_threads, size, layout)] = benchmark.stats.stats.min / BATCH


def test_zz_print_trunk_table(capsys):
    assert RESULTS, "run the whole file: the table uses the benchmarks above"
    lines = []
    for threads in sorted({key[0] for key in RESULTS}):
        lines += [f"EfficientNet-Lite0 trunk to stride 16, CPU, {threads} threads, batch {BATCH}; "
                  "best-of-rounds ms per image",
                  f"{'canvas':8s} {'channels_last':>14s} {'nchw':>9s} {'nchw/cl':>8s}"]
        for size in SIZES:
            ms = {layout: RESULTS.get((threads, size, layout), float("nan")) * 1e3 for layout in LAYOUTS}
            lines.append(f"{size:<8d} {ms['channels_last']:14.1f} {ms['nchw']:9.1f} "
                         f"{ms['nchw'] / ms['channels_last']:7.2f}x")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
