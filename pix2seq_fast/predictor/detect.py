"""Detection pipeline (SPEC §4): prompt ``[10]``, fixed-length generation recording the class
log-probabilities, ``decode_detection``, boxes mapped from the padded canvas to original pixels
(per axis: ``canvas · original / resized``, see ``geometry``).
No NMS (the model is trained to emit each object once). Each box's corners are ordered
(``x0 <= x1``, ``y0 <= y1``): a trained model emits them so, an untrained one may not."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pix2seq_fast.predictor import engine
from pix2seq_fast.predictor.geometry import canvas_boxes_to_pixels, pixel_factors
from pix2seq_fast.predictor.inputs import CanvasBatch
from pix2seq_fast.predictor.options import DecodeOptions
from pix2seq_fast.results import Detections

DEFAULT_TOP_P = 0.4


@dataclass(frozen=True)
class DetectOptions:
    """max_objects: objects generated per image (100 → 500 tokens; the model is trained to fill them).
    early_stop: stop a sequence at its first PAD (faster; the authors always decode the full length).
    score_threshold: drop detections scoring below it. max_detections: keep at most this many per
    image, best first. categories: keep only these category ids (``None`` = all)."""

    max_objects: int = 100
    early_stop: bool = False
    score_threshold: float = 0.0
    max_detections: int = 100
    categories: tuple[int, ...] | None = None

    def __post_init__(self):
        if int(self.max_objects) < 1:
            raise ValueError(f"max_objects must be >= 1, got {self.max_objects}")
        if int(self.max_detections) < 0:
            raise ValueError(f"max_detections must be >= 0, got {self.max_detections}")
        if not 0.0 <= float(self.score_threshold) <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {self.score_threshold}")


def detect_batch(model, batch: CanvasBatch, memory: torch.Tensor, decode: DecodeOptions,
                 options: DetectOptions, generator=None) -> list[Detections]:
    """Detections of every image of ``batch``; ``memory [B, N, D]`` is the batch's encoding."""
    vocab = engine.model_vocab(model)
    n_img = memory.shape[0]
    device = memory.device
    prompts = torch.full((n_img, 1), vocab.detect_prompt, dtype=torch.int64, device=device)
    out = engine.run_generate(
        model, memory, prompts, torch.ones(n_img, dtype=torch.int64, device=device),
        torch.arange(n_img, device=device), 5 * int(options.max_objects),
        decode.sampling_config(DEFAULT_TOP_P), decode,
        record=(vocab.class_offset, vocab.class_offset + vocab.num_classes),
        stop_on_eos=options.early_stop, generator=generator)
    from pix2seq_fast.tasks.detection import decode_detection  # noqa: PLC0415

    decoded = decode_detection(out.tokens, out.recorded, vocab)
    corners = decoded.boxes.reshape(*decoded.boxes.shape[:2], 2, 2)  # [B, n, corner, (y, x)]
    boxes = torch.cat([corners.amin(dim=2), corners.amax(dim=2)], dim=2)
    keep = decoded.valid & (decoded.scores >= float(options.score_threshold))
    if options.categories is not None:
        wanted = torch.as_tensor(list(options.categories), dtype=torch.int64, device=device)
        keep &= torch.isin(decoded.labels, wanted)
    factors = pixel_factors(batch.sizes, engine.model_canvas(model))  # [B, 2] per-axis
    results = []
    for i, (height, width) in enumerate(batch.sizes):
        idx = keep[i].nonzero().squeeze(1)
        order = torch.argsort(decoded.scores[i, idx], descending=True, stable=True)
        idx = idx[order[:int(options.max_detections)]]
        boxes_px = canvas_boxes_to_pixels(boxes[i, idx], factors[i], height, width)
        results.append(Detections(boxes_px.cpu().numpy(), decoded.labels[i, idx].cpu().numpy(),
                                  decoded.scores[i, idx].float().cpu().numpy(), (height, width)))
    return results


def empty_detections(size: tuple[int, int]) -> Detections:
    return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32),
                      size)
