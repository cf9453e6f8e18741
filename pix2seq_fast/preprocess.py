"""Preprocessing, matching the authors' eval path bit for bit where we could check it, and the
geometry that training and inference share (one home for each rule).

``load_image`` turns a path / numpy / PIL / torch image into float32 ``[3, H, W]`` in [0, 1]
(uint8 ``x`` becomes ``x * float32(1/255)``, as ``tf.image.convert_image_dtype``).
``resize_and_pad`` then does what the authors' ``resize_image`` + ``pad_image_to_max_size`` do:
``tf.image.resize(bilinear, antialias=True, preserve_aspect_ratio=True)`` to fit the canvas, and
padding at the bottom/right with 0.3 written as ``0.3 + pad(image - 0.3)``.

The resize re-implements TF's ``ScaleAndTranslate`` triangle-kernel op in float32 with its
operation order (per axis: span starts and normalised weights computed in float32; rows first,
then columns, each output a running sum from 0 over the span), so the tf_parity images come out
bitwise equal. No Python loop runs over pixels: one vectorised step per span tap.

Geometry (numpy, used by ``data.augment`` in training and ``predictor.geometry`` at inference):

- :func:`axis_scales` — resized / original size **per axis**. Each axis is stretched to a *rounded*
  size, so the two factors differ from each other and from the unrounded ``scale``; canvas-normalised
  ``v`` is ``v · canvas_side / axis_scale`` original pixels (the authors' ``canvas · original /
  unpadded``). :func:`canvas_unit_pixels` gives that factor for the eval resize of :func:`fitted_size`.
- :func:`crop_window` — the keypoint task's crop around a person box, the authors' ``crop_to_bbox``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

PAD_VALUE = 0.3
_UINT8_SCALE = np.float32(1.0 / 255.0)


def _from_uint8_hwc(array: np.ndarray, name: str) -> torch.Tensor:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"{name}: expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {array.shape}")
    channels = array.shape[2]
    if channels not in (1, 3, 4):
        raise ValueError(f"{name}: expected 1 (gray), 3 (RGB) or 4 (RGBA) channels, got {channels}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name}: empty image of shape {array.shape}")
    if channels == 1:
        array = np.repeat(array, 3, axis=2)
    elif channels == 4:
        array = array[:, :, :3]
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:  # e.g. np.asarray(PIL image); torch wants writable memory
        array = array.copy()
    chw = torch.from_numpy(array).permute(2, 0, 1)
    return chw.to(torch.float32) * torch.tensor(_UINT8_SCALE)


def _read_file(path: Path) -> np.ndarray:
    import cv2  # noqa: PLC0415  (heavy import, only for file input)

    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    raw = np.fromfile(path, dtype=np.uint8)
    # EXIF orientation is ignored, as by TF's decoders (and COCO annotations' pixel frame).
    bgr = cv2.imdecode(raw, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if raw.size else None
    if bgr is None:
        raise ValueError(f"image file {path} could not be decoded (corrupt or not an image)")
    return bgr[:, :, ::-1]


def _from_tensor(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        if x.ndim == 3 and x.shape[0] == 3 and x.shape[-1] not in (3, 4):
            x = x.permute(1, 2, 0)
        return _from_uint8_hwc(x.cpu().numpy(), "image tensor").to(x.device)
    if not x.is_floating_point():
        raise ValueError(f"image tensor: dtype must be uint8 or floating point, got {x.dtype}")
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"image tensor: a float image must be [3, H, W] (or [1, H, W]), got {list(x.shape)}")
    if x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(f"image tensor: empty image of shape {list(x.shape)}")
    x = x.to(torch.float32)
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ValueError("image tensor: float values must be finite and in [0, 1]")
    return x.expand(3, -1, -1).contiguous() if x.shape[0] == 1 else x.contiguous()


def load_image(x) -> torch.Tensor:
    """An image as float32 ``[3, H, W]`` RGB in [0, 1].

    Accepts a file path (str / Path; decoded with OpenCV), a numpy uint8 array ``[H, W]``,
    ``[H, W, 1]``, ``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA, alpha dropped), a PIL image, or a
    torch tensor: float ``[3, H, W]`` in [0, 1], uint8 ``[3, H, W]`` or uint8 ``[H, W, C]``.
    """
    if isinstance(x, (str, os.PathLike)):
        return _from_uint8_hwc(_read_file(Path(x)), f"image file {x}")
    if isinstance(x, torch.Tensor):
        return _from_tensor(x)
    if isinstance(x, np.ndarray):
        if x.dtype != np.uint8:
            raise ValueError(f"image array: dtype must be uint8, got {x.dtype} (load floats as a torch "
                             "tensor [3, H, W] in [0, 1])")
        return _from_uint8_hwc(x, "image array")
    try:
        from PIL import Image  # noqa: PLC0415
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None
    if Image is not None and isinstance(x, Image.Image):
        if x.width == 0 or x.height == 0:
            raise ValueError(f"PIL image: empty image of size {x.size}")
        return _from_uint8_hwc(np.asarray(x.convert("RGB")), "PIL image")
    raise ValueError(f"image: expected a path, numpy uint8 array, PIL image or torch tensor, "
                     f"got {type(x).__name__}")


CROP_PAD_SCALE = 0.5  # the authors' crop_to_bbox_pad_scale for keypoints: a crop about twice the box


def canvas_hw(canvas) -> tuple[int, int]:
    """``canvas`` (a side ``S`` or an ``(H, W)`` pair of positive ints) -> ``(H, W)``; a scalar is a
    square. Raises ``ValueError`` naming ``canvas`` otherwise."""
    if isinstance(canvas, (int, np.integer)) and not isinstance(canvas, bool):
        canvas = (int(canvas), int(canvas))
    if (not isinstance(canvas, (tuple, list)) or len(canvas) != 2
            or not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in canvas)):
        raise ValueError(f"canvas must be an int or an (height, width) pair of ints, got {canvas!r}")
    if min(canvas) <= 0:
        raise ValueError(f"canvas sides must be positive, got {canvas!r}")
    return int(canvas[0]), int(canvas[1])


def fitted_size(height: int, width: int, canvas) -> tuple[tuple[int, int], float]:
    """(resized (h, w), scale) as ``tf.image.resize(preserve_aspect_ratio=True)`` computes them:
    ``scale = min(H_c / H, W_c / W)`` in float32, sides ``round_half_even(scale * side)`` in float32."""
    canvas_h, canvas_w = canvas_hw(canvas)
    f32 = np.float32
    scale = min(f32(canvas_h) / f32(height), f32(canvas_w) / f32(width))
    new_h = int(np.rint(f32(scale * f32(height))))
    new_w = int(np.rint(f32(scale * f32(width))))
    return (max(new_h, 1), max(new_w, 1)), float(scale)


def _size_pairs(sizes, name: str) -> np.ndarray:
    """``(h, w)`` or ``[n, 2]`` -> float64 ``[..., 2]``; every side must be positive."""
    arr = np.asarray(sizes, dtype=np.float64)
    if arr.ndim == 0 or arr.shape[-1] != 2:
        raise ValueError(f"{name} must be (height, width) pairs [..., 2], got shape {arr.shape}")
    if not np.isfinite(arr).all() or (arr <= 0).any():
        raise ValueError(f"{name} must hold positive sizes, got {sizes!r}")
    return arr


def axis_scales(original_hw, resized_hw) -> np.ndarray:
    """Resize factor of each axis: ``resized / original``, float64 ``[..., 2]`` (y, x).

    ``original_hw`` / ``resized_hw``: ``(h, w)`` or ``[n, 2]``. A pixel coordinate ``p`` of the
    original image sits at ``p · axis_scale`` on the resized image — the one rule for boxes,
    polygons, keypoints and prompt boxes, in training (``data.augment``) and at inference."""
    return _size_pairs(resized_hw, "resized_hw") / _size_pairs(original_hw, "original_hw")


def canvas_unit_pixels(original_hw, canvas) -> np.ndarray:
    """Original-image pixels per canvas-normalised unit after :func:`resize_and_pad`, float64
    ``[..., 2]`` (y, x): ``canvas_side · original / resized`` per axis, the resized sides being
    :func:`fitted_size`'s rounded ones (the authors' ``image_size / unpadded_image_size ·
    orig_image_size``). ``original_hw``: ``(h, w)`` or ``[n, 2]``."""
    original = _size_pairs(original_hw, "original_hw")
    sides = np.asarray(canvas_hw(canvas), dtype=np.float64)
    flat = original.reshape(-1, 2)
    resized = np.array([fitted_size(int(h), int(w), canvas)[0] for h, w in flat], np.float64)
    return (sides / axis_scales(flat, resized)).reshape(original.shape)


def crop_window(boxes, height: int, width: int, pad_scale: float = CROP_PAD_SCALE) -> np.ndarray:
    """The authors' ``crop_to_bbox`` window around each box (keypoint training and inference).

    ``boxes [n, 4]`` pixel ``ymin xmin ymax xmax`` in an image of ``height × width``. With the box
    normalised by the image side (float32, as their tfrecords store it): ``y0 = floor(ymin·(H−1))``,
    ``y1 = ceil(ymax·(H−1))`` (x likewise with W), ``size = y1 − y0 + 1``, padding
    ``int(pad_scale · size)`` on each side, clamped to the image, ends inclusive.

    Returns int64 ``[n, 4]`` ``y0 x0 y1 x1`` with **exclusive** ends (``image[y0:y1, x0:x1]``);
    every window holds at least one pixel and contains its box."""
    if isinstance(height, bool) or isinstance(width, bool) or int(height) < 1 or int(width) < 1:
        raise ValueError(f"height and width must be positive ints, got {height!r} x {width!r}")
    if not np.isfinite(pad_scale) or pad_scale < 0:
        raise ValueError(f"pad_scale must be a finite number >= 0, got {pad_scale!r}")
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must have shape [n, 4] (ymin xmin ymax xmax), got {b.shape}")
    if not np.isfinite(b).all() or (b[:, 2:] < b[:, :2]).any():
        raise ValueError("boxes must be finite with ymax >= ymin and xmax >= xmin")
    f32 = np.float32
    sides = np.array([height, width], np.float64)
    last = np.array([height - 1, width - 1], f32)
    lo_norm = np.clip(b[:, :2] / sides, 0.0, 1.0).astype(f32)
    hi_norm = np.clip(b[:, 2:] / sides, 0.0, 1.0).astype(f32)
    lo = np.floor(lo_norm * last).astype(np.int64)
    hi = np.ceil(hi_norm * last).astype(np.int64)
    pad = ((hi - lo + 1).astype(f32) * f32(pad_scale)).astype(np.int64)
    lo = np.maximum(lo - pad, 0)
    hi = np.minimum(hi + pad, last.astype(np.int64))
    return np.concatenate([lo, hi + 1], axis=1)


def _triangle_spans(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """TF ScaleAndTranslate spans for one axis: ``starts[out]`` int64 and ``weights[out, taps]`` float32."""
    f32 = np.float32
    scale = f32(out_size) / f32(in_size)
    inv_scale = f32(1.0 / np.float64(scale))
    kernel_scale = max(inv_scale, f32(1.0))
    one_over_kernel_scale = f32(1.0) / kernel_scale
    taps = min(2 * int(np.ceil(kernel_scale)) + 1, in_size)
    sample = (np.arange(out_size, dtype=f32) + f32(0.5)) * inv_scale
    start = np.clip(np.ceil(sample - kernel_scale - f32(0.5)).astype(np.int64), 0, in_size - 1)
    end = np.clip(np.floor(sample + kernel_scale - f32(0.5)).astype(np.int64), 0, in_size - 1) + 1
    source = start[:, None] + np.arange(taps)[None, :]  # [out, taps]
    position = (source.astype(f32) + f32(0.5)) - sample[:, None]
    distance = np.abs(position * one_over_kernel_scale)
    weights = np.where(distance < f32(1.0), f32(1.0) - distance, f32(0.0)).astype(f32)
    weights[source >= end[:, None]] = 0
    total = np.zeros(out_size, dtype=f32)
    for k in range(taps):  # float32 running sum in tap order, as TF does
        total += weights[:, k]
    usable = np.abs(total) >= f32(1000.0) * np.finfo(f32).tiny
    inverse = np.where(usable, f32(1.0) / np.where(usable, total, f32(1.0)), f32(0.0)).astype(f32)
    return start, (weights * inverse[:, None]).astype(f32)


def _gather_axis(image: torch.Tensor, axis: int, starts: np.ndarray, weights: np.ndarray) -> torch.Tensor:
    """``out[..., i, ...] = sum_k weights[i, k] * image[..., starts[i] + k, ...]`` along ``axis``, summed in k order."""
    size = image.shape[axis]
    starts_t = torch.from_numpy(starts).to(image.device)
    weights_t = torch.from_numpy(weights).to(image.device)
    view = [1] * image.ndim
    view[axis] = -1
    shape = list(image.shape)
    shape[axis] = starts.shape[0]
    out = torch.empty(shape, dtype=image.dtype, device=image.device)
    term = torch.empty_like(out)
    torch.index_select(image, axis, starts_t, out=out)
    out.mul_(weights_t[:, 0].reshape(view))
    for k in range(1, weights.shape[1]):
        torch.index_select(image, axis, (starts_t + k).clamp_(max=size - 1), out=term)
        out.add_(term.mul_(weights_t[:, k].reshape(view)))
    return out


def resize_and_pad(image: torch.Tensor, canvas, pad_value: float = PAD_VALUE) -> tuple[torch.Tensor, float]:
    """Aspect-preserving antialiased bilinear resize to fit ``canvas``, padded bottom/right.

    Args:
        image: float ``[3, H, W]`` in [0, 1] (see :func:`load_image`).
        canvas: side of the square canvas, or ``(height, width)``.
        pad_value: value of the padding (the authors' 0.3).
    Returns:
        ``(padded [3, canvas_h, canvas_w] float32, scale)`` where ``scale`` is the float32 factor TF
        used (resized side ≈ scale × original side; exact resized sides: :func:`fitted_size`).
    """
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3 or not image.is_floating_point():
        shape = list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be a float tensor [3, H, W] (use load_image), got {shape}")
    height, width = image.shape[1], image.shape[2]
    if height == 0 or width == 0:
        raise ValueError(f"image must not be empty, got {list(image.shape)}")
    canvas_h, canvas_w = canvas_hw(canvas)
    (new_h, new_w), scale = fitted_size(height, width, (canvas_h, canvas_w))
    x = image.to(torch.float32)
    x = _gather_axis(x, 1, *_triangle_spans(height, new_h))  # rows first, as TF: [3, new_h, W]
    # columns: gathering whole rows of the transposed image is much faster than along the last dim
    x = _gather_axis(x.transpose(1, 2).contiguous(), 1, *_triangle_spans(width, new_w))  # [3, new_w, new_h]
    pad = torch.tensor(np.float32(pad_value), device=x.device)
    out = torch.zeros(3, canvas_h, canvas_w, dtype=torch.float32, device=x.device)
    out[:, :new_h, :new_w] = x.sub_(pad).transpose(1, 2)
    return out.add_(pad), scale


def preprocess_batch(images, canvas, pad_value: float = PAD_VALUE):
    """Load, resize and pad a list of images into one batch.

    Returns:
        ``(batch [B, 3, S_h, S_w] float32, scales [B] float32, original_sizes [B, 2] int64 (h, w))``.
    """
    if isinstance(images, (str, os.PathLike, np.ndarray)) or (isinstance(images, torch.Tensor) and images.ndim < 4):
        images = [images]
    images = list(images)
    if not images:
        raise ValueError("images must not be empty")
    padded, scales, sizes = [], [], []
    for item in images:
        loaded = load_image(item)
        sizes.append(tuple(loaded.shape[1:]))
        out, scale = resize_and_pad(loaded, canvas, pad_value)
        padded.append(out)
        scales.append(scale)
    return (torch.stack(padded), torch.tensor(scales, dtype=torch.float32),
            torch.tensor(sizes, dtype=torch.int64))
