"""Keypoint pipeline (SPEC §4): for each person box, crop about twice the box from the original
image with the authors' ``crop_to_bbox`` rule (``preprocess.crop_window``, the window training uses),
resize + pad the crop to the canvas,
encode all crops as one batch, prompt ``[12] ymin xmin ymax xmax class`` with the box in the crop's
canvas coordinates, decode the 34 ``y x`` tokens with p 0.1 recording the coordinate log-probs,
``decode_keypoints`` (INVISIBLE → best coordinate token at that position), put points still missing
at the box centre with v = 0, and map everything back to the original image (per axis, through
the crop's rounded resized size: ``geometry.pixel_factors``). The crops are ``crops.CropBatch``,
which the segmentation pipeline's ``crop`` option shares."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pix2seq_fast.predictor import engine
from pix2seq_fast.predictor.crops import CropBatch, slice_instances
from pix2seq_fast.predictor.geometry import canvas_points_to_pixels
from pix2seq_fast.preprocess import CROP_PAD_SCALE
from pix2seq_fast.predictor.options import DecodeOptions
from pix2seq_fast.results import Detections, Keypoints

DEFAULT_TOP_P = 0.1
NUM_KEYPOINTS = 17
VISIBLE, MISSING = 2.0, 0.0


@dataclass(frozen=True)
class KeypointOptions:
    """person_category: category id of persons in the detection pass (COCO 1). crop_padding: the
    authors' ``crop_to_bbox_pad_scale``, padding per side as a fraction of the box's whole-pixel
    extent (0.5 → a crop about twice the box). max_crops: crops encoded and decoded per call."""

    person_category: int = 1
    crop_padding: float = CROP_PAD_SCALE
    max_crops: int = 64

    def __post_init__(self):
        if float(self.crop_padding) < 0.0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")
        if int(self.max_crops) < 1:
            raise ValueError(f"max_crops must be >= 1, got {self.max_crops}")


def keypoints_batch(model, images: list[torch.Tensor], persons: list[Detections],
                    decode: DecodeOptions, options: KeypointOptions, generator=None) -> list[Keypoints]:
    """Keypoints of the ``persons`` boxes (one ``Detections`` per image of ``images``, which are the
    original ``[3, H, W]`` images)."""
    canvas = engine.model_canvas(model)
    device = engine.model_device(model)
    counts = [len(d) for d in persons]
    total = sum(counts)
    points = torch.zeros(total, NUM_KEYPOINTS, 3)
    scores = torch.zeros(total)
    boxes = torch.cat([torch.from_numpy(d.boxes_xyxy) for d in persons])
    labels = torch.cat([torch.from_numpy(d.labels) for d in persons])
    for lo in range(0, total, int(options.max_crops)):
        hi = min(lo + int(options.max_crops), total)
        crops = CropBatch(images, slice_instances(persons, lo, hi), canvas, options.crop_padding,
                          device)
        points[lo:hi], scores[lo:hi] = _decode_crops(model, crops, boxes[lo:hi], labels[lo:hi],
                                                     decode, generator)
    results, first = [], 0
    for det, n in zip(persons, counts):
        results.append(Keypoints(points[first:first + n].numpy(), det.boxes_xyxy, det.labels,
                                 scores[first:first + n].numpy(), det.image_size))
        first += n
    return results


def _decode_crops(model, crops: CropBatch, boxes_px: torch.Tensor, labels: torch.Tensor,
                  decode: DecodeOptions, generator):
    """-> (``[n, 17, 3]`` x y v pixels, ``[n]`` scores) for the crops' persons."""
    from pix2seq_fast.tasks.keypoints import keypoints_prompt  # noqa: PLC0415

    vocab = engine.model_vocab(model)
    n = boxes_px.shape[0]
    device = crops.pixels.device
    memory = engine.encode(model, crops.pixels)
    boxes_canvas = crops.canvas_boxes(boxes_px)
    prompts = keypoints_prompt(boxes_canvas.to(device), labels.to(device), vocab)
    out = engine.run_generate(
        model, memory, prompts, torch.full((n,), 6, dtype=torch.int64, device=device),
        torch.arange(n, device=device), 2 * NUM_KEYPOINTS, decode.sampling_config(DEFAULT_TOP_P),
        decode, record=(vocab.coord_offset, vocab.coord_offset + vocab.bins), stop_on_eos=False,
        generator=generator)
    return keypoints_to_pixels(out.tokens, out.recorded, out.logprobs, vocab, crops.factors,
                               crops.windows, boxes_px, crops.image_sizes)


def keypoints_to_pixels(tokens, coord_logprobs, token_logprobs, vocab, crop_factors: torch.Tensor,
                        windows: torch.Tensor, boxes_px: torch.Tensor, image_sizes: torch.Tensor):
    """Generated keypoint tokens of crops -> (``[n, 17, 3]`` float32 ``x y v`` original pixels,
    ``[n]`` scores).

    tokens ``[n, 34]``, coord_logprobs ``[n, 34, bins]``, token_logprobs ``[n, 34]``; crop_factors
    ``[n, 2]`` ``(f_y, f_x)`` crop pixels per canvas unit (``geometry.pixel_factors``); windows
    ``[n, 4]`` crop ``x0 y0 x1 y1`` in the image;
    boxes_px ``[n, 4]`` the person boxes (xyxy pixels), whose centre takes missing points (v = 0).
    image_sizes ``[n, 2]`` (height, width) of each person's image: points are clipped to it."""
    from pix2seq_fast.tasks.keypoints import decode_keypoints  # noqa: PLC0415

    points, visible, scores = decode_keypoints(tokens, coord_logprobs, token_logprobs, vocab,
                                               NUM_KEYPOINTS)
    xy = canvas_points_to_pixels(points.cpu(), crop_factors,
                                 offset_xy=windows[:, :2].to(torch.float64))
    centre = ((boxes_px[:, :2] + boxes_px[:, 2:]) / 2).to(torch.float32)
    visible = visible.cpu()
    xy = torch.where(visible[:, :, None], xy, centre[:, None, :])
    limits = image_sizes.flip(-1).to(torch.float32)[:, None, :]
    xy = torch.minimum(xy.clamp_min(0.0), limits)
    v = torch.where(visible, torch.tensor(VISIBLE), torch.tensor(MISSING))
    return torch.cat([xy, v[:, :, None]], dim=2), scores.float().cpu()
