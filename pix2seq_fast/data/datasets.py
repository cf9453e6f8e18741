"""Per-task datasets and their collation.

Every example is ``dict(image [3, S, S] float32 in [0, 1], input [L] int64, target [L] int64,
weight [L] float32, task, image_id, epoch, index, scale, offset, size, ...)``; ``scale``/``offset``
map canvas pixels back to the original image (``original = canvas / scale + offset``).

Sampling units: detection samples images; segmentation samples (non-crowd) instances with a
polygon; keypoints samples the non-crowd instances of the keypoint category, labelled points or
not (one person and its crop per example); captioning samples image–caption pairs.

Randomness is per example: the generator is ``default_rng([seed, epoch, index, attempt])``, so an
example is the same whichever worker or rank builds it, and a different one every epoch. An index
is either an ``int`` (uses :meth:`TaskDataset.set_epoch`) or an ``(epoch, index)`` pair (what
:class:`~pix2seq_fast.data.mixing.ShardedSampler` yields, so persistent workers see new epochs).
"""
from __future__ import annotations

import abc
import logging
import os

import numpy as np
import torch

from pix2seq_fast.data.augment import AugmentConfig, augment, task_augment_config
from pix2seq_fast.data.coco import CocoCaptions, CocoInstances, ImageReadError, Instances
from pix2seq_fast.tasks import (CaptionConfig, DetectionConfig, KeypointsConfig, SegmentationConfig,
                                corrupt_keypoint_inputs, encode_caption, encode_detection, encode_keypoints,
                                encode_segmentation)
from pix2seq_fast.vocab import Vocab

logger = logging.getLogger(__name__)


class TaskDataset(torch.utils.data.Dataset, abc.ABC):
    """Common machinery: epochs, per-example generators, retries on unreadable images."""

    task = ""

    def __init__(self, vocab: Vocab, canvas: int, train: bool = True, augment_cfg: AugmentConfig | None = None,
                 seed: int = 0, on_error: str = "raise", max_attempts: int = 10):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.vocab, self.canvas, self.train = vocab, int(canvas), bool(train)
        self.augment_cfg = augment_cfg or task_augment_config(self.task, canvas, train)
        if self.augment_cfg.canvas != self.canvas:
            raise ValueError(f"augment_cfg.canvas {self.augment_cfg.canvas} != canvas {canvas}")
        self.seed, self.on_error, self.max_attempts = int(seed), on_error, int(max_attempts)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def rng(self, epoch: int, index: int, attempt: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, index, attempt])

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of examples (images, instances or image-caption pairs)."""

    @abc.abstractmethod
    def _example(self, index: int, rng: np.random.Generator, attempt: int) -> dict | None:
        """Build one example; ``None`` asks for another attempt (e.g. the instance was cropped away)."""

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} examples")
        index = index % n
        current = index
        for attempt in range(self.max_attempts):
            rng = self.rng(epoch, index, attempt)
            try:
                example = self._example(current, rng, attempt)
            except ImageReadError as e:
                if self.on_error == "raise":
                    raise
                logger.warning("skipping unreadable image (%s); using another example", e)
                current = int(rng.integers(n))
                continue
            if example is not None:
                example.update(task=self.task, epoch=epoch, index=index)
                return example
        raise RuntimeError(f"{type(self).__name__}: no usable example after {self.max_attempts} attempts "
                           f"from index {index}")

    def _finish(self, aug, seq, image_id, **extra) -> dict:
        return dict(image=torch.from_numpy(np.ascontiguousarray(aug.image.transpose(2, 0, 1))),
                    input=torch.from_numpy(seq.input), target=torch.from_numpy(seq.target),
                    weight=torch.from_numpy(seq.weight), image_id=int(image_id), scale=tuple(aug.scale),
                    offset=tuple(float(v) for v in aug.offset), size=tuple(aug.size), flipped=aug.flipped, **extra)


class DetectionDataset(TaskDataset):
    """One example per image: all non-crowd boxes -> ``encode_detection``."""

    task = "detect"

    def __init__(self, source: CocoInstances, vocab: Vocab, canvas: int, train: bool = True,
                 cfg: DetectionConfig | None = None, **kwargs):
        super().__init__(vocab, canvas, train, **kwargs)
        self.source, self.cfg = source, cfg or DetectionConfig()

    def __len__(self):
        return len(self.source.image_ids)

    def _example(self, index, rng, attempt):
        image_id = self.source.image_ids[index]
        aug = augment(self.source.load_image(image_id), self.source.instances(image_id), rng, self.augment_cfg,
                      with_polygons=False)
        inst = aug.instances
        seq = encode_detection(inst.boxes, inst.labels, rng, self.vocab, self.cfg)
        return self._finish(aug, seq, image_id, num_objects=len(inst))


class _InstanceDataset(TaskDataset):
    require: tuple = ()

    def __init__(self, source: CocoInstances, vocab: Vocab, canvas: int, train: bool = True, cfg=None, **kwargs):
        super().__init__(vocab, canvas, train, **kwargs)
        self.source, self.cfg = source, cfg
        self.index = source.instance_index(require=self.require)

    def __len__(self):
        return len(self.index)

    def _augment_focus(self, index, rng, attempt):
        image_id, pos = self.index[index]
        cfg = self.augment_cfg
        if attempt == self.max_attempts - 1:  # last try: no jitter, so the instance cannot be cropped away
            cfg = task_augment_config(self.task, self.canvas, train=False)
        inst = self.source.instances(image_id)
        aug = augment(self.source.load_image(image_id), inst, rng, cfg, focus=pos,
                      with_polygons=self.task == "segment")
        return image_id, int(inst.ann_ids[pos]), aug


class SegmentationDataset(_InstanceDataset):
    """One example per instance with a polygon -> ``encode_segmentation``."""

    task = "segment"
    require = ("polygons",)

    def __init__(self, source, vocab, canvas, train=True, cfg: SegmentationConfig | None = None, **kwargs):
        super().__init__(source, vocab, canvas, train, cfg or SegmentationConfig(), **kwargs)

    def _example(self, index, rng, attempt):
        image_id, ann_id, aug = self._augment_focus(index, rng, attempt)
        if aug.focus is None or not aug.instances.polygons[aug.focus]:
            return None
        i = aug.focus
        seq = encode_segmentation(aug.instances.boxes[i], int(aug.instances.labels[i]), aug.instances.polygons[i],
                                  rng, self.vocab, self.cfg)
        return self._finish(aug, seq, image_id, ann_id=ann_id)


class KeypointDataset(_InstanceDataset):
    """One example per non-crowd instance of the keypoint category (the COCO category that carries
    ``keypoints``; persons), labelled points or not — an all-unlabelled person trains on 17
    INVISIBLE pairs, as the authors' do. Crop about 2× the box -> ``encode_keypoints``."""

    task = "keypoints"
    require = ()

    def __init__(self, source, vocab, canvas, train=True, cfg: KeypointsConfig | None = None, **kwargs):
        super().__init__(source, vocab, canvas, train, cfg or KeypointsConfig(), **kwargs)
        categories = {int(c) for c, info in source.categories.items() if info.get("keypoints")}
        if not categories:
            raise ValueError(f"{source.annotation_file}: no category carries 'keypoints'; the keypoint "
                             "task needs a person_keypoints file")
        labels = {image_id: source.instances(image_id).labels for image_id in {i for i, _ in self.index}}
        self.index = [(image_id, pos) for image_id, pos in self.index if int(labels[image_id][pos]) in categories]

    def _example(self, index, rng, attempt):
        image_id, ann_id, aug = self._augment_focus(index, rng, attempt)
        if aug.focus is None:
            return None
        i = aug.focus
        seq = encode_keypoints(aug.instances.boxes[i], int(aug.instances.labels[i]), aug.instances.keypoints[i],
                               rng, self.vocab, self.cfg)
        return self._finish(aug, seq, image_id, ann_id=ann_id)


class CaptionDataset(TaskDataset):
    """One example per image–caption pair -> ``encode_caption(tokenizer.encode(caption))``."""

    task = "caption"

    def __init__(self, source: CocoCaptions, tokenizer, vocab: Vocab, canvas: int, train: bool = True,
                 cfg: CaptionConfig | None = None, **kwargs):
        super().__init__(vocab, canvas, train, **kwargs)
        self.source, self.tokenizer, self.cfg = source, tokenizer, cfg or CaptionConfig()
        if tokenizer.vocab_size > vocab.text_vocab_size:
            raise ValueError(f"tokenizer has {tokenizer.vocab_size} pieces but vocab.text_vocab_size is "
                             f"{vocab.text_vocab_size}")

    def __len__(self):
        return len(self.source.pairs)

    def _example(self, index, rng, attempt):
        image_id, caption, ann_id = self.source.pairs[index]
        aug = augment(self.source.load_image(image_id), Instances.empty(), rng, self.augment_cfg)
        seq = encode_caption(self.tokenizer.encode(caption), rng, self.vocab, self.cfg)
        return self._finish(aug, seq, image_id, ann_id=ann_id, caption=caption)


# ---- collation ---------------------------------------------------------------------------------------
_TENSORS = ("image", "input", "target", "weight")


def collate(examples: list[dict]) -> dict:
    """Stack ``image [B, 3, S, S]``, ``input/target [B, L]`` int64, ``weight [B, L]``; other keys
    become lists. All examples must have the same sequence length (one task)."""
    if not examples:
        raise ValueError("collate needs at least one example")
    lengths = {int(e["input"].shape[0]) for e in examples}
    if len(lengths) != 1:
        raise ValueError(f"examples have different sequence lengths {sorted(lengths)}; use pad_collate")
    batch = {k: torch.stack([e[k] for e in examples]) for k in _TENSORS}
    keys = dict.fromkeys(k for e in examples for k in e if k not in _TENSORS)
    for key in keys:
        batch[key] = [e.get(key) for e in examples]
    return batch


def _batch_rng(seed: int, examples: list[dict]) -> np.random.Generator:
    keys = [seed, 0x6B70]
    for e in examples:
        keys += [int(e["epoch"]), int(e["index"])]
    return np.random.default_rng(keys)


class KeypointCollate:
    """``collate`` + the per-batch INVISIBLE input corruption (``corrupt_keypoint_inputs``); the
    batch generator comes from the examples' (epoch, index) keys, so it is reproducible."""

    def __init__(self, vocab: Vocab, cfg: KeypointsConfig | None = None, seed: int = 0, corrupt: bool = True):
        self.vocab, self.cfg, self.seed = vocab, cfg or KeypointsConfig(), int(seed)
        self.corrupt = bool(corrupt) and self.cfg.corrupt_inputs

    def __call__(self, examples: list[dict]) -> dict:
        batch = collate(examples)
        if self.corrupt:
            batch["input"] = corrupt_keypoint_inputs(batch["input"], _batch_rng(self.seed, examples), self.vocab,
                                                     self.cfg.prompt_length)
        return batch


def pad_collate(examples: list[dict], pad: int = 0) -> dict:
    """Collate examples of different lengths: right-pad ``input``/``target`` with ``pad`` and
    ``weight`` with 0 to the longest ``L``."""
    if not examples:
        raise ValueError("pad_collate needs at least one example")
    length = max(int(e["input"].shape[0]) for e in examples)
    padded = []
    for e in examples:
        extra = length - int(e["input"].shape[0])
        if extra:
            e = dict(e, input=torch.nn.functional.pad(e["input"], (0, extra), value=pad),
                     target=torch.nn.functional.pad(e["target"], (0, extra), value=pad),
                     weight=torch.nn.functional.pad(e["weight"], (0, extra), value=0.0))
        padded.append(e)
    return collate(padded)


def trim_padding(batch: dict, pad: int = 0) -> dict:
    """Drop the sequence columns after the batch's last non-PAD target and the one PAD target that
    ends it: ``input/target/weight [B, L] -> [B, L']``, ``L' = min(L, last + 2)``. Every row keeps
    its end target (its first PAD); the decoder is causal, so the logits at the kept positions are
    exactly those of the full batch. The loss then counts fewer trailing PAD targets (fewer of the
    ``pad_weight`` terms in its normaliser). Other keys are passed through."""
    target = batch["target"]
    real = (target != pad).any(dim=0).nonzero()
    length = min(target.shape[1], int(real.max()) + 2 if real.numel() else 1)
    if length == target.shape[1]:
        return batch
    return dict(batch, **{k: batch[k][:, :length] for k in ("input", "target", "weight")})


def collate_for(task: str, vocab: Vocab, cfg=None, seed: int = 0, train: bool = True):
    """The collate function of ``task`` (keypoints: with per-batch input corruption when training)."""
    if task == "keypoints":
        return KeypointCollate(vocab, cfg, seed, corrupt=train)
    return collate


# ---- construction from a COCO-style directory --------------------------------------------------------
def build_datasets(root, split: str, vocab: Vocab, canvas: int, tokenizer=None,
                   tasks=("detect", "segment", "keypoints", "caption"), train: bool = True, seed: int = 0,
                   configs: dict | None = None, on_error: str = "raise") -> dict:
    """Datasets of ``tasks`` from the synthetic / COCO layout ``root/annotations/{instances,
    person_keypoints,captions}_{split}.json`` + ``root/images/{split}``. ``configs``: per-task codec
    config; ``tokenizer`` is required for ``"caption"``."""
    configs = configs or {}
    cache = {}

    def instances(name):
        if name not in cache:
            cache[name] = CocoInstances(ann(name), images, on_error)
        return cache[name]

    images = os.path.join(root, "images", split)
    ann = lambda name: os.path.join(root, "annotations", f"{name}_{split}.json")  # noqa: E731
    out = {}
    common = dict(train=train, seed=seed, on_error=on_error)
    for task in tasks:
        if task == "detect":
            out[task] = DetectionDataset(instances("instances"), vocab, canvas,
                                         cfg=configs.get(task), **common)
        elif task == "segment":
            out[task] = SegmentationDataset(instances("instances"), vocab, canvas,
                                            cfg=configs.get(task), **common)
        elif task == "keypoints":
            out[task] = KeypointDataset(instances("person_keypoints"), vocab, canvas,
                                        cfg=configs.get(task), **common)
        elif task == "caption":
            if tokenizer is None:
                raise ValueError("tokenizer is required for the caption task")
            out[task] = CaptionDataset(CocoCaptions(ann("captions"), images, on_error), tokenizer, vocab, canvas,
                                       cfg=configs.get(task), **common)
        else:
            raise ValueError(f"unknown task {task!r}; expected detect, segment, keypoints or caption")
    return out
