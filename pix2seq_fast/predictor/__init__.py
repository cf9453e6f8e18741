"""The four-task predictor: images in, typed results out (SPEC §4).

``predict(model, images, task)`` runs one of ``detect``, ``segment``, ``keypoints``, ``caption`` on a
:class:`pix2seq_fast.Pix2Seq` model and returns one result per image (or a single result when
``images`` is one image): :class:`~pix2seq_fast.results.Detections`,
:class:`~pix2seq_fast.results.InstanceMasks`, :class:`~pix2seq_fast.results.Keypoints`,
:class:`~pix2seq_fast.results.Caption`. One module per task holds its pipeline.
"""
from __future__ import annotations

from dataclasses import fields

from pix2seq_fast.predictor.caption import CaptionOptions, caption_batch
from pix2seq_fast.predictor.detect import DetectOptions, detect_batch
from pix2seq_fast.predictor.keypoints import KeypointOptions, keypoints_batch
from pix2seq_fast.predictor.options import DecodeOptions
from pix2seq_fast.predictor.segment import SegmentOptions, segment_batch, segment_crops
from pix2seq_fast.vocab import TASKS

__all__ = ["predict", "DecodeOptions", "DetectOptions", "SegmentOptions", "KeypointOptions",
           "CaptionOptions", "TASKS"]

_TASK_OPTIONS = {
    "detect": (DetectOptions,),
    "segment": (DetectOptions, SegmentOptions),
    "keypoints": (DetectOptions, KeypointOptions),
    "caption": (CaptionOptions,),
}


def predict(model, images, task: str = "detect", *, batch_size: int = 8, progress: bool = False,
            device=None, top_p: float | None = None, top_k: int = 0, temperature: float = 1.0,
            rule: str = "pix2seq", greedy: bool = False, seed: int | None = None,
            sampling_backend: str = "auto", attention_backend: str = "auto", constrained: bool = False,
            boxes=None, labels=None, scores=None, **task_options):
    """Run ``task`` on ``images`` with ``model``.

    images: one image or a list (file paths, numpy ``uint8`` HWC gray / RGB / RGBA, PIL images,
        ``[3, H, W]`` tensors, or a ``[B, 3, H, W]`` tensor); sizes may differ.
    task: ``"detect" | "segment" | "keypoints" | "caption"``.
    batch_size: images encoded and decoded together. progress: a tqdm bar over images.
    device: move the model there first (default: where the model is).
    Decoding (:class:`DecodeOptions`): top_p (default per task: 0.4 / 0.8 / 0.1 / 1.0), top_k,
        temperature, rule (``"pix2seq"`` | ``"standard"``), greedy, seed, sampling_backend,
        attention_backend, constrained (sample only what the task's grammar allows at each position;
        off by default).
    boxes / labels / scores (segment, keypoints): instances given by the caller instead of the
        model's detection pass: per image ``[n_i, 4]`` pixel ``xyxy`` boxes, ``[n_i]`` category ids
        (keypoints default: the person category), ``[n_i]`` scores (default 1.0). A single-image call
        may pass bare arrays.
    task_options: the fields of the task's option classes —
        detect: :class:`DetectOptions` (``max_objects=100, early_stop=False, score_threshold=0.0,
        max_detections=100, categories=None``);
        segment: DetectOptions for its detection pass + :class:`SegmentOptions`
        (``num_samples=8, max_points=128, vote_threshold=0.5, max_sequences=800, crop=None,
        crop_padding=0.5, max_crops=64``; ``crop=True`` encodes each instance's crop of about
        twice its box, given or detected, instead of the whole image; ``None`` does what the model
        was trained for, ``model.config.segment_crop``);
        keypoints: DetectOptions + :class:`KeypointOptions` (``person_category=1,
        crop_padding=0.5, max_crops=64``);
        caption: :class:`CaptionOptions` (``max_length=128``).

    Returns one result per image, in order (a single result for a single image).
    Raises ``ValueError`` for an unknown task or option, an empty batch, a bad image, a category id
    the vocabulary has no class token for (``labels``, ``categories``, ``person_category``), a model
    whose weights or image encodings are not finite (NaN / inf), or non-finite scores.
    """
    if task not in _TASK_OPTIONS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    option_sets = _split_options(task, task_options)
    seg = option_sets.get(SegmentOptions)
    if seg is not None and seg.crop is None:   # segment the way the model was trained
        option_sets[SegmentOptions] = _replace(seg, crop=bool(getattr(getattr(model, "config", None), "segment_crop", False)))
    if (boxes is not None or labels is not None or scores is not None) and task not in ("segment",
                                                                                        "keypoints"):
        raise ValueError(f"boxes / labels / scores are inputs of 'segment' and 'keypoints', not {task!r}")
    if boxes is None and (labels is not None or scores is not None):
        raise ValueError("labels / scores were given without boxes")

    from pix2seq_fast.predictor import engine  # noqa: PLC0415
    from pix2seq_fast.predictor.boxes import split_per_image  # noqa: PLC0415
    from pix2seq_fast.predictor.inputs import as_image_list  # noqa: PLC0415

    items, single = as_image_list(images)
    decode = DecodeOptions(top_p=top_p, top_k=top_k, temperature=temperature, rule=rule,
                           greedy=greedy, seed=seed, sampling_backend=sampling_backend,
                           attention_backend=attention_backend, constrained=bool(constrained))
    given = None
    if boxes is not None:
        given = (split_per_image(boxes, "boxes", len(items), single, 2),
                 split_per_image(labels, "labels", len(items), single, 1),
                 split_per_image(scores, "scores", len(items), single, 1))
    _check_categories(model, option_sets, given)
    if device is not None:
        model.to(device)
    model.eval()
    _check_finite_weights(model)
    generator = decode.generator(engine.model_device(model))

    results = []
    bar = _progress(len(items), task) if progress else None
    for lo in range(0, len(items), int(batch_size)):
        hi = min(lo + int(batch_size), len(items))
        chunk_given = None if given is None else tuple(
            None if g is None else g[lo:hi] for g in given)
        results.extend(_run_chunk(model, items[lo:hi], task, decode, option_sets, chunk_given,
                                  generator))
        if bar is not None:
            bar.update(hi - lo)
    if bar is not None:
        bar.close()
    return results[0] if single else results


def _run_chunk(model, items, task, decode, option_sets, given, generator):
    from pix2seq_fast.predictor import engine  # noqa: PLC0415
    from pix2seq_fast.predictor.boxes import caller_boxes  # noqa: PLC0415
    from pix2seq_fast.predictor.inputs import load_images, to_canvas  # noqa: PLC0415

    images, _ = load_images(items)
    device = engine.model_device(model)
    encode = lambda pixels: _finite_encoding(engine.encode(model, pixels))  # noqa: E731
    sizes = [(int(img.shape[1]), int(img.shape[2])) for img in images]
    if task == "keypoints":
        kp = option_sets[KeypointOptions]
        if given is not None:
            persons = caller_boxes(*given, sizes, default_label=kp.person_category)
        else:
            batch = to_canvas(images, engine.model_canvas(model), device)
            memory = encode(batch.pixels)
            det = _replace(option_sets[DetectOptions], categories=(int(kp.person_category),))
            persons = detect_batch(model, batch, memory, decode, det, generator)
        return keypoints_batch(model, images, persons, decode, kp, generator)

    seg = option_sets.get(SegmentOptions)
    if task == "segment" and seg.crop:
        if given is not None:       # no whole-image encoding needed: only the crops are encoded
            instances = caller_boxes(*given, sizes)
        else:
            batch = to_canvas(images, engine.model_canvas(model), device)
            instances = detect_batch(model, batch, encode(batch.pixels), decode,
                                     option_sets[DetectOptions], generator)
        return segment_crops(model, images, instances, decode, seg, generator, encode=encode)

    batch = to_canvas(images, engine.model_canvas(model), device)
    memory = encode(batch.pixels)
    if task == "detect":
        return detect_batch(model, batch, memory, decode, option_sets[DetectOptions], generator)
    if task == "caption":
        return caption_batch(model, batch, memory, decode, option_sets[CaptionOptions], generator)
    instances = (caller_boxes(*given, sizes) if given is not None else
                 detect_batch(model, batch, memory, decode, option_sets[DetectOptions], generator))
    return segment_batch(model, batch, memory, instances, decode, seg, generator)


def _check_categories(model, option_sets, given) -> None:
    """Every category id the caller names must have a class token: ``0 <= id < vocab.num_classes``."""
    import numpy as np  # noqa: PLC0415

    from pix2seq_fast.predictor import engine  # noqa: PLC0415

    num_classes = engine.model_vocab(model).num_classes

    def check(ids, name):
        arr = np.asarray(ids).reshape(-1)
        if arr.size and (not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() >= num_classes):
            bad = [v for v in arr.tolist() if not (isinstance(v, int) and 0 <= v < num_classes)]
            raise ValueError(f"{name}: category ids must be integers in [0, {num_classes}) (the model's class "
                             f"tokens), got {bad[:5]}")

    detect = option_sets.get(DetectOptions)
    if detect is not None and detect.categories is not None:
        check(list(detect.categories), "categories")
    kp = option_sets.get(KeypointOptions)
    if kp is not None:
        check([kp.person_category], "person_category")
    if given is not None and given[1] is not None:
        for i, labels in enumerate(given[1]):
            check(labels if np.size(labels) else np.zeros(0, np.int64), f"labels[{i}]")


def _check_finite_weights(model) -> None:
    """A model with NaN / inf weights would return empty or NaN results without complaint. One sum
    per tensor (a NaN or inf makes it non-finite), skipped while no weight changed since the last
    check (the tensors' version counters)."""
    import torch  # noqa: PLC0415

    named = [(n, t) for n, t in list(model.named_parameters()) + list(model.named_buffers())
             if t.is_floating_point()]
    key = tuple((id(t), t._version) for _, t in named)
    if getattr(model, "_p2s_finite_weights", None) == key:
        return
    with torch.no_grad():
        sums = [torch.sum(t, dtype=torch.float32) for _, t in named]
        if sums and not bool(torch.isfinite(torch.stack(sums)).all()):
            names = [n for n, t in named if not bool(torch.isfinite(t).all())]
            if names:
                raise ValueError(f"model weights are not finite (NaN or inf in {names[:5]}); predictions "
                                 "would be meaningless")
    model._p2s_finite_weights = key


def _finite_encoding(memory):
    """``memory [B, N, D]`` unchanged, or ``ValueError`` when the encoder produced NaN / inf."""
    import torch  # noqa: PLC0415

    if not bool(torch.isfinite(memory).all()):
        raise ValueError("the model's image encodings are not finite (NaN or inf); check the weights and "
                         "the input images")
    return memory


def task_option_names(task: str) -> set[str]:
    """Names of the ``task_options`` that ``predict`` accepts for ``task``."""
    if task not in _TASK_OPTIONS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return {f.name for cls in _TASK_OPTIONS[task] for f in fields(cls)}


def _split_options(task: str, task_options: dict) -> dict:
    """``task_options`` -> {option class: instance}; unknown names raise ``ValueError``."""
    classes = _TASK_OPTIONS[task]
    names = {cls: {f.name for f in fields(cls)} for cls in classes}
    unknown = set(task_options) - set().union(*names.values())
    if unknown:
        valid = sorted(set().union(*names.values()))
        raise ValueError(f"unknown option(s) {sorted(unknown)} for task {task!r}; valid: {valid}")
    return {cls: cls(**{k: v for k, v in task_options.items() if k in names[cls]}) for cls in classes}


def _replace(options, **changes):
    from dataclasses import replace  # noqa: PLC0415

    return replace(options, **changes)


def _progress(total: int, task: str):
    from tqdm.auto import tqdm  # noqa: PLC0415

    return tqdm(total=total, desc=f"pix2seq-fast {task}", unit="image")
