"""Instance segmentation pipeline (SPEC §4).

Boxes come from the model's own detection pass on the same image encoding, or from the caller. Each
instance gets the prompt ``[11] ymin xmin ymax xmax class``; ``num_samples`` (8) sequences per
instance are drawn with p 0.8, all instances × samples of all images of the batch decoding as one
batch that refers to its image's cross-attention K/V by index (``image_index``, no copies). Each
sample's polygons are mapped to original pixels (COCO ``x y`` order), rasterised with the pycocotools
rule and voted at the original image size by ``rasterize_vote`` (a pixel is on when at least
``vote_threshold`` = half of the samples cover it). Mask score = box score; masks are RLE.

Not done here: the paper's optional crop of the image to each instance before encoding (+1.3 AP at
640); every instance attends to the whole image's encoding.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pix2seq_fast.predictor import engine
from pix2seq_fast.predictor.geometry import canvas_points_to_pixels, pixel_boxes_to_canvas, pixel_factors
from pix2seq_fast.predictor.inputs import CanvasBatch
from pix2seq_fast.predictor.options import DecodeOptions
from pix2seq_fast.results import Detections, InstanceMasks

DEFAULT_TOP_P = 0.8


@dataclass(frozen=True)
class SegmentOptions:
    """num_samples: sequences drawn per instance (8). max_points: polygon points per sequence (128 →
    256 tokens). vote_threshold: fraction of samples that must cover a pixel (0.5).
    max_sequences: instance × sample sequences per generation call (bounds the KV-cache memory).
    raster_backend: backend of ``rasterize_vote`` (``"auto"|"ref"|"cpp"``)."""

    num_samples: int = 8
    max_points: int = 128
    vote_threshold: float = 0.5
    max_sequences: int = 800
    raster_backend: str = "auto"

    def __post_init__(self):
        for name in ("num_samples", "max_points", "max_sequences"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < float(self.vote_threshold) <= 1.0:
            raise ValueError(f"vote_threshold must be in (0, 1], got {self.vote_threshold}")


def segment_batch(model, batch: CanvasBatch, memory: torch.Tensor, instances: list[Detections],
                  decode: DecodeOptions, options: SegmentOptions, generator=None) -> list[InstanceMasks]:
    """Masks of ``instances`` (one ``Detections`` per image of ``batch``); ``memory [B, N, D]``."""
    from pix2seq_fast.tasks.segmentation import decode_segmentation_packed, segmentation_prompt  # noqa: PLC0415

    vocab = engine.model_vocab(model)
    device = memory.device
    k = int(options.num_samples)
    counts = [len(d) for d in instances]
    if sum(counts) == 0:
        return [InstanceMasks(d.boxes_xyxy, d.labels, d.scores, [], d.image_size) for d in instances]
    image_of_instance = torch.repeat_interleave(torch.arange(len(instances)), torch.tensor(counts))
    factors_of_instance = pixel_factors(batch.sizes, engine.model_canvas(model))[image_of_instance]
    boxes_px = torch.cat([torch.from_numpy(d.boxes_xyxy) for d in instances])
    labels = torch.cat([torch.from_numpy(d.labels) for d in instances])
    boxes_canvas = pixel_boxes_to_canvas(boxes_px, factors_of_instance).clamp_(0.0, 1.0)
    prompts = segmentation_prompt(boxes_canvas.to(device), labels.to(device), vocab)
    prompts = prompts.repeat_interleave(k, dim=0)                      # [n * k, 6]
    seq_image = image_of_instance.repeat_interleave(k).to(device)      # [n * k]
    seq_factors = factors_of_instance.repeat_interleave(k, dim=0)     # [n * k, 2]

    chunks = []
    sampling = decode.sampling_config(DEFAULT_TOP_P)
    for lo in range(0, prompts.shape[0], int(options.max_sequences)):
        hi = min(lo + int(options.max_sequences), prompts.shape[0])
        out = engine.run_generate(
            model, memory, prompts[lo:hi], torch.full((hi - lo,), 6, dtype=torch.int64, device=device),
            seq_image[lo:hi], 2 * int(options.max_points), sampling, decode, record=None,
            stop_on_eos=True, generator=generator)
        chunks.append(decode_segmentation_packed(out.tokens, vocab))

    packed = pack_samples(concat_packed(chunks), k, seq_factors)
    sizes = torch.tensor([d.image_size for d in instances], dtype=torch.int64).reshape(-1, 2)
    sizes = sizes[image_of_instance]
    from pix2seq_fast.ops import rasterize_vote  # noqa: PLC0415

    rles = rasterize_vote(packed, sizes[:, 0].contiguous(), sizes[:, 1].contiguous(),
                          threshold=float(options.vote_threshold),
                          mode="coco", backend=options.raster_backend, output="rle")
    results, first = [], 0
    for det, n in zip(instances, counts):
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


def pack_samples(decoded, num_samples: int, factors: torch.Tensor):
    """Decoded samples -> ``PackedPolygons`` in original pixels (``x y``), ``num_samples``
    consecutive sequences per instance; tensor ops only.

    decoded: ``PackedSegmentation`` of all sequences (canvas-normalised ``y x`` points, part and
    sequence offsets; ``decode_segmentation_packed``); factors ``[num_sequences, 2]`` the
    ``(f_y, f_x)`` pixels per canvas unit of each sequence's image (``geometry.pixel_factors``)."""
    from pix2seq_fast.ops import PackedPolygons  # noqa: PLC0415

    part_offsets = decoded.part_offsets.cpu()
    seq_offsets = decoded.sequence_offsets.cpu()
    num_seq = seq_offsets.numel() - 1
    factors = torch.as_tensor(factors, dtype=torch.float64).cpu()
    if tuple(factors.shape) != (num_seq, 2):
        raise ValueError(f"factors must have shape [{num_seq}, 2], got {tuple(factors.shape)}")
    part_factors = torch.repeat_interleave(factors, seq_offsets.diff(), dim=0)
    point_factors = torch.repeat_interleave(part_factors, part_offsets.diff(), dim=0)
    coords = canvas_points_to_pixels(decoded.points.cpu()[:, None, :],
                                     point_factors)[:, 0, :].to(torch.float64)
    return PackedPolygons(coords.contiguous(), part_offsets.contiguous(), seq_offsets.contiguous(),
                          torch.arange(0, num_seq + 1, num_samples, dtype=torch.int64))
