"""Coordinate maps between the model's padded canvas (normalised, **y first**) and the original
image's pixels (**x first**), and the person crops of the keypoint task. Batched torch ops.

``resize_and_pad`` stretches each axis to a *rounded* size, so the map is per axis: a
canvas-normalised ``(y, x)`` is ``(y · f_y, x · f_x)`` original pixels with ``f = canvas_side ·
original / resized`` — ``factors``, from :func:`pixel_factors` (the authors' ``image_size /
unpadded_image_size · orig_image_size``). Padding is bottom/right, so there is no offset. The rules
live in :mod:`pix2seq_fast.preprocess` (shared with training); these wrap them for torch.
"""
from __future__ import annotations

import numpy as np
import torch

from pix2seq_fast.preprocess import CROP_PAD_SCALE, canvas_unit_pixels, crop_window


def pixel_factors(sizes, canvas) -> torch.Tensor:
    """``sizes [n, 2]`` original ``(height, width)`` (a list of pairs or a tensor) and the canvas
    (a side or ``(H, W)``) -> ``[n, 2]`` float64 ``(f_y, f_x)`` pixels per canvas-normalised unit."""
    if isinstance(sizes, torch.Tensor):
        sizes = sizes.cpu().numpy()
    sizes = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    if sizes.shape[0] == 0:
        return torch.zeros(0, 2, dtype=torch.float64)
    return torch.from_numpy(canvas_unit_pixels(sizes, canvas))


def _factors(factors, leading: tuple, device, name: str = "factors") -> torch.Tensor:
    """``factors`` ``[2]`` or ``[*leading, 2]`` -> float64 broadcastable to ``[*leading, 2]``."""
    f = torch.as_tensor(factors, dtype=torch.float64).to(device)
    if f.shape == (2,):
        return f.expand(*leading, 2)
    if tuple(f.shape) != (*leading, 2):
        raise ValueError(f"{name} must have shape [2] or {[*leading, 2]}, got {list(f.shape)}")
    return f


def canvas_boxes_to_pixels(boxes_yx: torch.Tensor, factors, height: int, width: int) -> torch.Tensor:
    """``[n, 4]`` canvas-normalised ``ymin xmin ymax xmax`` -> ``[n, 4]`` float32 pixel ``xyxy``,
    clipped to the image (``[0, width] x [0, height]``). ``factors``: ``[2]`` or ``[n, 2]``
    ``(f_y, f_x)`` (:func:`pixel_factors`)."""
    f = _factors(factors, (boxes_yx.shape[0],), boxes_yx.device)
    b = boxes_yx.to(torch.float64) * f.repeat(1, 2)
    xyxy = b[:, [1, 0, 3, 2]]
    limits = torch.tensor([width, height, width, height], dtype=torch.float64, device=b.device)
    return torch.minimum(xyxy.clamp_min(0.0), limits).to(torch.float32)


def pixel_boxes_to_canvas(boxes_xyxy: torch.Tensor, factors) -> torch.Tensor:
    """``[n, 4]`` pixel ``xyxy`` -> ``[n, 4]`` float32 canvas-normalised ``ymin xmin ymax xmax``.
    ``factors``: ``[2]`` or ``[n, 2]`` (one pair per box)."""
    f = _factors(factors, (boxes_xyxy.shape[0],), boxes_xyxy.device)
    return (boxes_xyxy.to(torch.float64)[:, [1, 0, 3, 2]] / f.repeat(1, 2)).to(torch.float32)


def canvas_points_to_pixels(points_yx: torch.Tensor, factors,
                            offset_xy: torch.Tensor | None = None) -> torch.Tensor:
    """``[..., k, 2]`` canvas-normalised ``y x`` -> ``[..., k, 2]`` float32 pixel ``x y``.

    ``factors``: ``[2]`` or ``[..., 2]`` (the leading dims of ``points_yx``); ``offset_xy [..., 2]``
    is added after scaling (the top-left corner of a crop in the original image)."""
    f = _factors(factors, tuple(points_yx.shape[:-2]), points_yx.device)
    xy = points_yx.to(torch.float64).flip(-1) * f.flip(-1).unsqueeze(-2)
    if offset_xy is not None:
        xy = xy + offset_xy.to(torch.float64).unsqueeze(-2)
    return xy.to(torch.float32)


def person_crops(boxes_xyxy: torch.Tensor, height: int, width: int,
                 padding: float = CROP_PAD_SCALE) -> torch.Tensor:
    """Crop windows of the keypoint task (:func:`pix2seq_fast.preprocess.crop_window`, the
    authors' ``crop_to_bbox``; training crops with the same function).

    ``boxes_xyxy [n, 4]`` pixels -> ``[n, 4]`` int64 ``x0 y0 x1 y1`` (exclusive ends)."""
    b = torch.as_tensor(boxes_xyxy).detach().cpu().to(torch.float64).reshape(-1, 4)
    yx = crop_window(b[:, [1, 0, 3, 2]].numpy(), height, width, padding)
    return torch.from_numpy(yx[:, [1, 0, 3, 2]].copy())
