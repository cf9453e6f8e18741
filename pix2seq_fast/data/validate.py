"""The one COCO validator: every reader of COCO json (training loaders, ``eval.evaluate``,
``predictor.coco_run.evaluate_model``, the CLI) passes its data through here, and nothing that has
not passed reaches pycocotools (which segfaults on a NaN polygon and loops forever on an RLE whose
counts overrun the image).

``read_coco_json(path)``: the json object of a file, or ``CocoFormatError`` naming the file (missing
file: ``FileNotFoundError``; not json, nested too deeply, not an object at the top level).

``validate_coco(data, source, on_error)`` -> ``(clean, report)``: ``clean`` is a new dataset dict
holding only valid entries, ids as ``int``, boxes as float lists, polygon parts of >= 3 points.
Checked:

- top level: an object with an ``images`` list, an ``annotations`` list and (unless every
  annotation is a caption) a ``categories`` list;
- images: objects with a unique integer ``id``, a non-empty string ``file_name``, positive integer
  ``height`` / ``width`` and at most ``MAX_IMAGE_PIXELS`` pixels;
- categories: objects with a unique integer ``id``; ``keypoints`` a list of strings when present;
- annotations: a unique integer ``id``; ``image_id`` / ``category_id`` of an existing image /
  category; ``bbox`` 4 finite numbers ``[x, y, w, h]`` with ``w, h >= 0``, within float32, not
  wholly outside its image; ``iscrowd`` 0 or 1; ``area`` a finite number >= 0;
  ``segmentation`` polygons (parts of even length, finite coordinates within one image size of the
  image; parts of < 3 points enclose nothing and are dropped and counted, as COCO has a few) or an
  RLE ``{"size": [h, w], "counts"}`` of the image's size whose counts (a list, or the compressed
  string, decoded here first) are >= 0 and sum to ``h * w``; ``keypoints`` ``3 * K`` finite numbers
  (K = the category's keypoint names, else ``num_keypoints``) with visibility in {0, 1, 2};
  ``caption`` a non-empty string.

Images and categories are the frame every annotation hangs on: a bad one always raises. A bad
annotation raises ``CocoFormatError`` with ``on_error="raise"`` (the message names the source
file, the annotation id and the field) or, with ``on_error="skip"``, is dropped, logged and counted
in ``report.skipped``.

``validate_results(results, clean_gt, iou_type, source)``: the same checks on COCO result dicts
(``image_id``, ``category_id`` of the ground truth, finite ``score``, and the field of the IoU
type); always raises, naming ``predictions[i]``.

``resolve_image_path(image_dir, file_name, allow_absolute=False)``: the image file, which must lie
inside ``image_dir`` (``..`` and absolute names are refused; ``allow_absolute`` lets an absolute
name through).
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")
MAX_IMAGE_PIXELS = 2 ** 27  # 134M pixels (e.g. 11585 x 11585); larger images are refused
FLOAT32_MAX = float(np.finfo(np.float32).max)
_INT64_MAX = 2 ** 63 - 1
_KINDS = ("instances", "captions")
_PLAIN_NUMBERS = {int, float}


class CocoFormatError(ValueError):
    """A malformed COCO file or entry; the message names the file (or source), the annotation id
    and the field."""


@dataclass
class ValidationReport:
    """What ``validate_coco`` dropped: ``skipped`` annotations (their messages in ``problems``) and
    ``small_parts`` polygon parts of fewer than 3 points."""

    source: str
    skipped: int = 0
    small_parts: int = 0
    problems: list = field(default_factory=list)


def check_on_error(on_error) -> str:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    return on_error


# ---- files and paths ------------------------------------------------------------------------
def read_coco_json(path) -> dict:
    """The top-level json object of ``path`` (a COCO dataset or result file)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except UnicodeDecodeError as e:
        raise CocoFormatError(f"{path}: not valid JSON (not UTF-8 text: {e})") from None
    except json.JSONDecodeError as e:
        raise CocoFormatError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise CocoFormatError(f"{path}: not valid COCO JSON (nested too deeply)") from None
    except OSError as e:
        raise CocoFormatError(f"{path}: cannot be read ({e})") from None
    return data


def resolve_image_path(image_dir, file_name, allow_absolute: bool = False) -> Path:
    """``image_dir / file_name``, refusing a name that leaves ``image_dir``.

    A ``..`` component, an absolute name (unless ``allow_absolute``) or a symlink-free path that
    resolves outside ``image_dir`` raise ``ValueError`` naming the file name.
    """
    if not isinstance(file_name, str) or not file_name or "\x00" in file_name:
        raise ValueError(f"image file_name must be a non-empty string, got {file_name!r}")
    name = Path(file_name)
    if name.is_absolute() or os.path.isabs(file_name) or file_name.startswith(("\\", "/")):
        if allow_absolute:
            return name
        raise ValueError(f"image file_name {file_name!r} is an absolute path; image files must lie "
                         f"inside the image folder {os.fspath(image_dir)} (allow_absolute=True permits it)")
    if ".." in name.parts or ".." in Path(file_name.replace("\\", "/")).parts:
        raise ValueError(f"image file_name {file_name!r} leaves the image folder {os.fspath(image_dir)} "
                         "('..' is refused)")
    root = Path(image_dir)
    path = root / name
    if not os.path.abspath(path).startswith(os.path.abspath(root).rstrip(os.sep) + os.sep):
        raise ValueError(f"image file_name {file_name!r} resolves outside the image folder {root}")
    return path


# ---- small value checks (None when fine, else what is wrong) ---------------------------------
def is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _id_problem(value) -> str | None:
    if not is_int(value):
        return f"must be an integer, got {value!r}"
    if not 0 <= int(value) <= _INT64_MAX:
        return f"must be an integer in [0, 2^63), got {value!r}"
    return None


def _floats(values) -> list[float] | None:
    """``values`` as a list of Python floats (finite or not) when it is a flat list / tuple / 1-D array
    of real numbers; None otherwise (strings and booleans are not numbers here)."""
    if isinstance(values, np.ndarray):
        return values.astype(np.float64).tolist() if values.ndim == 1 and values.dtype.kind in "iuf" else None
    if not isinstance(values, (list, tuple)):
        return None
    if not set(map(type, values)) <= _PLAIN_NUMBERS and not all(is_number(v) for v in values):
        return None  # (the type set is the fast path: bool is not int here, "2" is not a number)
    try:
        return [float(v) for v in values]
    except OverflowError:  # an int beyond float64
        return [math.inf] * len(values)


def _all_finite(values: list[float]) -> bool:
    return all(map(math.isfinite, values))


def bbox_problem(bbox, height=None, width=None) -> str | None:
    """``[x, y, w, h]``: 4 finite numbers, ``w, h >= 0``, within float32, touching the image."""
    vals = _floats(bbox)
    if vals is None or len(vals) != 4 or not _all_finite(vals):
        return f"must be 4 finite numbers [x, y, w, h], got {_short(bbox)}"
    x, y, w, h = vals
    if w < 0 or h < 0:
        return f"has negative size (w={w}, h={h})"
    if max(abs(x), abs(y), abs(x + w), abs(y + h)) > FLOAT32_MAX:
        return f"does not fit in float32: {_short(bbox)}"
    if height is not None and (x > width or y > height or x + w < 0 or y + h < 0):
        return f"{_short(bbox)} lies wholly outside its {height}x{width} image"
    return None


def polygon_problem(part, height, width) -> str | None:
    """One polygon part ``[x1, y1, x2, y2, ...]``: even length, finite, within one image size."""
    vals = _floats(part)
    if vals is None or not _all_finite(vals):
        return "polygon is not a list of finite numbers"
    if len(vals) % 2:
        return f"polygon has odd length {len(vals)}"
    if vals:
        xs, ys = vals[0::2], vals[1::2]
        if min(xs) < -width or max(xs) > 2 * width or min(ys) < -height or max(ys) > 2 * height:
            return (f"polygon coordinates lie more than one image size outside the {height}x{width} "
                    "image")
    return None


def decode_rle_string(counts: str) -> np.ndarray | str:
    """The run lengths ``[n]`` int64 of a compressed pycocotools RLE string (what ``rleFrString``
    computes), or a message saying why the string is not one. Checked before pycocotools sees it:
    its decoder reads past the end of a truncated string and takes negative runs as huge ones."""
    try:
        raw = counts.encode("ascii")
    except UnicodeEncodeError:
        return "compressed RLE counts must be ASCII"
    if not raw:
        return np.zeros(0, np.int64)
    c = np.frombuffer(raw, np.uint8).astype(np.int64) - 48  # 6 bits per character
    invalid = np.flatnonzero((c < 0) | (c >= 64))
    if invalid.size:
        return f"compressed counts hold an invalid character {counts[invalid[0]]!r} at {invalid[0]}"
    last = np.flatnonzero((c & 0x20) == 0)  # the last character of every number
    if last.size == 0 or last[-1] != len(c) - 1:
        return "compressed counts end in the middle of a number"
    first = np.concatenate(([0], last[:-1] + 1))
    length = last - first + 1
    if length.max() > 6:  # pycocotools shifts a 32-bit -1 by 5 * length
        return "compressed counts hold a number of more than 6 characters"
    k = np.arange(len(c)) - np.repeat(first, length)  # 5-bit digit index within its number
    values = np.add.reduceat((c & 0x1F) << (5 * k), first)
    values -= ((c[last] & 0x10) != 0).astype(np.int64) << (5 * length)  # sign bit of the last digit
    runs = values.copy()  # from the fourth number on, each is a difference to the one two before
    runs[1::2] = np.cumsum(values[1::2])
    runs[2::2] = np.cumsum(values[2::2])
    return runs


def rle_problem(rle, height, width) -> str | None:
    """An RLE ``{"size": [h, w], "counts": list | str | bytes}`` of an ``height x width`` image."""
    if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
        return f"RLE segmentation must be a dict with 'size' and 'counts', got {_short(rle)}"
    size = rle["size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2 or not all(is_int(s) for s in size)
            or [int(s) for s in size] != [height, width]):
        return f"RLE size must be [{height}, {width}] (the image's), got {_short(size)}"
    counts = rle["counts"]
    if isinstance(counts, bytes):
        try:
            counts = counts.decode("ascii")
        except UnicodeDecodeError:
            return "compressed RLE counts must be ASCII"
    if isinstance(counts, str):
        runs = decode_rle_string(counts)
        if isinstance(runs, str):
            return runs
        runs = runs.tolist()
    elif isinstance(counts, (list, tuple)):
        if not all(is_int(c) for c in counts):
            return "RLE counts must be integers"
        runs = [int(c) for c in counts]
    else:
        return f"RLE counts must be a list of integers or a compressed string, got {type(counts).__name__}"
    if runs and min(runs) < 0:
        return "RLE counts must not be negative"
    total = sum(runs)
    if total != height * width:
        return f"RLE counts sum to {total}, not to h * w = {height * width}"
    return None


def keypoints_problem(keypoints, num_keypoints) -> str | None:
    vals = _floats(keypoints)
    if vals is None or len(vals) != 3 * num_keypoints or not _all_finite(vals):
        return f"keypoints must be {3 * num_keypoints} finite numbers (x, y, v per keypoint)"
    if not set(vals[2::3]) <= {0.0, 1.0, 2.0}:
        return "keypoint visibility must be 0, 1 or 2"
    return None


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# ---- datasets -------------------------------------------------------------------------------
def _frame_error(source, what, message) -> CocoFormatError:
    return CocoFormatError(f"{source}: {what}: {message}")


def _check_images(data, source) -> dict[int, dict]:
    images = {}
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict):
            raise _frame_error(source, f"images[{i}]", f"must be an object, got {_short(img)}")
        where = f"image id {img.get('id', '?')!r} (images[{i}])"
        problem = _id_problem(img.get("id"))
        if problem:
            raise _frame_error(source, where, f"field 'id' {problem}")
        image_id = int(img["id"])
        if image_id in images:
            raise _frame_error(source, where, "field 'id' duplicates an earlier image")
        name = img.get("file_name")
        if not isinstance(name, str) or not name.strip():
            raise _frame_error(source, where, f"field 'file_name' must be a non-empty string, got {_short(name)}")
        for key in ("height", "width"):
            if not is_int(img.get(key)) or int(img[key]) <= 0:
                raise _frame_error(source, where, f"field '{key}' must be a positive integer, got "
                                                  f"{_short(img.get(key))}")
        height, width = int(img["height"]), int(img["width"])
        if height * width > MAX_IMAGE_PIXELS:
            raise _frame_error(source, where, f"size {height}x{width} exceeds the limit of "
                                              f"{MAX_IMAGE_PIXELS} pixels")
        images[image_id] = dict(img, id=image_id, height=height, width=width)
    return images


def _check_categories(data, source) -> dict[int, dict]:
    categories = {}
    for i, cat in enumerate(data.get("categories", [])):
        if not isinstance(cat, dict):
            raise _frame_error(source, f"categories[{i}]", f"must be an object, got {_short(cat)}")
        where = f"category id {cat.get('id', '?')!r} (categories[{i}])"
        problem = _id_problem(cat.get("id"))
        if problem:
            raise _frame_error(source, where, f"field 'id' {problem}")
        cat_id = int(cat["id"])
        if cat_id in categories:
            raise _frame_error(source, where, "field 'id' duplicates an earlier category")
        names = cat.get("keypoints")
        if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
            raise _frame_error(source, where, "field 'keypoints' must be a list of names")
        if "name" in cat and not isinstance(cat["name"], str):
            raise _frame_error(source, where, f"field 'name' must be a string, got {_short(cat['name'])}")
        categories[cat_id] = dict(cat, id=cat_id)
    return categories


class _Annotations:
    """Checks annotations one by one; ``problem`` raises or records according to ``on_error``."""

    def __init__(self, source, on_error, images, categories, num_keypoints, report):
        self.source, self.on_error, self.report = source, on_error, report
        self.images, self.categories, self.num_keypoints = images, categories, num_keypoints
        self.seen: set[int] = set()

    def problem(self, ann, index, field_name, message) -> None:
        ann_id = ann.get("id", "?") if isinstance(ann, dict) else "?"
        image_id = ann.get("image_id", "?") if isinstance(ann, dict) else "?"
        where = f"annotation id {ann_id!r}" if ann_id != "?" else f"annotations[{index}]"
        text = f"{self.source}: {where} (image {image_id!r}): field '{field_name}': {message}"
        if self.on_error == "raise":
            raise CocoFormatError(text)
        self.report.skipped += 1
        if len(self.report.problems) < 100:
            self.report.problems.append(text)
        logger.warning("skipping %s", text)

    def check(self, ann, index, kind) -> dict | None:
        if not isinstance(ann, dict):
            return self.problem({}, index, "annotations", f"an annotation must be an object, got {_short(ann)}")
        problem = _id_problem(ann.get("id"))
        if problem:
            return self.problem(ann, index, "id", f"annotation without a valid 'id': {problem}")
        ann_id = int(ann["id"])
        if ann_id in self.seen:
            return self.problem(ann, index, "id", f"duplicate annotation id {ann_id}")
        image_id = ann.get("image_id")
        if not is_int(image_id) or int(image_id) not in self.images:
            return self.problem(ann, index, "image_id", f"unknown image_id {image_id!r}")
        image_id = int(image_id)
        clean = dict(ann, id=ann_id, image_id=image_id)
        if kind == "captions":
            caption = ann.get("caption")
            if not isinstance(caption, str) or not caption.strip():
                return self.problem(ann, index, "caption", f"caption must be a non-empty string, got {_short(caption)}")
        else:
            clean = self._instance(ann, index, clean)
            if clean is None:
                return None
        self.seen.add(ann_id)
        return clean

    def _instance(self, ann, index, clean) -> dict | None:
        category_id = ann.get("category_id")
        if not is_int(category_id) or int(category_id) not in self.categories:
            return self.problem(ann, index, "category_id", f"unknown category_id {category_id!r}")
        clean["category_id"] = int(category_id)
        image = self.images[clean["image_id"]]
        height, width = image["height"], image["width"]
        if "bbox" not in ann:
            return self.problem(ann, index, "bbox", "missing; bbox must be 4 finite numbers [x, y, w, h]")
        problem = bbox_problem(ann["bbox"], height, width)
        if problem:
            return self.problem(ann, index, "bbox", f"bbox {problem}")
        clean["bbox"] = [float(v) for v in ann["bbox"]]
        crowd = ann.get("iscrowd", 0)
        if not is_int(crowd) and not isinstance(crowd, bool) or int(crowd) not in (0, 1):
            return self.problem(ann, index, "iscrowd", f"iscrowd must be 0 or 1, got {_short(crowd)}")
        clean["iscrowd"] = int(crowd)
        if "area" in ann:
            area = _floats([ann["area"]])
            if area is None or not _all_finite(area) or area[0] < 0:
                return self.problem(ann, index, "area", f"area must be a finite number >= 0, got {_short(ann['area'])}")
            clean["area"] = float(ann["area"])
        if "segmentation" in ann:
            seg = ann["segmentation"]
            if isinstance(seg, dict):
                problem = rle_problem(seg, height, width)
                if problem:
                    return self.problem(ann, index, "segmentation", problem)
                counts = seg["counts"]
                clean["segmentation"] = dict(seg, size=[height, width], counts=(
                    counts.decode("ascii") if isinstance(counts, bytes) else
                    counts if isinstance(counts, str) else [int(c) for c in counts]))
            elif isinstance(seg, list):
                parts = []
                for part in seg:
                    problem = polygon_problem(part, height, width)
                    if problem:
                        return self.problem(ann, index, "segmentation", problem)
                    if len(part) < 6:
                        self.report.small_parts += 1
                        continue
                    parts.append([float(v) for v in part])
                clean["segmentation"] = parts
            else:
                return self.problem(ann, index, "segmentation", "segmentation must be a polygon list or an "
                                                                f"RLE dict, got {type(seg).__name__}")
        if "keypoints" in ann:
            names = self.categories[clean["category_id"]].get("keypoints")
            k = len(names) if names else self.num_keypoints
            problem = keypoints_problem(ann["keypoints"], k)
            if problem:
                return self.problem(ann, index, "keypoints", problem)
            clean["keypoints"] = [float(v) for v in ann["keypoints"]]
            if "num_keypoints" in ann and (not is_int(ann["num_keypoints"]) or not 0 <= ann["num_keypoints"] <= k):
                return self.problem(ann, index, "num_keypoints", f"num_keypoints must be an integer in [0, {k}]")
        return clean


def validate_coco(data, source: str = "dataset", on_error: str = "raise", kind: str | None = None,
                  num_keypoints: int = 17) -> tuple[dict, ValidationReport]:
    """Check a COCO dataset dict (see the module doc) -> ``(clean copy, ValidationReport)``.

    kind: ``"instances"`` (boxes / masks / keypoints: ``categories`` required), ``"captions"``
    (``caption`` per annotation), or None: captions when the first annotation has a caption and
    no bbox. source: the file (or a description) named in every message.
    """
    check_on_error(on_error)
    if kind is not None and kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS} or None, got {kind!r}")
    source = os.fspath(source)
    if not isinstance(data, dict):
        raise CocoFormatError(f"{source}: a COCO file must hold a JSON object at the top level, got "
                              f"{type(data).__name__}")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise CocoFormatError(f"{source}: missing the '{key}' list")
    anns = data["annotations"]
    if kind is None:
        first = anns[0] if anns else {}
        kind = "captions" if isinstance(first, dict) and "caption" in first and "bbox" not in first else "instances"
    if kind == "instances" and not isinstance(data.get("categories"), list):
        raise CocoFormatError(f"{source}: missing the 'categories' list")
    if "categories" in data and not isinstance(data["categories"], list):
        raise CocoFormatError(f"{source}: 'categories' must be a list")
    images = _check_images(data, source)
    categories = _check_categories(data, source)
    report = ValidationReport(source)
    checker = _Annotations(source, on_error, images, categories, num_keypoints, report)
    clean_anns = [c for i, a in enumerate(anns) if (c := checker.check(a, i, kind)) is not None]
    if report.skipped:
        logger.warning("%s: skipped %d malformed annotation(s)", source, report.skipped)
    clean = {k: v for k, v in data.items() if k not in ("images", "annotations", "categories")}
    clean["images"] = list(images.values())
    if "categories" in data:
        clean["categories"] = list(categories.values())
    clean["annotations"] = clean_anns
    return clean, report


# ---- results --------------------------------------------------------------------------------
RESULT_FIELD = {"bbox": "bbox", "segm": "segmentation", "keypoints": "keypoints"}


def validate_results(results, ground_truth: dict, iou_type: str, source: str = "predictions") -> list[dict]:
    """COCO result dicts -> validated copies holding ``image_id``, ``category_id``, ``score`` and the
    field of ``iou_type`` (results without that field are left out). ``ground_truth`` is a clean
    dataset from ``validate_coco``. Raises ``ValueError`` naming ``{source}[i]`` and the field.
    Polygon results are checked, then converted to RLE here."""
    if iou_type not in RESULT_FIELD:
        raise ValueError(f"iou_type must be one of {tuple(RESULT_FIELD)}, got {iou_type!r}")
    if not isinstance(results, (list, tuple)):
        raise ValueError(f"{source} must be a list of COCO result dicts, got {type(results).__name__}")
    images = {im["id"]: (im["height"], im["width"]) for im in ground_truth["images"]}
    categories = {c["id"]: c for c in ground_truth.get("categories", [])}
    field_name = RESULT_FIELD[iou_type]
    out = []
    for i, p in enumerate(results):
        where = f"{source}[{i}]"
        if not isinstance(p, dict):
            raise ValueError(f"{where} must be a dict, got {type(p).__name__}")
        if field_name not in p:
            continue
        for key in ("image_id", "category_id", "score"):
            if key not in p:
                raise ValueError(f"{where} has no '{key}'")
        if not is_int(p["image_id"]) or int(p["image_id"]) not in images:
            raise ValueError(f"{where}: field 'image_id': image_id {p['image_id']!r} is not in the ground truth")
        if not is_int(p["category_id"]) or int(p["category_id"]) not in categories:
            raise ValueError(f"{where}: field 'category_id': category_id {p['category_id']!r} is not in the "
                             "ground truth")
        score = p["score"]
        if not is_number(score) or not math.isfinite(float(score)):
            raise ValueError(f"{where}: field 'score': score must be a finite number, got {score!r}")
        image_id, category_id = int(p["image_id"]), int(p["category_id"])
        h, w = images[image_id]
        q = {"image_id": image_id, "category_id": category_id, "score": float(score)}
        value = p[field_name]
        if field_name == "bbox":
            problem = bbox_problem(value)
            if problem:
                raise ValueError(f"{where}: field 'bbox': bbox {problem}")
            q["bbox"] = [float(v) for v in value]
        elif field_name == "keypoints":
            names = categories[category_id].get("keypoints") or []
            vals = _floats(value)
            want = f"{3 * len(names)}" if names else "3 * K"
            if (vals is None or not vals or len(vals) % 3 or (names and len(vals) != 3 * len(names))
                    or not _all_finite(vals)):
                raise ValueError(f"{where}: field 'keypoints': keypoints must be a flat list of {want} finite "
                                 "numbers (x y v triplets)")
            q["keypoints"] = vals
        else:
            q["segmentation"] = _result_rle(value, h, w, where)
        out.append(q)
    return out


def _result_rle(value, h, w, where) -> dict:
    from pycocotools import mask as mask_utils  # noqa: PLC0415

    if isinstance(value, list):
        if not value:
            raise ValueError(f"{where}: segmentation: polygon segmentation needs parts of >= 3 x y points")
        for part in value:
            problem = polygon_problem(part, h, w)
            if problem is None and len(part) < 6:
                problem = "polygon segmentation needs parts of >= 3 x y points"
            if problem:
                raise ValueError(f"{where}: segmentation: {problem}")
        value = mask_utils.merge(mask_utils.frPyObjects([[float(v) for v in part] for part in value], h, w))
    problem = rle_problem(value, h, w)
    if problem:
        raise ValueError(f"{where}: segmentation must be an RLE of size [{h}, {w}] or polygons: {problem}")
    counts = value["counts"]
    if isinstance(counts, (list, tuple)):
        value = mask_utils.frPyObjects({"size": [h, w], "counts": [int(c) for c in counts]}, h, w)
        counts = value["counts"]
    return {"size": [h, w], "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}
