"""Instance segmentation pipeline (SPEC §4).

Boxes come from the model's own detection pass on the same image encoding, or from the caller. Each
instance gets the prompt ``[11] ymin xmin ymax xmax class``; ``num_samples`` (8) sequences per
instance are drawn with p 0.8, all instances × samples of all images of the batch decoding as one
batch that refers to its image's cross-attention K/V by index (``image_index``, no copies). Each
sample's polygons are mapped to original pixels (COCO ``x y`` order), rasterised with the pycocotools
rule and voted at the original image size by ``rasterize_vote`` (a pixel is on when at least
``vote_threshold`` = half of the samples cover it). Mask score = box score; masks are RLE.

Optional crop (``SegmentOptions.crop``; by default what the model was trained with,
``ModelConfig.segment_crop``, off for the authors' models; the paper's +1.3 AP at 640): each instance
is instead prompted on the encoding of its own crop, the keypoint task's window of about twice its
box (``geometry.person_crops``, the authors' ``crop_to_bbox``, with ``crop_padding``; training crops
segmentation examples with the same window under ``augment["segment"]["person_crop"]``). Crops are
resized and padded to the canvas and encoded ``max_crops`` at a time (``crops.CropBatch``, shared
with keypoints); the prompt box is the instance's box in its crop's canvas coordinates, its samples
attend to its crop's encoding, and their points map back to original pixels through the crop's
per-axis factors plus its top-left offset; rasterising and voting are unchanged. Boxes from the
detection pass (whole-image encoding) are cropped likewise. Points the model puts in a crop's
padding land beyond the crop window (they are not clipped to it). With ``crop=False`` every instance
attends to the whole image's encoding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from pix2seq_fast.predictor import engine
from pix2seq_fast.predictor.crops import CropBatch, slice_instances
from pix2seq_fast.predictor.geometry import canvas_points_to_pixels, pixel_boxes_to_canvas, pixel_factors
from pix2seq_fast.predictor.inputs import CanvasBatch
from pix2seq_fast.predictor.options import DecodeOptions
from pix2seq_fast.preprocess import CROP_PAD_SCALE
from pix2seq_fast.results import Detections, InstanceMasks

DEFAULT_TOP_P = 0.8


@dataclass(frozen=True)
class SegmentOptions:
    """num_samples: sequences drawn per instance (8). max_points: polygon points per sequence (128 →
    256 tokens). vote_threshold: fraction of samples that must cover a pixel (0.5).
    max_sequences: instance × sample sequences per generation call (bounds the KV-cache memory).
    raster_backend: backend of ``rasterize_vote`` (``"auto"|"ref"|"cpp"``).
    crop: encode each instance's own crop (about twice its box, the keypoint task's window) instead
    of prompting it on the whole image (the paper's optional crop, +1.3 AP at 640; matches training
    with ``augment["segment"]["person_crop"]``); None (default): the model's ``segment_crop``. crop_padding: padding per side of the crop as a
    fraction of the box's whole-pixel extent (0.5, the authors' ``crop_to_bbox_pad_scale``).
    max_crops: crops encoded per call when ``crop`` (bounds the encoder's memory; each crop's
    ``num_samples`` sequences are still split by ``max_sequences``)."""

    num_samples: int = 8
    max_points: int = 128
    vote_threshold: float = 0.5
    max_sequences: int = 800
    raster_backend: str = "auto"
    crop: bool | None = None
    crop_padding: float = CROP_PAD_SCALE
    max_crops: int = 64

    def __post_init__(self):
        for name in ("num_samples", "max_points", "max_sequences", "max_crops"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < float(self.vote_threshold) <= 1.0:
            raise ValueError(f"vote_threshold must be in (0, 1], got {self.vote_threshold}")
        if self.crop is not None and not isinstance(self.crop, (bool, np.bool_)):
            raise ValueError(f"crop must be True, False or None (the model's segment_crop), got {self.crop!r}")
        try:
            padding = float(self.crop_padding)
        except (TypeError, ValueError):
            padding = float("nan")
        if isinstance(self.crop_padding, bool) or not (math.isfinite(padding) and padding >= 0.0):
            raise ValueError(f"crop_padding must be a finite number >= 0, got {self.crop_padding!r}")


def segment_batch(model, batch: CanvasBatch, memory: torch.Tensor, instances: list[Detections],
                  decode: DecodeOptions, options: SegmentOptions, generator=None) -> list[InstanceMasks]:
    """Masks of ``instances`` (one ``Detections`` per image of ``batch``), every instance prompted on
    its whole image's encoding ``memory [B, N, D]``. ``options.crop`` is :func:`segment_crops`'
    business (it needs the original images)."""
    from pix2seq_fast.tasks.segmentation import segmentation_prompt  # noqa: PLC0415

    if options.crop:
        raise ValueError("crop=True encodes each instance's crop of the original image: call "
                         "segment_crops(model, images, instances, ...) instead of segment_batch")
    vocab = engine.model_vocab(model)
    device = memory.device
    k = samples_per_instance(options, decode)
    counts = [len(d) for d in instances]
    if sum(counts) == 0:
        return _empty(instances)
    image_of_instance = torch.repeat_interleave(torch.arange(len(instances)), torch.tensor(counts))
    factors_of_instance = pixel_factors(batch.sizes, engine.model_canvas(model))[image_of_instance]
    boxes_px = torch.cat([torch.from_numpy(d.boxes_xyxy) for d in instances])
    labels = torch.cat([torch.from_numpy(d.labels) for d in instances])
    boxes_canvas = pixel_boxes_to_canvas(boxes_px, factors_of_instance).clamp_(0.0, 1.0)
    prompts = segmentation_prompt(boxes_canvas.to(device), labels.to(device), vocab)
    prompts = prompts.repeat_interleave(k, dim=0)                      # [n * k, 6]
    seq_image = image_of_instance.repeat_interleave(k).to(device)      # [n * k]
    seq_factors = factors_of_instance.repeat_interleave(k, dim=0)     # [n * k, 2]

    decoded = _sample(model, memory, prompts, seq_image, decode, options, generator)
    packed = pack_samples(decoded, k, seq_factors)
    sizes = torch.tensor([d.image_size for d in instances], dtype=torch.int64).reshape(-1, 2)
    return _group(instances, _vote(packed, sizes[image_of_instance], options))


def segment_crops(model, images: list[torch.Tensor], instances: list[Detections],
                  decode: DecodeOptions, options: SegmentOptions, generator=None,
                  encode=None) -> list[InstanceMasks]:
    """Masks of ``instances`` (one ``Detections`` per image of ``images``, the original ``[3, H, W]``
    images), each instance prompted on the encoding of its own crop.

    Per instance: the window of ``geometry.person_crops`` around its pixel box (``crop_padding``),
    resized and padded to the canvas (``crops.CropBatch``); up to ``max_crops`` crops are encoded as
    one batch; the prompt box is the instance's box in its crop's canvas coordinates; its
    ``num_samples`` sequences attend to its crop's encoding (``image_index`` = crop index); the
    polygon points go back to original pixels through the crop's per-axis factors plus its
    top-left offset, then are rasterised and voted at the original image size as
    :func:`segment_batch` does. ``encode``: ``pixels -> memory`` (default ``engine.encode``)."""
    from pix2seq_fast.tasks.segmentation import segmentation_prompt  # noqa: PLC0415

    if encode is None:
        encode = lambda pixels: engine.encode(model, pixels)  # noqa: E731
    vocab = engine.model_vocab(model)
    canvas = engine.model_canvas(model)
    device = engine.model_device(model)
    k = samples_per_instance(options, decode)
    total = sum(len(d) for d in instances)
    if total == 0:
        return _empty(instances)
    boxes_px = torch.cat([torch.from_numpy(d.boxes_xyxy) for d in instances])
    labels = torch.cat([torch.from_numpy(d.labels) for d in instances])
    rles = []
    for lo in range(0, total, int(options.max_crops)):
        hi = min(lo + int(options.max_crops), total)
        crops = CropBatch(images, slice_instances(instances, lo, hi), canvas,
                          float(options.crop_padding), device)
        memory = encode(crops.pixels)
        boxes_canvas = crops.canvas_boxes(boxes_px[lo:hi])
        prompts = segmentation_prompt(boxes_canvas.to(device), labels[lo:hi].to(device), vocab)
        prompts = prompts.repeat_interleave(k, dim=0)                            # [n * k, 6]
        seq_image = torch.arange(hi - lo).repeat_interleave(k).to(device)       # crop of each
        decoded = _sample(model, memory, prompts, seq_image, decode, options, generator)
        packed = pack_samples(decoded, k, crops.factors.repeat_interleave(k, dim=0),
                              offsets=crops.offsets.repeat_interleave(k, dim=0))
        rles.extend(_vote(packed, crops.image_sizes, options))
    return _group(instances, rles)


def _sample(model, memory, prompts, seq_image, decode: DecodeOptions, options: SegmentOptions,
            generator):
    """Generate ``prompts [S, 6]`` (sequence ``s`` attends to ``memory[seq_image[s]]``) in chunks of
    ``max_sequences`` -> one ``PackedSegmentation`` on the CPU."""
    from pix2seq_fast.tasks.segmentation import decode_segmentation_packed  # noqa: PLC0415

    vocab = engine.model_vocab(model)
    device = memory.device
    chunks = []
    sampling = decode.sampling_config(DEFAULT_TOP_P)
    for lo in range(0, prompts.shape[0], int(options.max_sequences)):
        hi = min(lo + int(options.max_sequences), prompts.shape[0])
        out = engine.run_generate(
            model, memory, prompts[lo:hi], torch.full((hi - lo,), 6, dtype=torch.int64, device=device),
            seq_image[lo:hi], 2 * int(options.max_points), sampling, decode, record=None,
            stop_on_eos=True, generator=generator)
        chunks.append(decode_segmentation_packed(out.tokens, vocab))
    return concat_packed(chunks)


def _vote(packed, sizes: torch.Tensor, options: SegmentOptions) -> list:
    """``PackedPolygons`` of the instances, ``sizes [n, 2]`` (height, width) of each instance's
    image -> one RLE per instance (``rasterize_vote``)."""
    from pix2seq_fast.ops import rasterize_vote  # noqa: PLC0415

    return rasterize_vote(packed, sizes[:, 0].contiguous(), sizes[:, 1].contiguous(),
                          threshold=float(options.vote_threshold),
                          mode="coco", backend=options.raster_backend, output="rle")


def _empty(instances: list[Detections]) -> list[InstanceMasks]:
    return [InstanceMasks(d.boxes_xyxy, d.labels, d.scores, [], d.image_size) for d in instances]


def _group(instances: list[Detections], rles: list) -> list[InstanceMasks]:
    """Flat per-instance RLEs -> one ``InstanceMasks`` per image."""
    results, first = [], 0
    for det in instances:
        n = len(det)
        results.append(InstanceMasks(det.boxes_xyxy, det.labels, det.scores, rles[first:first + n],
                                     det.image_size))
        first += n
    return results


def concat_packed(chunks: list) -> "PackedSegmentation":
    """``PackedSegmentation`` of consecutive sequence chunks -> one (offsets shifted, on the CPU)."""
    from pix2seq_fast.tasks.segmentation import PackedSegmentation  # noqa: PLC0415

    points, parts, seqs = [], [torch.zeros(1, dtype=torch.int64)], [torch.zeros(1, dtype=torch.int64)]
    n_points = n_parts = 0
    for c in chunks:
        points.append(c.points.cpu())
        parts.append(c.part_offsets[1:].cpu() + n_points)
        seqs.append(c.sequence_offsets[1:].cpu() + n_parts)
        n_points += c.points.shape[0]
        n_parts += c.part_offsets.numel() - 1
    return PackedSegmentation(torch.cat(points) if points else torch.zeros(0, 2), torch.cat(parts),
                              torch.cat(seqs))


def samples_per_instance(options: SegmentOptions, decode: DecodeOptions) -> int:
    """``num_samples``, or 1 under greedy decoding (every sample would be the same sequence, and
    the vote of identical masks is that mask)."""
    return 1 if decode.greedy else int(options.num_samples)


def pack_samples(decoded, num_samples: int, factors: torch.Tensor,
                 offsets: torch.Tensor | None = None):
    """Decoded samples -> ``PackedPolygons`` in original pixels (``x y``), ``num_samples``
    consecutive sequences per instance; tensor ops only.

    decoded: ``PackedSegmentation`` of all sequences (canvas-normalised ``y x`` points, part and
    sequence offsets; ``decode_segmentation_packed``); factors ``[num_sequences, 2]`` the
    ``(f_y, f_x)`` pixels per canvas unit of each sequence's image (``geometry.pixel_factors``);
    offsets (optional) ``[num_sequences, 2]`` the ``x y`` pixel added to each sequence's points
    after scaling (the top-left corner of its crop in the original image)."""
    from pix2seq_fast.ops import PackedPolygons  # noqa: PLC0415

    part_offsets = decoded.part_offsets.cpu()
    seq_offsets = decoded.sequence_offsets.cpu()
    num_seq = seq_offsets.numel() - 1
    factors = torch.as_tensor(factors, dtype=torch.float64).cpu()
    if tuple(factors.shape) != (num_seq, 2):
        raise ValueError(f"factors must have shape [{num_seq}, 2], got {tuple(factors.shape)}")
    part_factors = torch.repeat_interleave(factors, seq_offsets.diff(), dim=0)
    point_factors = torch.repeat_interleave(part_factors, part_offsets.diff(), dim=0)
    point_offsets = None
    if offsets is not None:
        offsets = torch.as_tensor(offsets).cpu().to(torch.float64)
        if tuple(offsets.shape) != (num_seq, 2):
            raise ValueError(f"offsets must have shape [{num_seq}, 2], got {tuple(offsets.shape)}")
        part_offsets_xy = torch.repeat_interleave(offsets, seq_offsets.diff(), dim=0)
        point_offsets = torch.repeat_interleave(part_offsets_xy, part_offsets.diff(), dim=0)
    coords = canvas_points_to_pixels(decoded.points.cpu()[:, None, :], point_factors,
                                     offset_xy=point_offsets)[:, 0, :].to(torch.float64)
    return PackedPolygons(coords.contiguous(), part_offsets.contiguous(), seq_offsets.contiguous(),
                          torch.arange(0, num_seq + 1, num_samples, dtype=torch.int64))
