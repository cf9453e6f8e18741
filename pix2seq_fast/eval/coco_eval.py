"""COCO box / mask / keypoint AP with ``COCOeval`` (pycocotools, or faster-coco-eval as an option).

``evaluate(predictions, ground_truth)`` validates the predictions (COCO result format: ``image_id``,
``category_id``, ``score`` and ``bbox`` ``[x, y, w, h]`` / ``segmentation`` (RLE, or polygons that are
converted to RLE) / ``keypoints`` ``[x1, y1, v1, ...]``), runs ``COCOeval`` for each IoU type over
every ground-truth image (images without predictions count as misses), prints the standard tables
and returns ``{iou_type: {"AP": ..., "AP50": ..., ...}}``.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os

import numpy as np

IOU_TYPES = ("bbox", "segm", "keypoints")
BACKENDS = ("pycocotools", "faster_coco_eval")
STAT_NAMES = {
    "bbox": ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"),
    "keypoints": ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"),
}
STAT_NAMES["segm"] = STAT_NAMES["bbox"]
COCO_KEYPOINT_SIGMAS = (.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89)


def _source_of(ground_truth) -> str:
    if isinstance(ground_truth, (str, os.PathLike)):
        return os.fspath(ground_truth)
    return str(getattr(ground_truth, "annotation_file", "ground_truth"))


def _dataset_of(ground_truth, on_error: str) -> dict:
    """The validated COCO dataset of a path, a dict, a pycocotools/faster COCO or a ``CocoInstances``."""
    from pix2seq_fast.data.validate import read_coco_json, validate_coco  # noqa: PLC0415

    if isinstance(ground_truth, (str, os.PathLike)):
        if not os.path.isfile(ground_truth):
            raise ValueError(f"ground_truth file not found: {os.fspath(ground_truth)}")
        return validate_coco(read_coco_json(ground_truth), ground_truth, on_error, kind="instances")[0]
    if isinstance(ground_truth, dict):
        if not isinstance(ground_truth.get("images"), list) or not isinstance(ground_truth.get("annotations"), list):
            raise ValueError("a ground_truth dict must be a COCO dataset with 'images' and 'annotations' lists")
        return validate_coco(ground_truth, "ground_truth", on_error, kind="instances")[0]
    if hasattr(ground_truth, "coco") and hasattr(ground_truth.coco, "dataset"):
        source = getattr(ground_truth, "annotation_file", "ground_truth")
        return validate_coco(ground_truth.coco.dataset, source, on_error, kind="instances")[0]
    if hasattr(ground_truth, "dataset") and isinstance(ground_truth.dataset, dict):
        return validate_coco(ground_truth.dataset, "ground_truth", on_error, kind="instances")[0]
    raise ValueError("ground_truth must be a path, a COCO dataset dict, a COCO object or a CocoInstances, "
                     f"got {type(ground_truth).__name__}")


def _gt_for(dataset: dict, iou_type: str, source: str = "ground_truth") -> dict:
    """Copy of a validated ``dataset`` with the fields COCOeval needs filled in; for keypoints only
    the annotations and categories that carry keypoints; for masks, an instance without a polygon
    or RLE gets an empty mask (it can only be missed)."""
    data = {"images": copy.deepcopy(dataset["images"]), "categories": copy.deepcopy(dataset.get("categories", []))}
    sizes = {img["id"]: (img["height"], img["width"]) for img in data["images"]}
    anns = []
    for ann in dataset["annotations"]:
        if iou_type == "keypoints" and "keypoints" not in ann:
            continue
        ann = copy.deepcopy(ann)
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
        if "keypoints" in ann and "num_keypoints" not in ann:
            ann["num_keypoints"] = int((np.asarray(ann["keypoints"])[2::3] > 0).sum())
        if iou_type == "segm" and not ann.get("segmentation"):
            h, w = sizes[ann["image_id"]]
            ann["segmentation"] = {"size": [h, w], "counts": [h * w]}
        anns.append(ann)
    if iou_type == "keypoints":
        data["categories"] = [c for c in data["categories"] if c.get("keypoints")]
        if not anns or not data["categories"]:
            raise ValueError(f"{source}: ground_truth has no keypoint annotations / categories with 'keypoints'")
        odd = [c["id"] for c in data["categories"] if len(c["keypoints"]) != len(COCO_KEYPOINT_SIGMAS)]
        if odd:
            raise ValueError(f"{source}: ground_truth categories {odd}: COCO keypoint AP needs the "
                             f"{len(COCO_KEYPOINT_SIGMAS)} COCO keypoints (its OKS sigmas), got another number")
    data["annotations"] = anns
    return data


def _backend(name):
    if name == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
        return COCO, COCOeval
    if name == "faster_coco_eval":
        try:
            from faster_coco_eval import COCO, COCOeval_faster
        except ImportError as e:
            raise ValueError("backend='faster_coco_eval' needs `pip install faster-coco-eval`") from e
        return COCO, COCOeval_faster
    raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")


def evaluate(predictions, ground_truth, iou_types=IOU_TYPES, backend: str = "pycocotools",
             verbose: bool = True, on_error: str = "raise") -> dict:
    """COCO AP of ``predictions`` against ``ground_truth``.

    predictions: a list of COCO result dicts (each evaluated for every IoU type whose field it
        has), a path to such a JSON list, or ``{iou_type: list}``.
    ground_truth: a path / dataset dict / COCO object / ``CocoInstances``, or ``{iou_type: that}``
        (e.g. the ``person_keypoints`` file for ``"keypoints"``).
    Returns ``{iou_type: {stat name: value}}`` with the 12 (bbox, segm) or 10 (keypoints) COCO
    stats; with no predictions for a type its stats are 0 (-1 where the ground truth has no
    instance in that area range, as COCOeval reports).

    Both sides pass the COCO validator (:mod:`pix2seq_fast.data.validate`) before pycocotools sees
    them: a malformed prediction raises ``ValueError`` naming ``predictions[i]`` and the field; a
    malformed ground-truth annotation raises (``on_error="raise"``) or is left out
    (``on_error="skip"``), a malformed image or category always raises.
    """
    if isinstance(iou_types, str):
        iou_types = (iou_types,)
    for t in iou_types:
        if t not in IOU_TYPES:
            raise ValueError(f"iou_types must be among {IOU_TYPES}, got {t!r}")
    from pix2seq_fast.data.validate import check_on_error, read_coco_json, validate_results  # noqa: PLC0415

    check_on_error(on_error)
    COCO, COCOeval = _backend(backend)
    source = "predictions"
    if isinstance(predictions, (str, os.PathLike)):
        source = os.fspath(predictions)
        predictions = read_coco_json(predictions)
    if not isinstance(predictions, (list, tuple, dict)):
        raise ValueError(f"{source} must be a list of COCO result dicts or {{iou_type: list}}, got "
                         f"{type(predictions).__name__}")
    results = {}
    for iou_type in iou_types:
        preds = predictions.get(iou_type, []) if isinstance(predictions, dict) else predictions
        if not isinstance(preds, (list, tuple)):
            raise ValueError(f"predictions must be a list of COCO result dicts, got {type(preds).__name__}")
        gt_source = ground_truth
        if isinstance(ground_truth, dict) and "images" not in ground_truth:
            if iou_type not in ground_truth:
                raise ValueError(f"ground_truth has no entry for {iou_type!r} (keys: {sorted(ground_truth)})")
            gt_source = ground_truth[iou_type]
        gt_data = _gt_for(_dataset_of(gt_source, on_error), iou_type, _source_of(gt_source))
        dets = validate_results(preds, gt_data, iou_type, source)
        names = STAT_NAMES[iou_type]
        quiet = contextlib.redirect_stdout(io.StringIO())
        with quiet:
            gt = COCO()
            gt.dataset = gt_data
            gt.createIndex()
        if not dets:
            stats = {n: 0.0 for n in names}
            if verbose:
                print(f"[{iou_type}] no predictions: all stats 0")
            results[iou_type] = stats
            continue
        with quiet:
            dt = gt.loadRes(dets)
        evaluator = COCOeval(gt, dt, iou_type) if backend == "pycocotools" else COCOeval(
            gt, dt, iou_type, print_function=print)
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator.evaluate()
            evaluator.accumulate()
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            evaluator.summarize()
        if verbose:
            print(f"[{iou_type}] ({backend})\n{buffer.getvalue().rstrip()}")
        results[iou_type] = {n: float(v) for n, v in zip(names, evaluator.stats)}
    return results
