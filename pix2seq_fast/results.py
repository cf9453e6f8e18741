"""Typed per-image results of the four tasks, with COCO result-JSON export.

Every result holds numpy arrays in the **original image's pixel coordinates**, x first
(``xyxy`` boxes, ``(x, y, v)`` keypoints), and the original ``image_size = (height, width)``.
``to_coco(image_id, category_map=None)`` returns the list of COCO result dicts for that image;
``category_map`` maps our category ids to the ids written out (identity by default).
Scores, boxes and keypoints must be finite: a NaN / inf raises ``ValueError`` naming the field.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Detections", "InstanceMasks", "Keypoints", "Caption", "rle_to_json", "rle_area"]

NUM_KEYPOINTS = 17


def _as_array(values, dtype, shape_tail: tuple, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=dtype)
    if arr.size == 0:
        arr = arr.reshape((0,) + shape_tail)
    if arr.ndim != 1 + len(shape_tail) or tuple(arr.shape[1:]) != shape_tail:
        want = "[n" + "".join(f", {s}" for s in shape_tail) + "]"
        raise ValueError(f"{name} must have shape {want}, got {tuple(arr.shape)}")
    return arr


def _finite(arr: np.ndarray, name: str) -> np.ndarray:
    """``arr`` unchanged, or ``ValueError`` naming ``name`` and the first non-finite entry."""
    bad = np.flatnonzero(~np.isfinite(arr.reshape(-1)))
    if bad.size:
        index = np.unravel_index(bad[0], arr.shape)
        raise ValueError(f"{name} must be finite, got {arr.reshape(-1)[bad[0]]} at index "
                         f"{tuple(int(i) for i in index)} ({bad.size} non-finite value(s))")
    return arr


def _check_image_size(image_size) -> tuple[int, int]:
    if len(image_size) != 2 or min(int(s) for s in image_size) < 1:
        raise ValueError(f"image_size must be (height, width) with positive sides, got {image_size}")
    return int(image_size[0]), int(image_size[1])


def _map_category(label: int, category_map) -> int:
    if category_map is None:
        return int(label)
    if label not in category_map:
        raise ValueError(f"category_map has no entry for category id {label}")
    return int(category_map[label])


def _xywh(box_xyxy: np.ndarray) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    return [x0, y0, x1 - x0, y1 - y0]


def rle_to_json(rle: dict) -> dict:
    """A pycocotools RLE with ``counts`` as ``str`` (JSON-serialisable), ``size`` as ``[h, w]``;
    checked by the COCO validator (counts summing to ``h * w``) before pycocotools ever decodes it."""
    from pix2seq_fast.data.validate import is_int, rle_problem  # noqa: PLC0415

    if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
        raise ValueError(f"an RLE mask must be a dict with 'size' and 'counts', got {type(rle).__name__}")
    counts, size = rle["counts"], rle["size"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii", errors="replace")
    elif not isinstance(counts, str):
        raise ValueError("rle['counts'] must be the compressed bytes/str form of pycocotools")
    if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(is_int(v) and v > 0 for v in size):
        raise ValueError(f"rle['size'] must be [height, width] positive integers, got {size!r}")
    out = {"size": [int(size[0]), int(size[1])], "counts": counts}
    problem = rle_problem(out, *out["size"])
    if problem:
        raise ValueError(f"mask RLE: {problem}")
    return out


def rle_area(rle: dict) -> int:
    """Number of foreground pixels of one RLE."""
    from pycocotools import mask as mask_utils  # noqa: PLC0415

    return int(mask_utils.area(_as_pycoco(rle_to_json(rle))))


def _as_pycoco(rle: dict) -> dict:
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


@dataclass
class Detections:
    """Boxes of one image. ``boxes_xyxy [n, 4]`` float32 pixels, ``labels [n]`` int64 category ids,
    ``scores [n]`` float32 in [0, 1], ``image_size = (height, width)``. Sorted by score, highest first."""

    boxes_xyxy: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    image_size: tuple[int, int]

    def __post_init__(self):
        self.boxes_xyxy = _as_array(self.boxes_xyxy, np.float32, (4,), "boxes_xyxy")
        self.labels = _as_array(self.labels, np.int64, (), "labels")
        self.scores = _finite(_as_array(self.scores, np.float32, (), "scores"), "scores")
        _finite(self.boxes_xyxy, "boxes_xyxy")
        self.image_size = _check_image_size(self.image_size)
        if not len(self.boxes_xyxy) == len(self.labels) == len(self.scores):
            raise ValueError(f"boxes_xyxy, labels and scores must have the same length, got "
                             f"{len(self.boxes_xyxy)}, {len(self.labels)}, {len(self.scores)}")

    def __len__(self) -> int:
        return len(self.scores)

    def to_coco(self, image_id: int, category_map: dict | None = None) -> list[dict]:
        """``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]``."""
        return [{"image_id": int(image_id), "category_id": _map_category(int(label), category_map),
                 "bbox": _xywh(box), "score": float(score)}
                for box, label, score in zip(self.boxes_xyxy, self.labels, self.scores)]


@dataclass
class InstanceMasks:
    """Instance masks of one image: the boxes they were decoded from, and one pycocotools RLE per
    instance (``{"size": [h, w], "counts": str}`` at the original image size). ``dense()`` gives
    ``[n, h, w]`` bool. Mask score = box score."""

    boxes_xyxy: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    masks: list = field(default_factory=list)
    image_size: tuple[int, int] = (1, 1)

    def __post_init__(self):
        self.boxes_xyxy = _as_array(self.boxes_xyxy, np.float32, (4,), "boxes_xyxy")
        self.labels = _as_array(self.labels, np.int64, (), "labels")
        self.scores = _finite(_as_array(self.scores, np.float32, (), "scores"), "scores")
        _finite(self.boxes_xyxy, "boxes_xyxy")
        self.image_size = _check_image_size(self.image_size)
        self.masks = [rle_to_json(m) for m in self.masks]
        n = len(self.scores)
        if not len(self.boxes_xyxy) == len(self.labels) == len(self.masks) == n:
            raise ValueError(f"boxes_xyxy, labels, scores and masks must have the same length, got "
                             f"{len(self.boxes_xyxy)}, {len(self.labels)}, {n}, {len(self.masks)}")
        for m in self.masks:
            if tuple(m["size"]) != self.image_size:
                raise ValueError(f"mask size {m['size']} differs from image_size {self.image_size}")

    def __len__(self) -> int:
        return len(self.scores)

    def dense(self) -> np.ndarray:
        """``[n, height, width]`` bool masks."""
        from pycocotools import mask as mask_utils  # noqa: PLC0415

        if not self.masks:
            return np.zeros((0, *self.image_size), dtype=bool)
        decoded = mask_utils.decode([_as_pycoco(m) for m in self.masks])  # [h, w, n]
        return np.ascontiguousarray(decoded.transpose(2, 0, 1).astype(bool))

    def to_coco(self, image_id: int, category_map: dict | None = None) -> list[dict]:
        """``[{"image_id", "category_id", "segmentation": RLE, "bbox", "score"}, ...]``."""
        return [{"image_id": int(image_id), "category_id": _map_category(int(label), category_map),
                 "segmentation": dict(mask), "bbox": _xywh(box), "score": float(score)}
                for box, label, score, mask in zip(self.boxes_xyxy, self.labels, self.scores,
                                                   self.masks)]


@dataclass
class Keypoints:
    """COCO keypoints of the persons in one image. ``keypoints [n, 17, 3]`` float32 ``(x, y, v)``
    in pixels (v = 2 decoded, 0 missing: placed at the box centre), ``boxes_xyxy [n, 4]`` the person
    boxes, ``labels [n]``, ``scores [n]`` (mean likelihood of the keypoint tokens)."""

    keypoints: np.ndarray
    boxes_xyxy: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    image_size: tuple[int, int]

    def __post_init__(self):
        self.keypoints = _finite(_as_array(self.keypoints, np.float32, (NUM_KEYPOINTS, 3), "keypoints"),
                                 "keypoints")
        self.boxes_xyxy = _finite(_as_array(self.boxes_xyxy, np.float32, (4,), "boxes_xyxy"), "boxes_xyxy")
        self.labels = _as_array(self.labels, np.int64, (), "labels")
        self.scores = _finite(_as_array(self.scores, np.float32, (), "scores"), "scores")
        self.image_size = _check_image_size(self.image_size)
        if not len(self.keypoints) == len(self.boxes_xyxy) == len(self.labels) == len(self.scores):
            raise ValueError("keypoints, boxes_xyxy, labels and scores must have the same length")

    def __len__(self) -> int:
        return len(self.scores)

    def to_coco(self, image_id: int, category_map: dict | None = None) -> list[dict]:
        """``[{"image_id", "category_id", "keypoints": [x1, y1, v1, ..., x17, y17, v17], "score"}]``."""
        return [{"image_id": int(image_id), "category_id": _map_category(int(label), category_map),
                 "keypoints": [float(v) for v in points.reshape(-1)],
                 "bbox": _xywh(box), "score": float(score)}
                for points, box, label, score in zip(self.keypoints, self.boxes_xyxy, self.labels,
                                                     self.scores)]


@dataclass
class Caption:
    """The caption of one image."""

    text: str
    image_size: tuple[int, int] = (1, 1)

    def __post_init__(self):
        if not isinstance(self.text, str):
            raise ValueError(f"text must be a str, got {type(self.text).__name__}")
        self.image_size = _check_image_size(self.image_size)

    def to_coco(self, image_id: int, category_map: dict | None = None) -> list[dict]:
        """``[{"image_id", "caption"}]`` (``category_map`` is accepted and unused)."""
        return [{"image_id": int(image_id), "caption": self.text}]
