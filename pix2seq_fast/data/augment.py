"""Per-task augmentation (SPEC §6), functions of ``(image, instances, rng)``.

Images go in as ``[H, W, 3]`` uint8 RGB and come out as ``[S, S, 3]`` float32 in [0, 1] on the
square canvas (bottom/right padding 0.3; no mean/std normalisation, the authors' convention).
Annotations (:class:`~pix2seq_fast.data.coco.Instances`, pixels, y first) come out normalised by
the canvas side, y first — what the task codecs take.

Order (the authors' pipeline): drop crowd objects → (keypoints) crop about 2× the person box (their
``crop_to_bbox``, shared with inference: ``preprocess.crop_window``) → scale
jitter (the longer side becomes ``U(lo, hi) · S``) → random crop of at most ``S × S`` → horizontal
flip (p 0.5) → (captions) colour jitter → pad to ``S × S``. A crop clips boxes and drops the ones
it empties, clips polygons to the crop rectangle (Sutherland–Hodgman) and drops parts left with no
area, and marks keypoints that fall outside it unlabeled (v = 0; the codec writes them as
INVISIBLE). A flip mirrors x and swaps left/right keypoints (``FLIP_PERMUTATION``).
Evaluation uses ``scale_range=(1, 1)`` and no flip: the longer side is resized to ``S``, no crop.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from pix2seq_fast.data.coco import Instances
from pix2seq_fast.data.polygons import clip_polygon_to_rect, signed_area
from pix2seq_fast.preprocess import axis_scales, crop_window
from pix2seq_fast.tasks.keypoints import FLIP_PERMUTATION

PAD_VALUE = 0.3


@dataclass(frozen=True)
class AugmentConfig:
    """canvas: side ``S`` of the square canvas; scale_range: scale jitter of the longer side relative
    to ``S``; flip_prob: horizontal flip probability; color_jitter: colour distortion strength (0 =
    off); person_crop: crop 2× the focus instance's box first (keypoints); pad_value: canvas fill."""

    canvas: int = 640
    scale_range: tuple = (0.3, 2.0)
    flip_prob: float = 0.5
    color_jitter: float = 0.0
    person_crop: bool = False
    pad_value: float = PAD_VALUE

    def __post_init__(self):
        if self.canvas < 1:
            raise ValueError(f"canvas must be >= 1, got {self.canvas}")
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < lo <= hi, got {self.scale_range}")
        if not 0 <= self.flip_prob <= 1:
            raise ValueError(f"flip_prob must be in [0, 1], got {self.flip_prob}")
        if self.color_jitter < 0:
            raise ValueError(f"color_jitter must be >= 0, got {self.color_jitter}")


def task_augment_config(task: str, canvas: int, train: bool = True) -> AugmentConfig:
    """SPEC §6 defaults: detection / captions scale [0.3, 2.0], segmentation / keypoints [0.3, 1.0];
    colour jitter 0.5 for captions; 2× person crop for keypoints; eval: no jitter, no flip."""
    tables = {"detect": AugmentConfig(canvas, (0.3, 2.0)),
              "segment": AugmentConfig(canvas, (0.3, 1.0)),
              "keypoints": AugmentConfig(canvas, (0.3, 1.0), person_crop=True),
              "caption": AugmentConfig(canvas, (0.3, 2.0), color_jitter=0.5)}
    if task not in tables:
        raise ValueError(f"task must be one of {sorted(tables)}, got {task!r}")
    cfg = tables[task]
    return cfg if train else replace(cfg, scale_range=(1.0, 1.0), flip_prob=0.0, color_jitter=0.0)


# ---- geometric operations on Instances (pixels, y first) -------------------------------------------
def scale_instances(inst: Instances, sy: float, sx: float) -> Instances:
    s2 = np.array([sy, sx], np.float32)
    kp = inst.keypoints.copy()
    kp[..., :2] *= s2
    return replace(inst, boxes=inst.boxes * np.array([sy, sx, sy, sx], np.float32), keypoints=kp,
                   polygons=[[p * s2 for p in parts] for parts in inst.polygons])


def crop_instances(inst: Instances, y0: float, x0: float, height: float,
                   width: float) -> tuple[Instances, np.ndarray]:
    """Express ``inst`` in the crop window ``[y0, y0 + height) × [x0, x0 + width)``: boxes clipped
    (and dropped when emptied), polygons clipped, outside keypoints set to v = 0.

    Returns the cropped instances and ``kept [m]``, the positions in ``inst`` they come from."""
    shift = np.array([y0, x0], np.float32)
    hi = np.array([height, width], np.float32)
    boxes = inst.boxes - np.array([y0, x0, y0, x0], np.float32)
    boxes = np.concatenate([np.clip(boxes[:, :2], 0, hi), np.clip(boxes[:, 2:], 0, hi)], 1)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    polygons = []
    for parts in inst.polygons:
        clipped = [clip_polygon_to_rect(p - shift, (0, 0), (height, width)) for p in parts]
        polygons.append([c for c in clipped if len(c) >= 3 and abs(signed_area(c)) > 1e-6])
    kp = inst.keypoints.copy()
    kp[..., :2] -= shift
    outside = (kp[..., 0] < 0) | (kp[..., 0] >= height) | (kp[..., 1] < 0) | (kp[..., 1] >= width)
    kp[..., 2] = np.where(outside, 0, kp[..., 2])
    out = replace(inst, boxes=boxes.astype(np.float32), polygons=polygons, keypoints=kp)
    return out.select(keep), np.flatnonzero(keep)


def flip_instances(inst: Instances, width: float) -> Instances:
    """Mirror x (``x -> width - x``) and swap left/right keypoints."""
    boxes = inst.boxes.copy()
    boxes[:, 1], boxes[:, 3] = width - inst.boxes[:, 3], width - inst.boxes[:, 1]
    kp = inst.keypoints.copy()
    kp[..., 1] = np.where(kp[..., 2] > 0, width - kp[..., 1], kp[..., 1])
    if kp.shape[1] == len(FLIP_PERMUTATION):
        kp = kp[:, list(FLIP_PERMUTATION)]
    flip = np.array([0.0, width], np.float32)
    sign = np.array([1.0, -1.0], np.float32)
    polygons = [[flip + p * sign for p in parts] for parts in inst.polygons]
    return replace(inst, boxes=boxes, keypoints=kp, polygons=polygons)


def normalize_instances(inst: Instances, canvas: int) -> Instances:
    """Pixels on the canvas -> coordinates normalised by the canvas side (y first)."""
    return scale_instances(inst, 1.0 / canvas, 1.0 / canvas)


# ---- image operations --------------------------------------------------------------------------------
def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``[H, W, C]`` -> ``[height, width, C]``; area averaging when shrinking, bilinear otherwise."""
    shrink = height < image.shape[0] or width < image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def pad_to_canvas(image: np.ndarray, canvas: int, value: float = PAD_VALUE) -> np.ndarray:
    """``[h, w, 3]`` float (h, w <= canvas) -> ``[canvas, canvas, 3]`` padded bottom/right."""
    h, w = image.shape[:2]
    if h > canvas or w > canvas:
        raise ValueError(f"image {h}x{w} is larger than the canvas {canvas}")
    out = np.full((canvas, canvas, image.shape[2]), value, np.float32)
    out[:h, :w] = image
    return out


_GRAY = np.array([0.299, 0.587, 0.114], np.float32)


def color_jitter(image: np.ndarray, rng: np.random.Generator, strength: float = 0.5) -> np.ndarray:
    """SimCLR colour distortion on ``[H, W, 3]`` float in [0, 1]: brightness, contrast, saturation
    (factors ``U(1 - 0.8 s, 1 + 0.8 s)``) and hue (rotation by ``U(-0.2 s, 0.2 s)`` turns in YIQ),
    in random order, clipped to [0, 1]."""
    if strength <= 0:
        return image
    out = image.astype(np.float32, copy=True)
    for op in rng.permutation(4):
        if op == 3:
            angle = 2 * np.pi * rng.uniform(-0.2 * strength, 0.2 * strength)
            out = np.clip(out @ _hue_matrix(angle).T, 0, 1)
            continue
        factor = np.float32(rng.uniform(max(0.0, 1 - 0.8 * strength), 1 + 0.8 * strength))
        if op == 0:
            out = np.clip(out * factor, 0, 1)
        elif op == 1:
            mean = np.float32((out @ _GRAY).mean())
            out = np.clip(mean + (out - mean) * factor, 0, 1)
        else:
            gray = (out @ _GRAY)[..., None]
            out = np.clip(gray + (out - gray) * factor, 0, 1)
    return out


def _hue_matrix(angle: float) -> np.ndarray:
    to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]], np.float32)
    return (np.linalg.inv(to_yiq) @ rot @ to_yiq).astype(np.float32)


# ---- the pipeline ------------------------------------------------------------------------------------
@dataclass
class Augmented:
    """image ``[S, S, 3]`` float32 in [0, 1]; instances normalised by ``S``, y first; focus: position
    of the tracked instance in ``instances`` (None if it was cropped away or none was asked);
    scale: ``(s_y, s_x)`` canvas pixels per original pixel, per axis (each axis is resized to a
    rounded size: ``preprocess.axis_scales``); offset: ``(y, x)`` original pixel at the canvas origin
    (before any flip), so ``original = canvas_pixels / scale + offset`` per axis; size: ``(h, w)`` of
    the image content on the canvas; flipped: whether a horizontal flip was applied."""
    image: np.ndarray
    instances: Instances
    focus: int | None
    scale: float
    offset: tuple
    size: tuple
    flipped: bool


def person_crop_window(box, height: int, width: int) -> tuple[int, int, int, int]:
    """The keypoint crop around ``box`` (pixels, ``ymin xmin ymax xmax``): the authors'
    ``crop_to_bbox``, the same window inference uses (``preprocess.crop_window``).
    Returns ``(y0, x0, y1, x1)``, exclusive ends."""
    y0, x0, y1, x1 = crop_window(np.asarray(box, np.float64).reshape(1, 4), height, width)[0]
    return int(y0), int(x0), int(y1), int(x1)


def augment(image: np.ndarray, inst: Instances, rng: np.random.Generator, cfg: AugmentConfig,
            focus: int | None = None, with_polygons: bool = True) -> Augmented:
    """The SPEC §6 pipeline for one sample. ``image`` ``[H, W, 3]`` uint8; ``inst`` in pixels, y first;
    ``focus``: index into ``inst`` of the instance to track (segmentation / keypoints);
    ``with_polygons=False`` drops the polygons first (tasks that do not use them skip clipping)."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be [H, W, 3], got shape {image.shape}")
    if focus is not None and not 0 <= focus < len(inst):
        raise ValueError(f"focus must index one of the {len(inst)} instances, got {focus}")
    if not with_polygons:
        inst = replace(inst, polygons=[[] for _ in range(len(inst))])
    ids = np.arange(len(inst))
    keep = ~inst.is_crowd
    inst, ids = inst.select(keep), ids[keep]
    if focus is not None and not keep[focus]:
        raise ValueError(f"focus instance {focus} is a crowd region")
    y0 = x0 = 0
    if cfg.person_crop and focus is not None:
        pos = int(np.flatnonzero(ids == focus)[0])
        y0, x0, y1, x1 = person_crop_window(inst.boxes[pos], *image.shape[:2])
        image = image[y0:y1, x0:x1]
        inst, kept = crop_instances(inst, y0, x0, y1 - y0, x1 - x0)
        ids = ids[kept]
    h, w = image.shape[:2]
    target = rng.uniform(*cfg.scale_range) * cfg.canvas
    scale = target / max(h, w)
    new_h, new_w = max(int(round(h * scale)), 1), max(int(round(w * scale)), 1)
    image = resize_image(image, new_h, new_w)
    sy, sx = axis_scales((h, w), (new_h, new_w))
    inst = scale_instances(inst, sy, sx)
    oy = int(np.floor(max(new_h - cfg.canvas, 0) * rng.uniform()))
    ox = int(np.floor(max(new_w - cfg.canvas, 0) * rng.uniform()))
    ch, cw = min(new_h, cfg.canvas), min(new_w, cfg.canvas)
    if (oy, ox, ch, cw) != (0, 0, new_h, new_w):
        image = image[oy:oy + ch, ox:ox + cw]
        inst, kept = crop_instances(inst, oy, ox, ch, cw)
        ids = ids[kept]
    flipped = bool(rng.uniform() < cfg.flip_prob)
    if flipped:
        image = image[:, ::-1]
        inst = flip_instances(inst, cw)
    pixels = image.astype(np.float32) * np.float32(1 / 255)
    pixels = color_jitter(pixels, rng, cfg.color_jitter)
    canvas = pad_to_canvas(pixels, cfg.canvas, cfg.pad_value)
    new_focus = None
    if focus is not None:
        hits = np.flatnonzero(ids == focus)
        new_focus = int(hits[0]) if len(hits) else None
    offset = (y0 + oy / sy, x0 + ox / sx)
    return Augmented(canvas, normalize_instances(inst, cfg.canvas), new_focus, (float(sy), float(sx)), offset,
                     (ch, cw), flipped)
