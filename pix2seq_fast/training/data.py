"""The trainer's data: the synthetic set when the data directory is empty, the caption tokenizer, the
per-task training datasets (``pix2seq_fast.data``), and a resumable step stream.

The step stream makes the data of optimizer step ``s`` on rank ``r`` a pure function of
``(seed, s, r)``: which examples (keys ``(task, epoch, index)``, from ``ShardedSampler``'s
``(seed, epoch)`` permutations) and how each is augmented (the datasets draw from
``(seed, epoch, index)``). So ``--resume`` at step ``s`` restarts the stream at ``s`` without
replaying earlier batches, and the resumed run sees exactly the batches of an uninterrupted one.

- batch mixing (SPEC §2): every step holds one batch of ``batch_size`` images per task; task ``t``
  walks its own epochs (``epoch = s // steps_per_epoch``), like ``MultiTaskLoader``;
- data mixing: one batch of ``batch_size`` rows per step whose task counts are
  ``Multinomial(batch_size, task_weights)`` drawn from ``(seed, rank, s)``; every task's examples
  continue its own epoch-cycling stream; rows are right-padded to the longest sequence;
- ``repeat_augment = R`` (Pix2seq v1): every sampled example appears ``R`` times in its batch, each
  copy augmented anew (epoch key ``epoch * R + copy``).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from pix2seq_fast.data.mixing import TaskKeyedDataset
from pix2seq_fast.training.config import TrainConfig
from pix2seq_fast.training.distributed import DistInfo, barrier

logger = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.model"
_SAMPLER_SEED_STRIDE = 7919  # task k's sampler seed is seed + 7919 k (as MultiTaskLoader)


# ---- data set on disk ------------------------------------------------------------------------------
def split_files(data_dir, split: str) -> dict:
    root = Path(data_dir)
    return {name: root / "annotations" / f"{name}_{split}.json"
            for name in ("instances", "person_keypoints", "captions")}


def ensure_dataset(cfg: TrainConfig, dist: DistInfo) -> bool:
    """Generate the synthetic set into ``cfg.data_dir`` (rank 0; the others wait) when it holds no
    annotations for the train split. Returns whether it was generated."""
    made = False
    missing = not any(p.is_file() for p in split_files(cfg.data_dir, cfg.train_split).values())
    if missing and not cfg.synthetic:
        raise FileNotFoundError(f"data_dir {cfg.data_dir!r} has no annotations/*_{cfg.train_split}.json and "
                                "the config sets no 'synthetic' to generate them")
    if missing and (cfg.train_split, cfg.val_split) != ("train", "val"):
        raise ValueError(f"the synthetic set has splits 'train' and 'val', but the config asks for "
                         f"{cfg.train_split!r} / {cfg.val_split!r}")
    if missing and dist.is_main:
        from pix2seq_fast.data.synthetic import generate_dataset  # noqa: PLC0415

        generate_dataset(cfg.data_dir, **cfg.synthetic)
        made = True
    barrier(dist)
    return made


def load_or_train_tokenizer(cfg: TrainConfig, dist: DistInfo, fallback=None):
    """The caption tokenizer: ``cfg.tokenizer`` if set; else ``fallback`` (e.g. the ``init_from``
    model's); else ``out_dir/tokenizer.model`` from an earlier run; else one trained (rank 0) on the
    train captions with ``cfg.text_vocab_size`` pieces and saved there. ``None`` without captions."""
    from pix2seq_fast.data.coco import CocoCaptions  # noqa: PLC0415
    from pix2seq_fast.text import Tokenizer  # noqa: PLC0415

    if cfg.tokenizer:
        if not Path(cfg.tokenizer).is_file():
            raise FileNotFoundError(f"tokenizer {cfg.tokenizer!r} is not a file")
        return Tokenizer.from_file(cfg.tokenizer)
    if fallback is not None:
        return fallback
    if "caption" not in cfg.tasks:
        return None
    saved = Path(cfg.out_dir) / TOKENIZER_FILE
    if not saved.is_file() and dist.is_main:
        if cfg.text_vocab_size < 4:
            raise ValueError(f"text_vocab_size must be >= 4 to train a tokenizer, got {cfg.text_vocab_size}")
        captions = split_files(cfg.data_dir, cfg.train_split)["captions"]
        if not captions.is_file():
            raise FileNotFoundError(f"the caption task needs {captions} (or set tokenizer=)")
        source = CocoCaptions(captions, Path(cfg.data_dir) / "images" / cfg.train_split)
        tokenizer = Tokenizer.train([text for _, text, _ in source.pairs], cfg.text_vocab_size)
        saved.parent.mkdir(parents=True, exist_ok=True)
        tmp = saved.with_suffix(".tmp")
        tokenizer.save(tmp)
        tmp.replace(saved)
    barrier(dist)
    return Tokenizer.from_file(saved)


def build_train_datasets(cfg: TrainConfig, vocab, canvas: int, tokenizer) -> dict:
    """``{task: TaskDataset}`` of the train split with the config's codec configs and augmentation."""
    from pix2seq_fast.data.augment import task_augment_config  # noqa: PLC0415
    from pix2seq_fast.data.datasets import build_datasets  # noqa: PLC0415

    configs = {t: cfg.codec_config(t) for t in cfg.tasks}
    datasets = build_datasets(cfg.data_dir, cfg.train_split, vocab, canvas, tokenizer=tokenizer,
                              tasks=cfg.tasks, train=True, seed=cfg.seed, configs=configs)
    for task, ds in datasets.items():
        overrides = cfg.augment.get(task, {})
        if overrides:
            ds.augment_cfg = replace(task_augment_config(task, canvas, train=True), **overrides)
        if len(ds) == 0:
            raise ValueError(f"task {task!r} has no training example in {cfg.data_dir} ({cfg.train_split})")
    return datasets


# ---- the resumable step stream ---------------------------------------------------------------------
class _StepCollate:
    """A step's examples -> ``{task: batch}`` (batch mixing) or ``{"mixed": batch}`` (data mixing).
    Each task's rows go through that task's collate (keypoint input corruption included)."""

    def __init__(self, collate_fns: dict, mixed: bool, trim_pad: int | None = None):
        self.collate_fns, self.mixed, self.trim_pad = collate_fns, mixed, trim_pad

    def __call__(self, examples: list[dict]) -> dict:
        from pix2seq_fast.data.datasets import pad_collate, trim_padding  # noqa: PLC0415

        rows: dict[str, list[int]] = {}
        for i, e in enumerate(examples):
            rows.setdefault(e["task"], []).append(i)
        if not self.mixed:
            batches = {t: _tensors(self.collate_fns[t]([examples[i] for i in idx])) for t, idx in rows.items()}
            if self.trim_pad is not None:
                batches = {t: trim_padding(b, self.trim_pad) for t, b in batches.items()}
            return batches
        examples = list(examples)
        for t, idx in rows.items():
            inputs = self.collate_fns[t]([examples[i] for i in idx])["input"]
            for j, i in enumerate(idx):
                examples[i] = dict(examples[i], input=inputs[j])
        batch = _tensors(pad_collate(examples))
        batch["task"] = [e["task"] for e in examples]
        return {"mixed": batch}


def _tensors(batch: dict) -> dict:
    return {k: batch[k] for k in ("image", "input", "target", "weight")}


class StepStream:
    """Keys and batches of every optimizer step on one rank (see the module docstring).

    ``datasets``: ``{task: TaskDataset}``; ``batch_size``: examples per task per step (batch
    mixing; an int or ``{task: int}``) or rows per step (data mixing, an int), before ``repeat``.
    """

    def __init__(self, datasets: dict, batch_size, task_weights: dict, mode: str = "batch",
                 seed: int = 0, rank: int = 0, world_size: int = 1, repeat: int = 1, num_workers: int = 0,
                 trim_padding: bool = False):
        from pix2seq_fast.data.datasets import collate_for  # noqa: PLC0415
        from pix2seq_fast.data.mixing import ShardedSampler  # noqa: PLC0415

        if mode not in ("batch", "data"):
            raise ValueError(f"mode must be 'batch' or 'data', got {mode!r}")
        self.datasets, self.tasks = dict(datasets), list(datasets)
        sizes = batch_size if isinstance(batch_size, dict) else {t: batch_size for t in self.tasks}
        if mode == "data" and isinstance(batch_size, dict):
            raise ValueError("data mixing takes one int batch_size (rows per step)")
        if any(int(sizes.get(t, 0)) < 1 for t in self.tasks) or repeat < 1 or num_workers < 0:
            raise ValueError(f"batch sizes and repeat must be >= 1 and num_workers >= 0, got "
                             f"{batch_size}, {repeat}, {num_workers}")
        self.batch_sizes = {t: int(sizes[t]) for t in self.tasks}
        self.batch_size = sum(self.batch_sizes.values()) if isinstance(batch_size, dict) else int(batch_size)
        self.mode, self.seed = mode, int(seed)
        self.rank, self.world_size, self.repeat = int(rank), int(world_size), int(repeat)
        self.num_workers = int(num_workers)
        if trim_padding and mode != "batch":
            raise ValueError("trim_padding needs batch mixing (mode='batch')")
        self.trim_padding = bool(trim_padding)
        weights = np.array([float(task_weights[t]) for t in self.tasks])
        self.probs = weights / weights.sum()
        self.samplers = {t: ShardedSampler(len(ds), self.rank, self.world_size, shuffle=True,
                                           seed=self.seed + _SAMPLER_SEED_STRIDE * k)
                         for k, (t, ds) in enumerate(self.datasets.items())}
        self.collate_fns = {t: collate_for(t, ds.vocab, getattr(ds, "cfg", None), self.seed, train=ds.train)
                            for t, ds in self.datasets.items()}
        if mode == "batch":
            for t in self.tasks:
                if len(self.samplers[t]) < self.batch_sizes[t]:
                    raise ValueError(f"task {t!r} has {len(self.samplers[t])} examples on each of "
                                     f"{world_size} rank(s), fewer than its batch size {self.batch_sizes[t]}")
        self._order_cache: dict[tuple[str, int], list[int]] = {}

    def _pad_token(self) -> int:
        pads = {int(ds.vocab.pad) for ds in self.datasets.values()}
        if len(pads) != 1:
            raise ValueError(f"trim_padding: the datasets disagree on the PAD token ({sorted(pads)})")
        return pads.pop()

    def _order(self, task: str, epoch: int) -> list[int]:
        key = (task, epoch)
        if key not in self._order_cache:
            if len(self._order_cache) > 4 * len(self.tasks):
                self._order_cache.clear()
            sampler = self.samplers[task]
            sampler.set_epoch(epoch)
            self._order_cache[key] = sampler.indices()
        return self._order_cache[key]

    def _expand(self, task: str, epoch: int, indices) -> list[tuple]:
        return [(task, epoch * self.repeat + r, int(i)) for i in indices for r in range(self.repeat)]

    def steps_per_epoch(self, task: str) -> int:
        """Batch mixing: batches of ``task`` per pass over its data on this rank."""
        return len(self.samplers[task]) // self.batch_sizes[task]

    def batch_keys(self, step: int) -> list[tuple]:
        """Batch mixing: the keys of step ``step`` (all tasks, task by task)."""
        keys = []
        for t in self.tasks:
            per_epoch = self.steps_per_epoch(t)
            epoch, j = divmod(step, per_epoch)
            n = self.batch_sizes[t]
            keys += self._expand(t, epoch, self._order(t, epoch)[j * n:(j + 1) * n])
        return keys

    def task_counts(self, step: int) -> np.ndarray:
        """Data mixing: rows of every task in step ``step``."""
        return np.random.default_rng([self.seed, self.rank, step]).multinomial(self.batch_size, self.probs)

    def iter_keys(self, start_step: int = 0):
        """Infinite iterator over the key lists of steps ``start_step, start_step + 1, ...``."""
        if self.mode == "batch":
            step = start_step
            while True:
                yield self.batch_keys(step)
                step += 1
        positions = np.zeros(len(self.tasks), dtype=np.int64)
        for s in range(start_step):  # a stream's position is the sum of the earlier counts
            positions += self.task_counts(s)
        step = start_step
        while True:
            keys = []
            for k, (t, count) in enumerate(zip(self.tasks, self.task_counts(step))):
                per_rank = len(self.samplers[t])
                for pos in range(int(positions[k]), int(positions[k]) + int(count)):
                    epoch, j = divmod(pos, per_rank)
                    keys += self._expand(t, epoch, [self._order(t, epoch)[j]])
                positions[k] += count
            yield keys
            step += 1

    def batches(self, start_step: int = 0):
        """Infinite iterator over the step batches ``{task: {"image", "input", "target", "weight"}}``
        (data mixing: one task ``"mixed"``), from step ``start_step`` on."""
        loader = torch.utils.data.DataLoader(
            TaskKeyedDataset(self.datasets), batch_sampler=_KeyIterable(self, start_step),
            collate_fn=_StepCollate(self.collate_fns, self.mode == "data",
                                    self._pad_token() if self.trim_padding else None), num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(self.seed * 1009 + self.rank),
            prefetch_factor=2 if self.num_workers else None)
        return iter(loader)


class _KeyIterable:
    def __init__(self, stream: StepStream, start_step: int):
        self.stream, self.start_step = stream, int(start_step)

    def __iter__(self):
        return self.stream.iter_keys(self.start_step)


def build_stream(cfg: TrainConfig, datasets: dict, dist: DistInfo) -> StepStream:
    sizes = {t: cfg.batch_size_of(t) for t in datasets} if cfg.mixing == "batch" else cfg.batch_size
    return StepStream(datasets, sizes, cfg.task_weights, mode=cfg.mixing, seed=cfg.seed,
                      rank=dist.rank, world_size=dist.world_size, repeat=cfg.repeat_augment,
                      num_workers=cfg.num_workers, trim_padding=cfg.trim_padding)
