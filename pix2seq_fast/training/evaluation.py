"""Evaluation during and after training, through the predictor's own path
(``pix2seq_fast.predictor.coco_run.evaluate_model``): box / mask / keypoint AP and BLEU-4 / CIDEr on
the val split, plus one PNG per task of predictions on the first few val images."""
from __future__ import annotations

import dataclasses
import json
import time
import warnings
from pathlib import Path

import numpy as np

from pix2seq_fast.training.config import TASK_NAMES, TrainConfig

# summary name -> (task, metric) in evaluate's metrics; "<task>_given_boxes" starts from the true boxes
SUMMARY = {"box_AP": ("detect", "AP"), "mask_AP": ("segment", "AP"), "keypoint_AP": ("keypoints", "AP"),
           "BLEU-4": ("caption", "BLEU-4"), "CIDEr": ("caption", "CIDEr"),
           "mask_AP_given_boxes": ("segment_given_boxes", "AP"),
           "keypoint_AP_given_boxes": ("keypoints_given_boxes", "AP")}
GIVEN_BOX_TASKS = ("segment", "keypoints")


def predictor_options(cfg: TrainConfig, task: str) -> tuple[dict, dict]:
    """``(decode options, task options)`` of ``predict`` for ``task``. Task options follow the
    trained sequence formats (``max_objects``, ``max_points``, caption ``max_length``); then
    ``eval_options`` applies: its plain entries to every task, its ``{task: {...}}`` entries to that
    task (e.g. ``{"num_samples": 4, "caption": {"greedy": True}}``). Decoding is seeded with
    ``cfg.seed`` unless ``seed`` is given. Segmentation crops to each instance when the model was
    trained that way (``ModelConfig.segment_crop``) unless ``eval_options`` says otherwise."""
    from pix2seq_fast.predictor import DecodeOptions, task_option_names  # noqa: PLC0415

    decode_names = {f.name for f in dataclasses.fields(DecodeOptions)}
    accepted = task_option_names(task)
    every = set().union(*(task_option_names(t) for t in TASK_NAMES))
    task_opts = {"max_objects": cfg.codec_config("detect").max_objects,
                 "max_points": cfg.codec_config("segment").max_points,
                 "max_length": cfg.codec_config("caption").max_tokens}
    decode_opts = {"seed": cfg.seed}
    settings = {k: v for k, v in cfg.eval_options.items() if k not in TASK_NAMES}
    for name in TASK_NAMES:
        if name in cfg.eval_options and not isinstance(cfg.eval_options[name], dict):
            raise ValueError(f"eval_options[{name!r}] must be a dict of options for that task")
    settings.update(cfg.eval_options.get(task, {}))
    for key, value in settings.items():
        if key in decode_names:
            decode_opts[key] = value
        elif key in every:
            task_opts[key] = value
        else:
            raise ValueError(f"eval_options has unknown option {key!r}; valid: {sorted(decode_names | every)}")
    return decode_opts, {k: v for k, v in task_opts.items() if k in accepted}


def summarize(metrics: dict) -> dict:
    """``{task: {metric: v}}`` -> ``{"box_AP", "mask_AP", "keypoint_AP", "BLEU-4", "CIDEr"}`` (the
    ones evaluated)."""
    return {name: float(metrics[task][key]) for name, (task, key) in SUMMARY.items()
            if task in metrics and key in metrics[task]}


def evaluable_tasks(cfg: TrainConfig) -> tuple[list[str], dict]:
    """Tasks whose ground truth has at least one annotation among the evaluated val images (COCO
    evaluation is undefined without), and ``{task: reason}`` for the others."""
    from pix2seq_fast.predictor.coco_run import annotation_file  # noqa: PLC0415

    keep, skipped = [], {}
    for task in cfg.tasks:
        path = annotation_file(cfg.data_dir, task, cfg.val_split)
        if not path.is_file():
            skipped[task] = f"no {path.name}"
            continue
        dataset = json.loads(path.read_text())
        ids = {im["id"] for im in sorted(dataset["images"], key=lambda im: im["id"])[:cfg.eval_images or None]}
        if not any(a["image_id"] in ids and not a.get("iscrowd", 0) for a in dataset["annotations"]):
            skipped[task] = f"no annotation in the first {len(ids)} {cfg.val_split} images"
            continue
        keep.append(task)
    return keep, skipped


def evaluate(model, cfg: TrainConfig, progress: bool = False) -> dict:
    """Score ``model`` on ``cfg.val_split`` (first ``eval_images`` images); segmentation and keypoints
    also from the ground-truth boxes (``metrics["segment_given_boxes"]`` ...), which measures them
    apart from detection. Returns ``{"metrics": {task: {...}}, "summary": {...}, "skipped": {task:
    reason}, "eval_s": seconds}``; leaves the model in eval mode."""
    from pix2seq_fast.predictor.coco_run import evaluate_model  # noqa: PLC0415

    tasks, skipped = evaluable_tasks(cfg)
    for task, reason in skipped.items():
        warnings.warn(f"not evaluating {task!r}: {reason}", stacklevel=2)
    start = time.perf_counter()
    metrics = {}
    for task in tasks:
        decode_opts, task_opts = predictor_options(cfg, task)
        for given in (False, True) if task in GIVEN_BOX_TASKS else (False,):
            result = evaluate_model(model, cfg.data_dir, cfg.val_split, tasks=[task],
                                    max_images=cfg.eval_images or None, batch_size=cfg.eval_batch_size,
                                    progress=progress, task_options=task_opts, given_boxes=given,
                                    **decode_opts)[task]
            metrics[f"{task}_given_boxes" if given else task] = result
    return {"metrics": metrics, "summary": summarize(metrics), "skipped": skipped,
            "eval_s": round(time.perf_counter() - start, 2)}


def draw_predictions(model, cfg: TrainConfig, out_path_prefix) -> list[Path]:
    """One PNG per task, ``{prefix}_{task}.png``: the first ``vis_images`` val images side by side
    with the model's predictions drawn on them (scores >= 0.3 for boxes and instances)."""
    from pix2seq_fast.predictor import predict  # noqa: PLC0415
    from pix2seq_fast.predictor.coco_run import annotation_file, find_image_dir, image_files, load_split  # noqa: PLC0415
    from pix2seq_fast.visualize import draw, save_png  # noqa: PLC0415

    if cfg.vis_images < 1:
        return []
    image_dir = find_image_dir(cfg.data_dir, cfg.val_split)
    written = []
    for task in cfg.tasks:
        path = annotation_file(cfg.data_dir, task, cfg.val_split)
        dataset = load_split(path, task)
        names = {int(c["id"]): c["name"] for c in dataset.get("categories", [])} or None
        infos = sorted(dataset["images"], key=lambda im: im["id"])[:cfg.vis_images]
        files = image_files({"images": infos}, image_dir, source=str(path))
        decode_opts, task_opts = predictor_options(cfg, task)
        results = predict(model, files, task, batch_size=cfg.eval_batch_size, **decode_opts, **task_opts)
        panels = [draw(f, r, category_names=names, score_threshold=0.3) for f, r in zip(files, results)]
        path = Path(f"{out_path_prefix}_{task}.png")
        save_png(path, tile(panels))
        written.append(path)
    return written


def tile(panels: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """``[H_i, W_i, 3]`` uint8 images side by side on a white strip (top-aligned)."""
    height = max(p.shape[0] for p in panels)
    width = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    out = np.full((height, width, 3), 255, dtype=np.uint8)
    x = 0
    for p in panels:
        out[:p.shape[0], x:x + p.shape[1]] = p
        x += p.shape[1] + gap
    return out


def format_table(summary: dict, wall_s: float | None = None) -> str:
    """The final table: box AP, mask AP, keypoint AP, BLEU-4, CIDEr (and the wall time)."""
    rows = [(name, f"{summary[name]:.4f}") for name in SUMMARY if name in summary]
    if wall_s is not None:
        rows.append(("wall time", f"{wall_s / 60:.1f} min ({wall_s:.0f} s)"))
    width = max(len(r[0]) for r in rows)
    line = "-" * (width + 22)
    return "\n".join([line] + [f"{k:<{width}}  {v}" for k, v in rows] + [line])
