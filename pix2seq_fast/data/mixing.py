"""Multi-task loading: batch mixing (SPEC §2: each step one batch of every task, with its task
weight) or data mixing (one batch whose examples come from the tasks in proportion); DataLoader
workers; sharding across distributed ranks.

Reproducibility: samplers shuffle with ``torch.Generator`` seeded by ``(seed, epoch)``; every
example draws its augmentation from ``(seed, epoch, index)`` (see ``datasets``), so a run gives the
same batches whatever the number of workers. Worker processes also get their numpy / ``random``
state seeded from torch's per-worker seed (``seed_worker``), which depends on the loader seed,
the rank and the worker id.
"""
from __future__ import annotations

import math
import random

import numpy as np
import torch

from pix2seq_fast.data.datasets import collate_for, pad_collate

#: SPEC §2 batch-mixing loss weights (the paper's greedy search); the trainer's default too.
DEFAULT_TASK_WEIGHTS = {"detect": 0.1782, "segment": 0.7128, "caption": 0.099, "keypoints": 0.01}
MODES = ("batch", "data")


def _dist_defaults(rank, world_size):
    if rank is None or world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank = torch.distributed.get_rank() if rank is None else rank
            world_size = torch.distributed.get_world_size() if world_size is None else world_size
        else:
            rank, world_size = rank or 0, world_size or 1
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank={rank} world_size={world_size}")
    return int(rank), int(world_size)


class ShardedSampler(torch.utils.data.Sampler):
    """DistributedSampler-style: a ``(seed, epoch)`` permutation of ``range(num_samples)``, padded
    by wrapping (or truncated with ``drop_last``) to a multiple of ``world_size``; rank ``r`` takes
    positions ``r, r + world_size, ...``. Yields ``(epoch, index)`` pairs."""

    def __init__(self, num_samples: int, rank: int | None = None, world_size: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.num_samples = int(num_samples)
        self.rank, self.world_size = _dist_defaults(rank, world_size)
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.epoch = 0
        if drop_last:
            self.per_rank = self.num_samples // self.world_size
            if self.per_rank == 0:
                raise ValueError(f"{num_samples} samples cannot give every one of {world_size} ranks one sample")
        else:
            self.per_rank = math.ceil(self.num_samples / self.world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        total = self.per_rank * self.world_size
        while len(order) < total:
            order += order[: total - len(order)]
        return order[:total][self.rank::self.world_size]

    def __iter__(self):
        epoch = self.epoch
        return iter([(epoch, i) for i in self.indices()])

    def __len__(self):
        return self.per_rank


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed numpy and ``random`` from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(dataset, batch_size: int, sampler, collate_fn, num_workers: int = 0, seed: int = 0,
                drop_last: bool = True) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(int(seed))
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn, num_workers=num_workers,
        worker_init_fn=seed_worker if num_workers else None, generator=g, drop_last=drop_last,
        persistent_workers=num_workers > 0)


def _check_weights(tasks, weights):
    weights = dict(DEFAULT_TASK_WEIGHTS if weights is None else weights)
    missing = [t for t in tasks if t not in weights]
    if missing:
        raise ValueError(f"task_weights has no weight for {missing}")
    for t in tasks:
        if not (isinstance(weights[t], (int, float)) and math.isfinite(weights[t]) and weights[t] >= 0):
            raise ValueError(f"task weight of {t!r} must be a finite number >= 0, got {weights[t]!r}")
    if sum(weights[t] for t in tasks) <= 0:
        raise ValueError("task weights must not all be 0")
    return {t: float(weights[t]) for t in tasks}


class MultiTaskLoader:
    """Infinite iterator over training steps.

    ``mode="batch"`` (SPEC §2, the default): each step is ``{task: (batch, weight)}`` with one batch
    of every task (``batch_size`` may be an int or ``{task: int}``); the step's loss is
    ``Σ weight · loss_task``. Each task cycles through its own epochs.
    ``mode="data"``: each step is ``{"mixed": (batch, 1.0)}``, one batch of ``batch_size`` (a dict:
    its sum) examples
    whose tasks are drawn in proportion to the weights (multinomial per batch), padded to the
    longest sequence (``pad_collate``); ``batch["task"]`` names each row's task.

    ``datasets``: ``{task: TaskDataset}``; ``rank`` / ``world_size`` default to torch.distributed's.
    """

    def __init__(self, datasets: dict, batch_size, task_weights: dict | None = None, mode: str = "batch",
                 num_workers: int = 0, seed: int = 0, rank: int | None = None, world_size: int | None = None,
                 collate_fns: dict | None = None):
        if not datasets:
            raise ValueError("datasets must name at least one task")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.datasets, self.mode, self.seed = dict(datasets), mode, int(seed)
        self.tasks = list(self.datasets)
        self.weights = _check_weights(self.tasks, task_weights)
        self.rank, self.world_size = _dist_defaults(rank, world_size)
        sizes = batch_size if isinstance(batch_size, dict) else {t: batch_size for t in self.tasks}
        for t in self.tasks:
            if int(sizes.get(t, 0)) < 1:
                raise ValueError(f"batch size of {t!r} must be >= 1, got {sizes.get(t)}")
        self.batch_sizes = {t: int(sizes[t]) for t in self.tasks}
        self.mixed_batch_size = int(batch_size) if not isinstance(batch_size, dict) else sum(self.batch_sizes.values())
        self.collate_fns = {t: (collate_fns or {}).get(t) or collate_for(
            t, ds.vocab, getattr(ds, "cfg", None), seed, train=ds.train) for t, ds in self.datasets.items()}
        self.num_workers = int(num_workers)
        self.samplers = {t: ShardedSampler(len(ds), self.rank, self.world_size, seed=self.seed + 7919 * k)
                         for k, (t, ds) in enumerate(self.datasets.items())}
        self.epochs = {t: 0 for t in self.tasks}

    def steps_per_epoch(self, task: str) -> int:
        """Batches of ``task`` per pass over its data on this rank (batch mode)."""
        return len(self.samplers[task]) // self.batch_sizes[task]

    def __iter__(self):
        return self._batch_mixing() if self.mode == "batch" else self._data_mixing()

    def _batch_mixing(self):
        loaders, iterators = {}, {}
        for k, t in enumerate(self.tasks):
            if self.steps_per_epoch(t) < 1:
                raise ValueError(f"task {t!r} has {len(self.samplers[t])} examples on this rank, fewer than "
                                 f"its batch size {self.batch_sizes[t]}")
            loaders[t] = make_loader(self.datasets[t], self.batch_sizes[t], self.samplers[t], self.collate_fns[t],
                                     self.num_workers, seed=self.seed * 1009 + self.rank * 101 + k)
            self.samplers[t].set_epoch(self.epochs[t])
            iterators[t] = iter(loaders[t])
        while True:
            step = {}
            for t in self.tasks:
                try:
                    batch = next(iterators[t])
                except StopIteration:
                    self.epochs[t] += 1
                    self.samplers[t].set_epoch(self.epochs[t])
                    iterators[t] = iter(loaders[t])
                    batch = next(iterators[t])
                step[t] = (batch, self.weights[t])
            yield step

    def _data_mixing(self):
        dataset = TaskKeyedDataset(self.datasets)
        sampler = _MixedBatchSampler(self, self.mixed_batch_size)
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=sampler, collate_fn=_MixedCollate(self.collate_fns),
            num_workers=self.num_workers, worker_init_fn=seed_worker if self.num_workers else None,
            persistent_workers=self.num_workers > 0)
        for batch in loader:
            yield {"mixed": (batch, 1.0)}


class TaskKeyedDataset(torch.utils.data.Dataset):
    """``(task, epoch, index)`` -> that task dataset's example (the key form the mixed samplers yield)."""

    def __init__(self, datasets):
        self.datasets = datasets

    def __len__(self):
        return sum(len(d) for d in self.datasets.values())

    def __getitem__(self, key):
        task, epoch, index = key
        return self.datasets[task][(epoch, index)]


class _MixedBatchSampler:
    """Infinite batches of ``(task, epoch, index)``: per batch, task counts ~ Multinomial(batch,
    weights) from a ``(seed, rank, batch number)`` generator; each task draws from its own sharded,
    epoch-cycling stream."""

    def __init__(self, loader: MultiTaskLoader, batch_size: int):
        self.loader, self.batch_size = loader, batch_size
        w = np.array([loader.weights[t] for t in loader.tasks])
        self.p = w / w.sum()

    def __iter__(self):
        ld = self.loader
        streams = {t: self._stream(t) for t in ld.tasks}
        number = 0
        while True:
            rng = np.random.default_rng([ld.seed, ld.rank, number])
            counts = rng.multinomial(self.batch_size, self.p)
            batch = []
            for t, c in zip(ld.tasks, counts):
                batch += [(t, *next(streams[t])) for _ in range(c)]
            number += 1
            yield batch

    def _stream(self, task):
        sampler = self.loader.samplers[task]
        while True:
            sampler.set_epoch(self.loader.epochs[task])
            yield from iter(sampler)
            self.loader.epochs[task] += 1


class _MixedCollate:
    """Per-task collation (keypoint corruption included) of each task's rows, then padding of all
    rows to the longest sequence; rows keep the sampled order."""

    def __init__(self, collate_fns):
        self.collate_fns = collate_fns

    def __call__(self, examples):
        examples = list(examples)
        for task in {e["task"] for e in examples}:
            rows = [i for i, e in enumerate(examples) if e["task"] == task]
            inputs = self.collate_fns[task]([examples[i] for i in rows])["input"]
            for j, i in enumerate(rows):
                examples[i] = dict(examples[i], input=inputs[j])
        return pad_collate(examples)
