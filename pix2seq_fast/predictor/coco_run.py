"""Run a model on a COCO-format split and score it: box AP (``detect``), mask AP (``segment``),
keypoint AP (``keypoints``), BLEU / CIDEr-D (``caption``).

Layout of ``data_dir`` (what ``pix2seq-fast make-synthetic`` writes; real COCO fits with
``image_dir``): ``annotations/{instances,person_keypoints,captions}_{split}.json`` and the images
under ``images/{split}/`` (else ``{split}/``, else ``image_dir``).

Every annotation file passes the COCO validator (:mod:`pix2seq_fast.data.validate`) before anything
is predicted, and every image path must lie inside the image folder (``allow_absolute_paths``
lets absolute ``file_name``s through).
"""
from __future__ import annotations

from pathlib import Path

from pix2seq_fast.vocab import TASKS

ANNOTATION_KIND = {"detect": "instances", "segment": "instances", "keypoints": "person_keypoints",
                   "caption": "captions"}
IOU_TYPE = {"detect": "bbox", "segment": "segm", "keypoints": "keypoints"}


def annotation_file(data_dir, task: str, split: str) -> Path:
    return Path(data_dir) / "annotations" / f"{ANNOTATION_KIND[task]}_{split}.json"


def find_image_dir(data_dir, split: str, image_dir=None) -> Path:
    candidates = [Path(image_dir)] if image_dir else [Path(data_dir) / "images" / split,
                                                      Path(data_dir) / split]
    for c in candidates:
        if c.is_dir():
            return c
    raise FileNotFoundError(f"no image directory for split {split!r}: tried "
                            f"{', '.join(str(c) for c in candidates)}")


def load_split(path, task: str, on_error: str = "raise") -> dict:
    """The validated dataset of one annotation file (``CocoFormatError`` naming file, id and field)."""
    from pix2seq_fast.data.validate import read_coco_json, validate_coco  # noqa: PLC0415

    kind = "captions" if task == "caption" else "instances"
    return validate_coco(read_coco_json(path), path, on_error, kind=kind)[0]


def image_files(dataset: dict, image_dir, allow_absolute_paths: bool = False, source="dataset") -> list[str]:
    """The image file of every ``dataset["images"]`` entry, each inside ``image_dir``; a ``file_name``
    with ``..`` or an absolute one raises ``ValueError`` naming the source, the image id and the name."""
    from pix2seq_fast.data.validate import resolve_image_path  # noqa: PLC0415

    out = []
    for im in dataset["images"]:
        try:
            out.append(str(resolve_image_path(image_dir, im["file_name"], allow_absolute=allow_absolute_paths)))
        except ValueError as e:
            raise ValueError(f"{source}: image id {im['id']}: field 'file_name': {e}") from None
    return out


def _check_class_tokens(model, dataset: dict, source) -> None:
    """Every ground-truth category must have a class token, or its AP would silently be 0."""
    vocab = getattr(getattr(model, "config", None), "vocab", None)
    if vocab is None:
        return
    bad = [c["id"] for c in dataset.get("categories", []) if not 0 <= c["id"] < vocab.num_classes]
    if bad:
        raise ValueError(f"{source}: field 'categories': category ids {bad[:5]} have no class token in the "
                         f"model's vocabulary (ids must lie in [0, {vocab.num_classes}))")


def subset(dataset: dict, image_ids: list[int]) -> dict:
    """``dataset`` restricted to ``image_ids`` (so images never run are not counted as misses)."""
    keep = set(image_ids)
    out = dict(dataset)
    out["images"] = [im for im in dataset["images"] if im["id"] in keep]
    out["annotations"] = [a for a in dataset.get("annotations", []) if a["image_id"] in keep]
    return out


def ground_truth_instances(dataset: dict, image_ids: list[int], category: int | None = None) -> dict:
    """``predict``'s ``boxes`` / ``labels`` from the non-crowd annotations of each image (only
    ``category``'s when given): per image ``[n, 4]`` float32 pixel ``xyxy`` and ``[n]`` int64."""
    import numpy as np  # noqa: PLC0415

    per_image = {i: [] for i in image_ids}
    for a in dataset["annotations"]:
        if a["image_id"] in per_image and not a.get("iscrowd", 0) and category in (None, a["category_id"]):
            per_image[a["image_id"]].append(a)
    boxes, labels = [], []
    for i in image_ids:
        anns = per_image[i]
        xywh = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
        boxes.append(np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1))
        labels.append(np.array([a["category_id"] for a in anns], np.int64))
    return {"boxes": boxes, "labels": labels}


def evaluate_model(model, data_dir, split: str = "val", tasks=None, image_dir=None,
                   max_images: int | None = None, batch_size: int = 8, progress: bool = True,
                   task_options: dict | None = None, allow_absolute_paths: bool = False,
                   given_boxes: bool = False, **predict_options) -> dict:
    """Predict every (or the first ``max_images``) image of the split for each task and score it.

    tasks: subset of ``TASKS``; default every task whose annotation file exists (``caption`` only
    when the model has a tokenizer). ``predict_options`` go to every ``predict`` call (decoding
    settings, device); ``task_options`` (e.g. ``max_objects``) go to the tasks that accept them.
    Keypoints use the category of the keypoints file. ``given_boxes``: segmentation and keypoints
    start from the ground-truth boxes of every non-crowd instance (of the keypoint category, for
    keypoints) instead of the model's own detections, which measures those tasks alone.
    Returns ``{task: {metric: value}}``.
    """
    from pix2seq_fast.eval import evaluate, evaluate_captions  # noqa: PLC0415
    from pix2seq_fast.predictor import predict, task_option_names  # noqa: PLC0415

    if tasks is None:
        tasks = [t for t in TASKS if annotation_file(data_dir, t, split).is_file()
                 and (t != "caption" or getattr(model, "tokenizer", None) is not None)]
        if not tasks:
            raise FileNotFoundError(f"no annotation files under {Path(data_dir) / 'annotations'} "
                                    f"for split {split!r}")
    if max_images is not None and (isinstance(max_images, bool) or int(max_images) < 1):
        raise ValueError(f"max_images must be >= 1 (or None for all), got {max_images}")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"tasks must be among {TASKS}, got {unknown}")
    images_root = find_image_dir(data_dir, split, image_dir)

    metrics = {}
    for task in tasks:
        path = annotation_file(data_dir, task, split)
        if not path.is_file():
            raise FileNotFoundError(f"task {task!r} needs {path}")
        dataset = load_split(path, task)
        infos = sorted(dataset["images"], key=lambda im: im["id"])[:max_images]
        ids = [im["id"] for im in infos]
        dataset = subset(dataset, ids)
        files = image_files({"images": infos}, images_root, allow_absolute_paths, source=str(path))
        _check_class_tokens(model, dataset, path)
        accepted = task_option_names(task)
        options = dict(predict_options)
        options.update({k: v for k, v in (task_options or {}).items() if k in accepted})
        if task == "keypoints":
            person = [c["id"] for c in dataset["categories"] if c.get("keypoints")]
            if person:
                options.setdefault("person_category", person[0])
        if given_boxes and task in ("segment", "keypoints"):
            options.update(ground_truth_instances(dataset, ids, options.get("person_category")
                                                  if task == "keypoints" else None))
        results = predict(model, files, task, batch_size=batch_size, progress=progress, **options)
        preds = [r for res, i in zip(results, ids) for r in res.to_coco(i)]
        if task == "caption":
            refs = {}
            for a in dataset["annotations"]:
                refs.setdefault(a["image_id"], []).append(a["caption"])
            metrics[task] = evaluate_captions({p["image_id"]: p["caption"] for p in preds}, refs,
                                              verbose=False)
            continue
        known = {c["id"] for c in dataset["categories"]}
        preds = [p for p in preds if p["category_id"] in known]
        metrics[task] = evaluate(preds, dataset, iou_types=(IOU_TYPE[task],),
                                 verbose=False)[IOU_TYPE[task]]
    return metrics
