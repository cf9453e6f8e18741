"""The trainer's step stream: a step's data is a pure function of (seed, step, rank)."""
import itertools

import pytest
import torch

from pix2seq_fast.training.data import StepStream, build_train_datasets
from pix2seq_fast.training.model_setup import model_config
from pix2seq_fast.text import Tokenizer
from train_helpers import make_data, tiny_config


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    data = make_data(tmp_path_factory.mktemp("stream_data"))
    cfg = tiny_config(data, data / "out")
    from pix2seq_fast.data.coco import CocoCaptions
    captions = CocoCaptions(data / "annotations" / "captions_train.json", data / "images" / "train")
    tokenizer = Tokenizer.train([c for _, c, _ in captions.pairs], 64)
    return build_train_datasets(cfg, model_config(cfg).vocab, 64, tokenizer)


def take(iterator, n):
    return list(itertools.islice(iterator, n))


@pytest.mark.parametrize("mode", ["batch", "data"])
def test_stream_restarted_at_a_step_equals_the_tail_of_the_full_stream(datasets, mode):
    stream = StepStream(datasets, 3, {t: 1.0 for t in datasets}, mode=mode, seed=5)
    full = take(stream.iter_keys(0), 12)
    for start in (1, 4, 7):
        assert take(StepStream(datasets, 3, {t: 1.0 for t in datasets}, mode=mode, seed=5).iter_keys(start),
                    12 - start) == full[start:]
    assert take(StepStream(datasets, 3, {t: 1.0 for t in datasets}, mode=mode, seed=6).iter_keys(0), 12) != full


def test_batch_mixing_walks_each_task_through_its_epochs_and_shards_ranks(datasets):
    sizes = {"detect": 2, "segment": 3, "keypoints": 1, "caption": 2}
    ranks = [StepStream(datasets, sizes, {t: 1.0 for t in datasets}, seed=1, rank=r, world_size=2) for r in (0, 1)]
    for task, ds in datasets.items():
        per_epoch = ranks[0].steps_per_epoch(task)
        assert per_epoch == -(-len(ds) // 2) // sizes[task] >= 1
        seen = []
        for stream in ranks:
            keys = [k for s in range(per_epoch) for k in stream.batch_keys(s) if k[0] == task]
            assert len(keys) == per_epoch * sizes[task] and {k[1] for k in keys} == {0}
            assert len({k[2] for k in keys}) == len(keys)  # no example twice in an epoch
            seen.append({k[2] for k in keys})
        if len(ds) % 2 == 0:
            assert not seen[0] & seen[1], task  # the two ranks' shards are disjoint
        assert {k[1] for k in ranks[0].batch_keys(per_epoch) if k[0] == task} == {1}  # next epoch


def test_data_mixing_draws_tasks_in_proportion_to_the_weights(datasets):
    weights = {"detect": 6.0, "segment": 3.0, "keypoints": 1.0, "caption": 0.0}
    stream = StepStream(datasets, 10, weights, mode="data", seed=0)
    counts = {t: 0 for t in datasets}
    for keys in take(stream.iter_keys(0), 200):
        assert len(keys) == 10
        for task, _, _ in keys:
            counts[task] += 1
    assert counts["caption"] == 0
    assert abs(counts["detect"] / 2000 - 0.6) < 0.05 and abs(counts["keypoints"] / 2000 - 0.1) < 0.03


def test_repeat_augment_gives_every_copy_a_new_augmentation(datasets):
    stream = StepStream({"detect": datasets["detect"]}, 2, {"detect": 1.0}, seed=0, repeat=2)
    keys = stream.batch_keys(0)
    assert len(keys) == 4 and keys[0][2] == keys[1][2] and keys[0][1] != keys[1][1]
    batch = next(stream.batches(0))["detect"]
    assert batch["image"].shape == (4, 3, 64, 64)
    assert not torch.equal(batch["input"][0], batch["input"][1])  # same image, other random sequence


def test_batches_are_reproducible_with_and_without_workers(datasets):
    weights = {t: 1.0 for t in datasets}
    a = take(StepStream(datasets, 2, weights, seed=3).batches(2), 2)
    b = take(StepStream(datasets, 2, weights, seed=3, num_workers=1).batches(2), 2)
    for step_a, step_b in zip(a, b):
        assert set(step_a) == set(datasets)
        for task in datasets:
            for key in ("image", "input", "target", "weight"):
                assert torch.equal(step_a[task][key], step_b[task][key]), (task, key)


def test_data_mixing_pads_rows_to_one_batch(datasets):
    stream = StepStream(datasets, 6, {t: 1.0 for t in datasets}, mode="data", seed=0)
    batch = next(stream.batches(0))["mixed"]
    longest = max(datasets[t].cfg.seq_len for t in batch["task"])
    assert batch["input"].shape == batch["weight"].shape == (6, longest) and len(batch["task"]) == 6
    for row, task in enumerate(batch["task"]):  # padding past a row's own length carries no weight
        assert float(batch["weight"][row, datasets[task].cfg.seq_len:].abs().sum()) == 0.0


def test_bad_stream_arguments_raise(datasets):
    with pytest.raises(ValueError, match="mode must be"):
        StepStream(datasets, 2, {t: 1.0 for t in datasets}, mode="mix")
    with pytest.raises(ValueError, match="fewer than its batch size"):
        StepStream(datasets, 1000, {t: 1.0 for t in datasets})
    with pytest.raises(ValueError, match="batch sizes and repeat must be >= 1"):
        StepStream(datasets, 2, {t: 1.0 for t in datasets}, repeat=0)


def test_trim_padding_cuts_only_trailing_pad_and_keeps_every_end_target(datasets):
    weights = {t: 1.0 for t in datasets}
    full = take(StepStream(datasets, 4, weights, seed=2).batches(0), 3)
    trimmed = take(StepStream(datasets, 4, weights, seed=2, trim_padding=True).batches(0), 3)
    shorter = 0
    for step_full, step_trim in zip(full, trimmed):
        for task in datasets:
            a, b = step_full[task], step_trim[task]
            length = b["target"].shape[1]
            shorter += length < a["target"].shape[1]
            assert torch.equal(a["image"], b["image"])
            for key in ("input", "target", "weight"):
                assert torch.equal(a[key][:, :length], b[key]), (task, key)
            assert bool((a["target"][:, length:] == 0).all())  # only PAD targets were dropped
            had_end, kept_end = (a["target"] == 0).any(dim=1), (b["target"] == 0).any(dim=1)
            assert bool((kept_end | ~had_end).all())  # every row that ended still ends
            assert bool((b["target"][:, -1] == 0).any()) or length == a["target"].shape[1]
    assert shorter > 0  # captions of <= 24 tokens leave PAD columns to cut


def test_trim_padding_needs_batch_mixing(datasets):
    with pytest.raises(ValueError, match="trim_padding needs batch mixing"):
        StepStream(datasets, 4, {t: 1.0 for t in datasets}, mode="data", trim_padding=True)
