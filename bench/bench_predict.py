"""End-to-end task throughput (images/s) through ``Pix2Seq.predict`` on the CPU, against the pipeline
a user would otherwise build from the same model's image encoder and Hugging Face ``generate``.

Model: the vit-b preset (ViT-B/16 encoder, 6 x 512 decoder, 35K vocabulary), random weights, 640
canvas, images 640 x 480. SPEC decoding settings (top-p 0.4 / 0.8 / 0.1 / 1.0, pix2seq rule).

Tasks (knobs in brackets, defaults = the issue's settings):
- detect: 100 objects (500 tokens, fixed length) [P2S_BENCH_PREDICT_DET_OBJECTS];
- segment: 10 given boxes per image x 8 samples, up to 16 points per sample by default (32 tokens;
  random weights never end a polygon, so every sequence runs to the cap; ``predict``'s own default
  is 128 points, which makes the baseline's 80-row HF run take ~10 minutes here)
  [P2S_BENCH_PREDICT_SEG_POINTS], masks voted at the image size and returned as RLE;
- keypoints: 4 given person boxes per image (4 crops encoded per image), 34 tokens;
- caption: 32 tokens [P2S_BENCH_PREDICT_CAPTION_TOKENS] (a tiny SentencePiece model is attached).

Systems:
- ``ours``: ``predict`` with default options (fp32, the authors' unconstrained decoding);
- ``ours-fast``: ``predict(..., constrained=True)`` on the model after
  ``quantize_decoder(model, P2S_BENCH_PREDICT_LOWP)`` (default bf16; ``none`` keeps fp32) and, where
  the CPU multiplies bf16 natively (AMX / AVX512-BF16), ``quantize_encoder(model)``
  (``P2S_BENCH_PREDICT_ENCODER``: ``auto`` | ``bf16`` | ``fp32``);
- ``baseline``: ``model.encode`` of the same canvas batch, then ``transformers`` ``generate`` of an
  mBART decoder of the same dims (pre-LN, 6 x 512, MLP 2048, 16 heads, 35K vocabulary, random
  weights) given the encoding as ``encoder_outputs`` (expanded to one row per sequence; it computes
  and caches the cross-attention K/V per sequence; segmentation runs one ``generate`` per image, as
  640 rows at batch 8 would need ~27 GB of that cache), sampling with its sort-based top-p warper,
  ``output_logits`` for the scores the task needs; then our task decoders (``decode_detection`` /
  ``decode_keypoints`` / ``decode_caption``) and, for masks, the authors' pycocotools path (frPoly per
  sample, merge, decode, mean >= 0.5, RLE encode).

Every system includes its image encoder, timed inside its run (``ours`` and the baseline run the same
fp32 ``model.encode``); the table also gives each cell's encoder seconds alone, fp32 and the fast
system's, so that the share of a ratio that comes from the encoder can be read off.
Cells ``task:batch:threads`` (``P2S_BENCH_PREDICT_CELLS``, ``all`` = the issue's full grid: every task
at batch 1 and 8 images, one thread and all cores; the default is the subset that fits ~15 minutes
here). One timed round per cell (a cell takes seconds to minutes); at batch 1 every system first runs
one untimed warm-up round, since a system's first call at a new shape and thread count pays one-time
costs (oneDNN's bf16 GEMM primitives, first-touch allocations: on the Zen 5 VM, in a one-off script,
the fast keypoints call took 4.4 s the first time at two threads, 3.0-3.3 s after); batch-8 cells
(a minute or more each) run cold. The last test prints the table (``pytest bench/bench_predict.py -s``).
"""
import copy
import os
import time

import numpy as np
import pytest
import torch

from hf_baseline import mbart_like_vit_b

# task:batch:threads cells (threads 0 = all cores). The default grid fits ~10-15 minutes on a 2-core
# machine; P2S_BENCH_PREDICT_CELLS=all runs every task at batch 1 and 8, at one thread and all cores.
DEFAULT_CELLS = "detect:1:1,detect:1:0,detect:8:0,segment:1:0,keypoints:1:0,caption:1:0"
_cells = os.environ.get("P2S_BENCH_PREDICT_CELLS", DEFAULT_CELLS)
if _cells == "all":
    _cells = ",".join(f"{t}:{b}:{n}" for n in (1, 0) for b in (1, 8)
                      for t in ("detect", "segment", "keypoints", "caption"))
CELLS = [(c.split(":")[0], int(c.split(":")[1]), int(c.split(":")[2])) for c in _cells.split(",") if c]
DET_OBJECTS = int(os.environ.get("P2S_BENCH_PREDICT_DET_OBJECTS", 100))
SEG_POINTS = int(os.environ.get("P2S_BENCH_PREDICT_SEG_POINTS", 16))
CAPTION_TOKENS = int(os.environ.get("P2S_BENCH_PREDICT_CAPTION_TOKENS", 32))
LOWP = os.environ.get("P2S_BENCH_PREDICT_LOWP", "bf16")
ENCODER = os.environ.get("P2S_BENCH_PREDICT_ENCODER", "auto")
SYSTEMS = ["ours", "ours-fast", "baseline"]
HEIGHT, WIDTH, SEG_INSTANCES, SEG_SAMPLES, PERSONS = 480, 640, 10, 8, 4
TOP_P = {"detect": 0.4, "segment": 0.8, "keypoints": 0.1, "caption": 1.0}
GOALS = {"detect": 2.0, "segment": 10.0, "keypoints": 3.0, "caption": 1.5}
WARMUP_MAX_BATCH = 1  # cells up to this batch run one untimed warm-up round first (see the module docstring)
RESULTS: dict = {}  # (task, batch, threads, system) -> images/s
ENCODER_SECONDS: dict = {}  # (task, batch, threads) -> (fp32 encoder s, fast system's encoder s)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


def thread_count(t):
    return t if t > 0 else os.cpu_count()


@pytest.fixture(scope="module")
def models():
    from pix2seq_fast.model import create_model
    from pix2seq_fast.model.quantize import native_bf16, quantize_decoder, quantize_encoder
    from pix2seq_fast.text import Tokenizer

    torch.manual_seed(0)
    model = create_model("vit-b").eval()
    words = "a man dog cat on the red blue sits runs with table street car bus train sky".split()
    model.tokenizer = Tokenizer.train([" ".join(words[i:] + words[:i]) for i in range(len(words))], 64)
    fast = copy.deepcopy(model)
    fast.tokenizer = model.tokenizer
    if LOWP != "none":
        quantize_decoder(fast, LOWP)
    if ENCODER == "bf16" or (ENCODER == "auto" and native_bf16()):
        quantize_encoder(fast)
    for m in (model, fast):  # one-time costs (thread pool, caches, kernel loading) outside the timed rounds
        m.predict(images_of(1), "caption", max_length=2, constrained=m is fast)
    return model, fast


def fast_encoder_name(fast):
    from pix2seq_fast.model.quantize import LowPrecisionEncoder

    return "bf16" if isinstance(fast.encoder, LowPrecisionEncoder) else "fp32"


def encoder_inputs(model, task, batch):
    """The canvases ``predict`` encodes for this cell: ``[B or B * PERSONS, 3, canvas, canvas]``."""
    canvas = model.config.image_size
    return torch.rand(batch * (PERSONS if task == "keypoints" else 1), 3, canvas, canvas)


def encoder_seconds(model, pixels):
    with torch.inference_mode():
        start = time.perf_counter()
        model.encode(pixels)
        return time.perf_counter() - start


@pytest.fixture(scope="module")
def hf_model():
    from transformers.modeling_outputs import BaseModelOutput

    hf = mbart_like_vit_b()
    with torch.no_grad():  # warm-up outside the timed rounds
        hf.generate(encoder_outputs=BaseModelOutput(last_hidden_state=torch.zeros(1, 16, 512)),
                    decoder_input_ids=torch.full((1, 1), 10), max_new_tokens=2, do_sample=False, pad_token_id=0)
    return hf


def images_of(batch):
    rng = np.random.default_rng(batch)
    return [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(batch)]


def boxes_of(n, seed):
    """``[n, 4]`` pixel xyxy boxes inside the image."""
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(0, WIDTH * 0.6, n)
    y0 = rng.uniform(0, HEIGHT * 0.6, n)
    return np.stack([x0, y0, x0 + rng.uniform(40, WIDTH * 0.4, n), y0 + rng.uniform(40, HEIGHT * 0.4, n)],
                    1).astype(np.float32)


def task_kwargs(task, batch):
    if task == "detect":
        return dict(max_objects=DET_OBJECTS)
    if task == "segment":
        return dict(boxes=[boxes_of(SEG_INSTANCES, i) for i in range(batch)],
                    labels=[np.full(SEG_INSTANCES, 1 + i, np.int64) for i in range(batch)],
                    num_samples=SEG_SAMPLES, max_points=SEG_POINTS)
    if task == "keypoints":
        return dict(boxes=[boxes_of(PERSONS, 100 + i) for i in range(batch)],
                    labels=[np.ones(PERSONS, np.int64) for _ in range(batch)])  # COCO person
    return dict(max_length=CAPTION_TOKENS)


def run_ours(model, task, batch, constrained):
    images = images_of(batch)
    kwargs = task_kwargs(task, batch)
    start = time.perf_counter()
    out = model.predict(images, task, batch_size=batch, seed=0, constrained=constrained, **kwargs)
    seconds = time.perf_counter() - start
    assert len(out) == batch
    return seconds


# ---- the baseline pipeline -----------------------------------------------------------------------
def hf_generate(hf, memory, prompts, steps, top_p, eos, fixed):
    from transformers.modeling_outputs import BaseModelOutput

    with torch.no_grad():
        out = hf.generate(encoder_outputs=BaseModelOutput(last_hidden_state=memory), decoder_input_ids=prompts,
                          decoder_start_token_id=int(prompts[0, 0]),  # the prompt as given, nothing prepended
                          max_new_tokens=steps, min_new_tokens=steps if fixed else 0, do_sample=True,
                          top_p=top_p, top_k=0, pad_token_id=0, eos_token_id=eos, return_dict_in_generate=True,
                          output_logits=True)
    tokens = out.sequences[:, prompts.shape[1]:]
    logits = torch.stack(out.logits, 1)  # [B, T, V]
    return tokens, logits


def authors_masks(polygons_xy, height, width):
    """pycocotools: frPoly per sample, merge its parts, decode, vote (mean >= 0.5), encode RLE."""
    from pycocotools import _mask, mask as mask_util

    masks = []
    for samples in polygons_xy:
        votes = []
        for parts in samples:
            parts = [p for p in parts if len(p) >= 6]
            if not parts:
                votes.append(np.zeros((height, width), np.uint8))
                continue
            votes.append(_mask.decode([_mask.merge(_mask.frPoly(parts, height, width), 0)])[:, :, 0])
        mask = (np.mean(votes, axis=0) >= 0.5).astype(np.uint8)
        masks.append(mask_util.encode(np.asfortranarray(mask)))
    return masks


def run_baseline(model, hf, task, batch):
    from pix2seq_fast.predictor.geometry import person_crops
    from pix2seq_fast.predictor.inputs import load_images, to_canvas
    from pix2seq_fast.preprocess import resize_and_pad
    from pix2seq_fast.tasks.captioning import decode_caption
    from pix2seq_fast.tasks.detection import decode_detection
    from pix2seq_fast.tasks.keypoints import decode_keypoints, keypoints_prompt
    from pix2seq_fast.tasks.segmentation import decode_segmentation, segmentation_prompt

    vocab = model.config.vocab
    canvas = model.config.image_size
    torch.manual_seed(0)
    start = time.perf_counter()
    images, _ = load_images(images_of(batch))
    kwargs = task_kwargs(task, batch)
    if task == "keypoints":  # encode each person's 2x crop, as predict does
        crops, scales = [], []
        for i, img in enumerate(images):
            windows = person_crops(torch.from_numpy(kwargs["boxes"][i]), HEIGHT, WIDTH, padding=0.5)
            for x0, y0, x1, y1 in windows.tolist():
                padded, scale = resize_and_pad(img[:, y0:y1, x0:x1], canvas)
                crops.append(padded)
                scales.append(scale)
        with torch.inference_mode():
            memory = model.encode(torch.stack(crops))
        boxes = torch.rand(memory.shape[0], 4).sort(-1).values  # canvas boxes of the persons in their crops
        prompts = keypoints_prompt(boxes[:, [0, 1, 2, 3]], torch.ones(memory.shape[0], dtype=torch.int64), vocab)
        tokens, logits = hf_generate(hf, memory, prompts, 34, TOP_P[task], None, True)
        lsm = torch.log_softmax(logits.float(), -1)
        decode_keypoints(tokens, lsm[..., vocab.coord_offset:vocab.coord_offset + vocab.bins],
                         lsm.gather(2, tokens[..., None])[..., 0], vocab)
        return time.perf_counter() - start
    batch_px = to_canvas(images, canvas, torch.device("cpu"))
    with torch.inference_mode():
        memory = model.encode(batch_px.pixels)
    if task == "detect":
        prompts = torch.full((batch, 1), vocab.detect_prompt, dtype=torch.int64)
        tokens, logits = hf_generate(hf, memory, prompts, 5 * DET_OBJECTS, TOP_P[task], None, True)
        lsm = torch.log_softmax(logits.float(), -1)[..., vocab.class_offset:vocab.class_offset + vocab.num_classes]
        decode_detection(tokens, lsm, vocab)
    elif task == "caption":
        prompts = torch.full((batch, 1), vocab.caption_prompt, dtype=torch.int64)
        tokens, _ = hf_generate(hf, memory, prompts, CAPTION_TOKENS, TOP_P[task], vocab.caption_eos, False)
        decode_caption(tokens, model.tokenizer, vocab)
    else:  # segment: every instance x sample row gets its own copy of its image's encoding
        boxes = torch.cat([torch.from_numpy(b) for b in kwargs["boxes"]])  # pixels xyxy
        scale = batch_px.scales.repeat_interleave(SEG_INSTANCES).to(torch.float32)
        yx = boxes[:, [1, 0, 3, 2]] * scale[:, None] / canvas
        labels = torch.cat([torch.from_numpy(lab) for lab in kwargs["labels"]])
        prompts = segmentation_prompt(yx.clamp(0, 1), labels, vocab).repeat_interleave(SEG_SAMPLES, 0)
        rows = SEG_INSTANCES * SEG_SAMPLES  # one generate call per image: HF caches K/V per row, and all
        polygons = []                       # 640 rows of batch 8 would need ~27 GB of cross-attention cache
        for i in range(batch):
            tokens, _ = hf_generate(hf, memory[i:i + 1].expand(rows, -1, -1), prompts[i * rows:(i + 1) * rows],
                                    2 * SEG_POINTS, TOP_P[task], vocab.pad, False)
            polygons.extend(decode_segmentation(tokens, vocab))
        row_scale = scale.repeat_interleave(SEG_SAMPLES)
        per_instance = []
        for inst in range(batch * SEG_INSTANCES):
            samples = []
            for s in range(SEG_SAMPLES):
                row = inst * SEG_SAMPLES + s
                factor = canvas / float(row_scale[row])
                samples.append([(p.flip(-1).double() * factor).reshape(-1).numpy() for p in polygons[row]])
            per_instance.append(samples)
        authors_masks(per_instance, HEIGHT, WIDTH)
    return time.perf_counter() - start


@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("cell", CELLS, ids=[f"{t}-b{b}-t{n}" for t, b, n in CELLS])
def test_predict_throughput(benchmark, models, hf_model, cell, system):
    task, batch, threads = cell
    saved = torch.get_num_threads()
    torch.set_num_threads(thread_count(threads))
    try:
        model, fast = models
        if system == "baseline":
            fn = lambda: run_baseline(model, hf_model, task, batch)  # noqa: E731
        else:
            fn = lambda: run_ours(fast if system == "ours-fast" else model, task, batch,  # noqa: E731
                                  constrained=system == "ours-fast")
        seconds = []
        benchmark.pedantic(lambda: seconds.append(fn()), rounds=1, iterations=1,
                           warmup_rounds=1 if batch <= WARMUP_MAX_BATCH else 0)
        if system == "ours-fast":  # each encoder alone, at the same thread count, after the timed round
            pixels = encoder_inputs(model, task, batch)
            ENCODER_SECONDS[cell] = (encoder_seconds(model, pixels), encoder_seconds(fast, pixels))
    finally:
        torch.set_num_threads(saved)
    RESULTS[(task, batch, threads, system)] = batch / seconds[-1]
    benchmark.group = f"predict {task} b{batch} t{thread_count(threads)}"
    benchmark.extra_info.update(images_per_s=batch / seconds[-1], seconds=seconds[-1])


def test_zz_print_table(capsys, models):
    """images/s per task, batch and thread count from this run; ratio = ours / baseline."""
    assert RESULTS, "run the whole file: the table uses the benchmarks above"
    lines = [f"predict throughput, CPU ({os.cpu_count()} cores), vit-b random weights, 640 canvas, "
             f"{HEIGHT}x{WIDTH} images; det {DET_OBJECTS} objects, seg {SEG_INSTANCES}x{SEG_SAMPLES} <= "
             f"{SEG_POINTS} points, kp {PERSONS} persons, caption {CAPTION_TOKENS} tokens; ours-fast = "
             f"{LOWP} decoder + {fast_encoder_name(models[1])} encoder + constrained; images/s; "
             f"enc s = the encoder alone, fp32 / ours-fast's",
             f"{'task':10s} {'batch':>5s} {'thr':>3s} {'ours':>9s} {'ours-fast':>9s} {'baseline':>9s} "
             f"{'ours/base':>9s} {'fast/base':>9s} {'goal':>5s}  {'enc s':>13s}"]
    for task, batch, threads in CELLS:
        r = {s: RESULTS.get((task, batch, threads, s), float("nan")) for s in SYSTEMS}
        enc = ENCODER_SECONDS.get((task, batch, threads), (float("nan"), float("nan")))
        best = max(r["ours"], r["ours-fast"]) / r["baseline"]
        lines.append(f"{task:10s} {batch:5d} {thread_count(threads):3d} {r['ours']:9.3f} "
                     f"{r['ours-fast']:9.3f} {r['baseline']:9.3f} {r['ours'] / r['baseline']:8.2f}x "
                     f"{r['ours-fast'] / r['baseline']:8.2f}x {GOALS[task]:4.1f}x "
                     f"{'met' if best >= GOALS[task] else 'NOT met':7s} {enc[0]:6.2f} / {enc[1]:5.2f}")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
