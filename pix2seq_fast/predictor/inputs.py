"""Caller images -> a list of float ``[3, H, W]`` tensors in [0, 1], and batches on the model canvas.

Accepted images: a file path (``str`` / ``pathlib.Path``), a numpy array ``[H, W]`` (gray),
``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA, alpha dropped), a PIL image, or a tensor ``[3, H, W]``
(float in [0, 1] or uint8). A list / tuple of these, or a ``[B, 3, H, W]`` tensor, is a batch; the
images of a batch may have different sizes.

Pixel rules (one for files, arrays and PIL images): 8-bit as is; 16-bit (``uint16`` arrays, PIL
``I;16`` / ``I`` up to 65535, 16-bit files) scaled to 8 bits as ``round(v / 257)``; floating-point
pixels are taken only as a float tensor ``[3, H, W]`` in [0, 1] (float arrays, PIL mode ``F`` images
and float image files are refused, never truncated). A uint8 tensor whose
first and last dimensions could both be channels (``[3, H, 3]``) is refused as ambiguous, and an
image of more than ``MAX_IMAGE_PIXELS`` pixels is refused (files before they are decoded), each with
a ``ValueError`` naming ``images[i]``.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
import torch

SINGLE_TYPES = (str, os.PathLike, np.ndarray, torch.Tensor)


def _is_pil(x) -> bool:
    try:
        from PIL import Image  # noqa: PLC0415
    except ImportError:
        return False
    return isinstance(x, Image.Image)


def as_image_list(images) -> tuple[list, bool]:
    """``images`` -> (list of single images, ``True`` when the caller passed one image).

    Raises ``ValueError`` for an empty batch or an element of an unsupported type.
    """
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        items, single = list(images.unbind(0)), False
    elif isinstance(images, (list, tuple)):
        items, single = list(images), False
    elif isinstance(images, SINGLE_TYPES) or _is_pil(images):
        items, single = [images], True
    else:
        raise ValueError(f"images must be a path, a numpy array, a PIL image, a tensor, or a list "
                         f"of them; got {type(images).__name__}")
    if not items:
        raise ValueError("images is an empty batch: pass at least one image")
    for i, item in enumerate(items):
        if not (isinstance(item, SINGLE_TYPES) or _is_pil(item)):
            raise ValueError(f"images[{i}] must be a path, a numpy array, a PIL image or a tensor; "
                             f"got {type(item).__name__}")
    return items, single


def load_images(images) -> tuple[list[torch.Tensor], bool]:
    """``images`` (see module doc) -> (list of float ``[3, H_i, W_i]`` in [0, 1] on the CPU, single)."""
    from pix2seq_fast.preprocess import load_image  # noqa: PLC0415

    items, single = as_image_list(images)
    loaded = []
    for i, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)) and not os.path.exists(item):
            raise FileNotFoundError(f"images[{i}]: no such file: {os.fspath(item)}")
        try:
            loaded.append(load_image(_normalise(item)))
        except ValueError as e:
            raise ValueError(f"images[{i}]: {e}") from None
    return loaded, single


def _check_pixels(height: int, width: int, name: str) -> None:
    from pix2seq_fast.data.validate import MAX_IMAGE_PIXELS  # noqa: PLC0415

    if height * width > MAX_IMAGE_PIXELS:
        raise ValueError(f"{name}: image of {height}x{width} pixels exceeds the limit of {MAX_IMAGE_PIXELS} pixels")


def _normalise(item):
    """Apply the pixel rules of the module doc; returns what ``preprocess.load_image`` takes."""
    from pix2seq_fast.data.coco import decode_image, to_uint8_rgb  # noqa: PLC0415

    if isinstance(item, (str, os.PathLike)):
        return decode_image(item, f"image file {os.fspath(item)}")
    if isinstance(item, torch.Tensor):
        if item.ndim >= 2:
            _check_pixels(int(item.shape[-2]), int(item.shape[-1]), "image tensor")
        if (item.dtype == torch.uint8 and item.ndim == 3 and item.shape[0] in (1, 3, 4)
                and item.shape[-1] in (1, 3, 4)):
            raise ValueError(f"image tensor: uint8 shape {list(item.shape)} is ambiguous (CHW or HWC?); pass "
                             "a [3, H, W] float tensor in [0, 1] or a numpy [H, W, C] array")
        return item
    if _is_pil(item):
        _check_pixels(item.height, item.width, "PIL image")
        if item.mode == "F":
            raise ValueError("PIL image: mode F (float) pixels are refused (they would be truncated); pass "
                             "a float tensor [3, H, W] in [0, 1]")
        if item.mode == "I" or item.mode.startswith("I;16"):
            array = np.asarray(item)
            if array.size and (array.min() < 0 or array.max() > 65535):
                raise ValueError(f"PIL image (mode {item.mode}): values must be 16-bit (0..65535)")
            return to_uint8_rgb(array.astype(np.uint16), f"PIL image (mode {item.mode})")
        return item
    if isinstance(item, np.ndarray):
        if item.ndim >= 2:
            _check_pixels(int(item.shape[0]), int(item.shape[1]), "image array")
        if item.dtype == np.uint16:
            return to_uint8_rgb(item, "image array")
    return item


class CanvasBatch(NamedTuple):
    """Images resized (aspect kept) and padded bottom/right to the model's canvas.

    pixels ``[B, 3, H_c, W_c]`` float in [0, 1] on the model device; ``scales [B]`` float64 (TF's
    unrounded resize factor; map coordinates with ``geometry.pixel_factors``, which is per axis);
    ``sizes`` the original ``(height, width)`` of each image.
    """

    pixels: torch.Tensor
    scales: torch.Tensor
    sizes: list[tuple[int, int]]


def to_canvas(images: list[torch.Tensor], canvas, device) -> CanvasBatch:
    """List of ``[3, H_i, W_i]`` -> ``CanvasBatch`` on ``device``; ``canvas``: a side or ``(H, W)``."""
    from pix2seq_fast.preprocess import canvas_hw, resize_and_pad  # noqa: PLC0415

    out = torch.empty(len(images), 3, *canvas_hw(canvas), dtype=torch.float32, device=device)
    scales = torch.empty(len(images), dtype=torch.float64)
    for i, img in enumerate(images):
        padded, scale = resize_and_pad(img, canvas)
        out[i].copy_(padded)
        scales[i] = float(scale)
    return CanvasBatch(out, scales, [(int(img.shape[1]), int(img.shape[2])) for img in images])
