"""COCO loaders: ``instances_*.json`` / ``person_keypoints_*.json`` and ``captions_*.json``.

Annotations are validated once, when the file is loaded, by the one COCO validator
(:mod:`pix2seq_fast.data.validate`: ``on_error="raise"``: a ``CocoFormatError`` naming the json file,
the annotation id and the field; ``on_error="skip"``: the annotation is dropped, logged and counted
in ``skipped``). Images are decoded lazily (opencv) when a sample asks for them. Coordinates are
converted to **y first, pixels** on load: boxes ``[n, 4]`` ``ymin xmin ymax xmax``, polygon vertices
``[k, 2]`` ``y x``, keypoints ``[n, 17, 3]`` ``y x v``.

Image paths must stay inside the image folder: a ``file_name`` with ``..`` or an absolute one is
refused when the file is loaded (``allow_absolute_paths=True`` lets absolute names through).
Non-crowd boxes of zero width or height are no training targets: they are left out of
``instances()`` and counted in ``degenerate_boxes`` (they stay in ``coco``, the ground truth for
evaluation). Polygons with fewer than 3 points enclose nothing: they are dropped; an instance left
with no polygon keeps its box but has ``polygons[i] == []``. Non-crowd instances stored as RLE are
kept with no polygon (the segmentation dataset skips them).

Images (:func:`decode_image`, also the file reader of ``predict``): 8-bit as stored; 16-bit scaled to
8 bits as ``round(value / 257)``; floating-point files are refused (never truncated); gray is
replicated, alpha dropped, EXIF orientation ignored (as the authors' TF decoder). An image
of more than ``MAX_IMAGE_PIXELS`` pixels is refused before it is decoded. A missing, undecodable,
oversize or wrongly sized image raises ``ImageReadError`` naming the file when it is read; the
datasets turn that into a logged skip with ``on_error="skip"``.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import warnings
from dataclasses import dataclass, field

import cv2
import numpy as np

from pix2seq_fast.data.validate import (MAX_IMAGE_PIXELS, ON_ERROR, CocoFormatError, check_on_error,
                                        read_coco_json, resolve_image_path, validate_coco)

logger = logging.getLogger(__name__)

__all__ = ["CocoCaptions", "CocoFormatError", "CocoInstances", "ImageInfo", "ImageReadError", "Instances",
           "MAX_IMAGE_PIXELS", "ON_ERROR", "decode_image", "read_image", "to_uint8_rgb"]


_PIL_LOCK = threading.Lock()


class ImageReadError(ValueError):
    """A missing, corrupt, oversize or wrongly sized image; the message names the file."""


@dataclass
class ImageInfo:
    image_id: int
    path: str
    height: int
    width: int


@dataclass
class Instances:
    """Annotations of one image, pixels, y first. ``n`` instances (crowd ones included).

    ``boxes[n, 4]`` float32 ``ymin xmin ymax xmax``; ``labels[n]`` int64 COCO category ids;
    ``is_crowd[n]`` bool; ``polygons``: per instance a list of ``[k, 2]`` float32 ``y x`` parts;
    ``keypoints[n, K, 3]`` float32 ``y x v`` (v = 0 everywhere for instances without keypoints);
    ``ann_ids[n]`` int64; ``crowd_rles``: per instance the RLE dict of a crowd region, else None.
    """
    boxes: np.ndarray
    labels: np.ndarray
    is_crowd: np.ndarray
    polygons: list
    keypoints: np.ndarray
    ann_ids: np.ndarray
    crowd_rles: list = field(default_factory=list)

    def __len__(self):
        return len(self.labels)

    def select(self, keep) -> "Instances":
        """Subset by a boolean mask or an index array."""
        idx = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep, dtype=np.int64)
        return Instances(
            boxes=self.boxes[idx], labels=self.labels[idx], is_crowd=self.is_crowd[idx],
            polygons=[self.polygons[i] for i in idx], keypoints=self.keypoints[idx],
            ann_ids=self.ann_ids[idx], crowd_rles=[self.crowd_rles[i] for i in idx])

    @staticmethod
    def empty(num_keypoints: int = 17) -> "Instances":
        return Instances(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, bool), [],
                         np.zeros((0, num_keypoints, 3), np.float32), np.zeros(0, np.int64), [])


def to_uint8_rgb(array: np.ndarray, name: str, bgr: bool = False) -> np.ndarray:
    """A decoded image ``[H, W]`` / ``[H, W, C]`` (C in 1..4; uint8 or uint16) ->
    ``[H, W, 3]`` uint8 RGB. 16-bit values become ``round(v / 257)``; alpha is dropped; float pixels
    are refused."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ImageReadError(f"{name}: expected an HxW or HxWxC image with 1 to 4 channels, got shape "
                             f"{tuple(array.shape)}")
    if array.shape[0] * array.shape[1] > MAX_IMAGE_PIXELS:
        raise ImageReadError(f"{name}: image of {array.shape[0]}x{array.shape[1]} pixels exceeds the limit "
                             f"of {MAX_IMAGE_PIXELS} pixels")
    if array.dtype == np.uint16:
        array = ((array.astype(np.uint32) * 2 + 257) // 514).astype(np.uint8)  # round(v / 257)
    elif array.dtype.kind == "f":
        raise ImageReadError(f"{name}: floating-point pixels are refused (convert the file to 8 or 16 bits, "
                             "or pass a float tensor [3, H, W] in [0, 1] to predict)")
    elif array.dtype != np.uint8:
        raise ImageReadError(f"{name}: image pixels must be 8-bit or 16-bit, got {array.dtype}")
    channels = array.shape[2]
    if channels <= 2:
        array = np.repeat(array[:, :, :1], 3, axis=2)
    else:
        array = array[:, :, :3]
        if bgr:
            array = array[:, :, ::-1]
    return np.ascontiguousarray(array)


def _header_size(path: str) -> tuple[int, int] | None:
    """``(height, width)`` from the file header (PIL reads it without decoding), None when PIL
    does not know the format."""
    try:
        from PIL import Image  # noqa: PLC0415
    except ImportError:  # pragma: no cover - pillow is a dependency
        return None
    with _PIL_LOCK:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our limit, with the size in the message
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(path) as im:
                    return int(im.height), int(im.width)
        except Exception:  # noqa: BLE001 - not a format PIL reads; opencv decides below
            return None
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def decode_image(path, name: str | None = None) -> np.ndarray:
    """Decode an image file -> ``[H, W, 3]`` uint8 RGB (see the module doc for the pixel rules).

    Raises ``ImageReadError`` naming ``name`` (default: the path) for a missing, oversize or
    undecodable file."""
    path = os.fspath(path)
    name = name or path
    if not os.path.isfile(path):
        raise ImageReadError(f"{name}: file not found")
    size = _header_size(path)
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise ImageReadError(f"{name}: image of {size[0]}x{size[1]} pixels exceeds the limit of "
                             f"{MAX_IMAGE_PIXELS} pixels")
    raw = np.fromfile(path, dtype=np.uint8)
    try:
        flags = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_IGNORE_ORIENTATION
        image = cv2.imdecode(raw, flags) if raw.size else None
    except cv2.error as e:
        raise ImageReadError(f"{name}: file cannot be decoded ({str(e).strip().splitlines()[-1]})") from None
    if image is None:
        raise ImageReadError(f"{name}: file cannot be decoded (corrupt?)")
    return to_uint8_rgb(image, name, bgr=True)


def read_image(info: ImageInfo) -> np.ndarray:
    """Decode ``info.path`` -> ``[H, W, 3]`` uint8 RGB, checking it exists, decodes and has the
    annotated size."""
    image = decode_image(info.path, f"{info.path}: image id {info.image_id}")
    if image.shape[:2] != (info.height, info.width):
        raise ImageReadError(
            f"{info.path}: image id {info.image_id}: decoded size {image.shape[0]}x{image.shape[1]} "
            f"differs from the annotated {info.height}x{info.width}")
    return image


def _load_validated(annotation_file, image_dir, on_error, kind, allow_absolute_paths, num_keypoints=17):
    """(clean dataset, report, {image id: ImageInfo}) of one annotation file."""
    check_on_error(on_error)
    data = read_coco_json(annotation_file)
    clean, report = validate_coco(data, annotation_file, on_error, kind=kind, num_keypoints=num_keypoints)
    images = {}
    for img in clean["images"]:
        try:
            path = resolve_image_path(image_dir, img["file_name"], allow_absolute=allow_absolute_paths)
        except ValueError as e:
            raise CocoFormatError(f"{annotation_file}: image id {img['id']}: field 'file_name': {e}") from None
        images[img["id"]] = ImageInfo(img["id"], os.fspath(path), img["height"], img["width"])
    return clean, report, images


class CocoInstances:
    """An ``instances_*.json`` or ``person_keypoints_*.json`` file plus its image directory.

    ``image_ids`` (sorted), ``categories`` (id -> dict), ``keypoint_names`` (from the first
    category that has them, else ``[]``), ``image_info(id)``, ``load_image(id) -> [H, W, 3] uint8``,
    ``instances(id) -> Instances``, ``coco`` (the pycocotools ``COCO`` object of the validated
    annotations, for evaluation), ``skipped`` (annotations dropped by ``on_error="skip"``) and
    ``degenerate_boxes`` (zero-size non-crowd boxes left out of the training targets).
    """

    def __init__(self, annotation_file, image_dir, on_error: str = "raise", num_keypoints: int = 17,
                 allow_absolute_paths: bool = False):
        self.annotation_file, self.image_dir, self.on_error = str(annotation_file), str(image_dir), on_error
        self._dataset, report, self.images = _load_validated(
            self.annotation_file, self.image_dir, on_error, "instances", allow_absolute_paths, num_keypoints)
        self.skipped = report.skipped
        self.categories = {c["id"]: c for c in self._dataset["categories"]}
        self.keypoint_names = next((list(c["keypoints"]) for c in self.categories.values() if c.get("keypoints")), [])
        self.num_keypoints = len(self.keypoint_names) or num_keypoints
        per_image: dict[int, list] = {i: [] for i in self.images}
        self.degenerate_boxes = 0
        for ann in self._dataset["annotations"]:
            parsed = self._parse(ann)
            if parsed is None:
                self.degenerate_boxes += 1
            else:
                per_image[parsed["image_id"]].append(parsed)
        if self.degenerate_boxes:
            logger.info("%s: %d zero-size box(es) are no training targets", self.annotation_file,
                        self.degenerate_boxes)
        self._per_image = per_image
        self.image_ids = sorted(self.images)
        self._coco = None

    @property
    def coco(self):
        """pycocotools ``COCO`` over the validated annotations (built on first use)."""
        if self._coco is None:
            from pycocotools.coco import COCO
            coco = COCO()
            coco.dataset = self._dataset
            with contextlib.redirect_stdout(io.StringIO()):
                coco.createIndex()
            self._coco = coco
        return self._coco

    def __len__(self):
        return len(self.image_ids)

    def image_info(self, image_id) -> ImageInfo:
        return self.images[image_id]

    def load_image(self, image_id) -> np.ndarray:
        return read_image(self.images[image_id])

    def _parse(self, ann) -> dict | None:
        """A validated annotation -> arrays (y first); None for a zero-size non-crowd box."""
        x, y, w, h = ann["bbox"]
        crowd = bool(ann["iscrowd"])
        if not crowd and (w <= 0 or h <= 0):
            return None
        seg = ann.get("segmentation", [])
        rle = seg if isinstance(seg, dict) else None
        polygons = [] if crowd or rle is not None else [
            np.asarray(part, np.float32).reshape(-1, 2)[:, ::-1].copy() for part in seg]
        keypoints = np.zeros((self.num_keypoints, 3), np.float32)
        if "keypoints" in ann:
            kp = np.asarray(ann["keypoints"], np.float32).reshape(-1, 3)
            if len(kp) != self.num_keypoints:
                raise CocoFormatError(f"{self.annotation_file}: annotation id {ann['id']} (image "
                                      f"{ann['image_id']}): field 'keypoints': keypoints must be "
                                      f"{3 * self.num_keypoints} finite numbers")
            keypoints = kp[:, [1, 0, 2]]
        return dict(id=ann["id"], image_id=ann["image_id"], label=ann["category_id"],
                    box=np.array([y, x, y + h, x + w], np.float32), crowd=crowd, polygons=polygons,
                    rle=rle if crowd else None, keypoints=keypoints)

    def instances(self, image_id) -> Instances:
        anns = self._per_image[image_id]
        if not anns:
            return Instances.empty(self.num_keypoints)
        return Instances(
            boxes=np.stack([a["box"] for a in anns]), labels=np.array([a["label"] for a in anns], np.int64),
            is_crowd=np.array([a["crowd"] for a in anns], bool), polygons=[a["polygons"] for a in anns],
            keypoints=np.stack([a["keypoints"] for a in anns]), ann_ids=np.array([a["id"] for a in anns], np.int64),
            crowd_rles=[a["rle"] for a in anns])

    def instance_index(self, require=("polygons",)) -> list[tuple[int, int]]:
        """``(image_id, position)`` of every non-crowd instance that has what ``require`` names:
        ``"polygons"`` (at least one polygon) and/or ``"keypoints"`` (at least one labeled point)."""
        out = []
        for image_id in self.image_ids:
            for pos, a in enumerate(self._per_image[image_id]):
                if a["crowd"]:
                    continue
                if "polygons" in require and not a["polygons"]:
                    continue
                if "keypoints" in require and not (a["keypoints"][:, 2] > 0).any():
                    continue
                out.append((image_id, pos))
        return out

    def crowd_mask(self, image_id, position) -> np.ndarray:
        """``[H, W]`` uint8 mask of a crowd RLE (validated, then decoded by pycocotools)."""
        from pycocotools import mask as mask_utils
        rle = self._per_image[image_id][position]["rle"]
        if rle is None:
            raise ValueError(f"annotation at position {position} of image {image_id} is not an RLE region")
        if isinstance(rle["counts"], list):
            rle = mask_utils.frPyObjects(rle, *rle["size"])
        else:
            rle = dict(rle, counts=rle["counts"].encode("ascii"))
        return mask_utils.decode(rle)


class CocoCaptions:
    """A ``captions_*.json`` file plus its image directory.

    ``pairs``: list of ``(image_id, caption, annotation_id)``; ``captions(image_id) -> list[str]``;
    ``load_image(image_id) -> [H, W, 3] uint8 RGB``; ``skipped`` (captions dropped by ``on_error="skip"``).
    """

    def __init__(self, annotation_file, image_dir, on_error: str = "raise", allow_absolute_paths: bool = False):
        self.annotation_file, self.image_dir, self.on_error = str(annotation_file), str(image_dir), on_error
        clean, report, self.images = _load_validated(self.annotation_file, self.image_dir, on_error, "captions",
                                                     allow_absolute_paths)
        self.skipped = report.skipped
        self.pairs: list[tuple[int, str, int]] = []
        self._by_image: dict[int, list[str]] = {i: [] for i in self.images}
        for ann in clean["annotations"]:
            caption = ann["caption"].strip()
            self.pairs.append((ann["image_id"], caption, ann["id"]))
            self._by_image[ann["image_id"]].append(caption)
        self.image_ids = sorted(self.images)

    def __len__(self):
        return len(self.pairs)

    def captions(self, image_id) -> list[str]:
        return list(self._by_image[image_id])

    def image_info(self, image_id) -> ImageInfo:
        return self.images[image_id]

    def load_image(self, image_id) -> np.ndarray:
        return read_image(self.images[image_id])
