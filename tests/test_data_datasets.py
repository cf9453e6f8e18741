"""Per-task datasets: sequences consistent with the annotations, reproducible, robust to bad images."""
import logging
import os
import shutil

import numpy as np
import pytest
import torch

from pix2seq_fast.data import synthetic
from pix2seq_fast.data.coco import CocoInstances, ImageReadError
from pix2seq_fast.data.datasets import (DetectionDataset, KeypointCollate, build_datasets, collate, pad_collate,
                                        trim_padding)
from pix2seq_fast.tasks import (CaptionConfig, DetectionConfig, KeypointsConfig, SegmentationConfig)
from pix2seq_fast.text import Tokenizer
from pix2seq_fast.vocab import Vocab

CANVAS = 96
VOCAB = Vocab()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_ds")
    paths = synthetic.generate_dataset(root, num_train=16, num_val=2, image_size=96, seed=4, verbose=False)
    import json
    with open(paths["train"]["captions"]) as f:
        texts = [a["caption"] for a in json.load(f)["annotations"]]
    tok = Tokenizer.train(texts, vocab_size=120)
    return root, paths, tok, build_datasets(root, "train", VOCAB, CANVAS, tok, seed=3)


def test_shapes_and_prompts(setup):
    _, _, _, ds = setup
    lengths = {"detect": DetectionConfig().seq_len, "segment": SegmentationConfig().seq_len,
               "keypoints": KeypointsConfig().seq_len, "caption": CaptionConfig().seq_len}
    for task, d in ds.items():
        assert len(d) > 0
        ex = d[0]
        assert ex["image"].shape == (3, CANVAS, CANVAS) and ex["image"].dtype == torch.float32
        assert ex["input"].shape == ex["target"].shape == ex["weight"].shape == (lengths[task],)
        assert ex["input"].dtype == ex["target"].dtype == torch.int64 and ex["weight"].dtype == torch.float32
        assert int(ex["input"][0]) == VOCAB.prompt(task) and ex["task"] == task
        assert 0 <= float(ex["image"].min()) and float(ex["image"].max()) <= 1


def test_detection_sequence_holds_the_objects(setup):
    _, _, _, ds = setup
    d = ds["detect"]
    for i in range(4):
        ex = d[i]
        tgt, w = ex["target"].numpy(), ex["weight"].numpy()
        classes = tgt[4::5][:100]
        real = classes != VOCAB.noise
        assert real.sum() == ex["num_objects"]
        assert (w[4::5][:100][real] == 1).all()
        boxes = VOCAB.dequantize(tgt[:500].reshape(100, 5)[real, :4])
        assert (boxes[:, 2:] >= boxes[:, :2]).all()


def test_segmentation_polygon_inside_prompt_box(setup):
    _, _, _, ds = setup
    d = ds["segment"]
    for i in range(min(len(d), 8)):
        ex = d[i]
        inp, tgt = ex["input"].numpy(), ex["target"].numpy()
        box = VOCAB.dequantize(inp[1:5])
        assert VOCAB.is_class(inp[5])
        coords = tgt[5:][VOCAB.is_coord(tgt[5:])]
        pts = VOCAB.dequantize(coords)
        pts = pts[: len(pts) // 2 * 2].reshape(-1, 2)
        eps = 1.5 / (VOCAB.bins - 1)
        assert (pts >= box[:2] - eps).all() and (pts <= box[2:] + eps).all()


def test_keypoint_tokens_follow_visibility(setup):
    _, _, _, ds = setup
    d = ds["keypoints"]
    ex = d[0]
    tgt = ex["target"].numpy()[5:]
    assert tgt.shape == (34,)
    pairs = tgt.reshape(17, 2)
    invisible = (pairs == VOCAB.invisible).all(1)
    visible = VOCAB.is_coord(pairs).all(1)
    assert (invisible | visible).all() and visible.any()
    w = ex["weight"].numpy()[5:].reshape(17, 2)
    assert np.allclose(w[invisible], 0.1) and np.allclose(w[visible], 1.0)


def test_caption_round_trips_through_the_tokenizer(setup):
    _, _, tok, ds = setup
    ex = ds["caption"][3]
    tgt = ex["target"].numpy()
    eos = int(np.flatnonzero(tgt == VOCAB.caption_eos)[0])
    assert tok.decode((tgt[:eos] - VOCAB.text_offset).tolist()) == ex["caption"]


def test_reproducible_per_epoch_and_index(setup):
    _, _, _, ds = setup
    d = ds["detect"]
    a, b = d[2], d[2]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["input"], b["input"])
    assert torch.equal(d[(5, 2)]["target"], d[(5, 2)]["target"])
    d.set_epoch(5)
    assert torch.equal(d[2]["target"], d[(5, 2)]["target"])
    d.set_epoch(0)
    assert not torch.equal(d[(1, 2)]["target"], d[(0, 2)]["target"])
    with pytest.raises(IndexError):
        d[len(d)]


def test_unreadable_image_raises_or_is_skipped(setup, tmp_path, caplog):
    _, paths, _, _ = setup
    image_dir = tmp_path / "images"
    shutil.copytree(paths["train"]["images"], image_dir)
    source = CocoInstances(paths["train"]["instances"], image_dir)
    os.remove(source.image_info(source.image_ids[0]).path)
    strict = DetectionDataset(source, VOCAB, CANVAS)
    with pytest.raises(ImageReadError, match=source.image_info(source.image_ids[0]).path):
        strict[0]
    lenient = DetectionDataset(source, VOCAB, CANVAS, on_error="skip")
    with caplog.at_level(logging.WARNING):
        ex = lenient[0]
    assert ex["image_id"] != source.image_ids[0] and "skipping unreadable image" in caplog.text


def test_collates(setup):
    _, _, _, ds = setup
    kp = ds["keypoints"]
    examples = [kp[i % len(kp)] for i in range(6)]
    plain = collate(examples)
    assert plain["input"].shape == (6, KeypointsConfig().seq_len) and plain["image"].shape == (6, 3, CANVAS, CANVAS)
    changed = 0
    for epoch in range(4):
        exs = [kp[(epoch, i % len(kp))] for i in range(6)]
        base = collate(exs)
        out = KeypointCollate(VOCAB, seed=1)(exs)
        again = KeypointCollate(VOCAB, seed=1)(exs)
        assert torch.equal(out["input"], again["input"])
        assert torch.equal(out["target"], base["target"]) and torch.equal(out["input"][:, :6], base["input"][:, :6])
        diff = out["input"] != base["input"]
        assert (out["input"][diff] == VOCAB.invisible).all()
        changed += int(diff.sum())
    assert changed > 0
    mixed = pad_collate([ds["detect"][0], ds["caption"][0]])
    L = DetectionConfig().seq_len
    assert mixed["input"].shape == (2, L)
    assert (mixed["weight"][1, CaptionConfig().seq_len:] == 0).all() and (mixed["input"][1, CaptionConfig().seq_len:] == 0).all()
    assert mixed["task"] == ["detect", "caption"]
    with pytest.raises(ValueError, match="pad_collate"):
        collate([ds["detect"][0], ds["caption"][0]])


def test_bad_arguments(setup):
    root, paths, tok, _ = setup
    with pytest.raises(ValueError, match="tokenizer"):
        build_datasets(root, "train", VOCAB, CANVAS, None, tasks=("caption",))
    with pytest.raises(ValueError, match="unknown task"):
        build_datasets(root, "train", VOCAB, CANVAS, tok, tasks=("pose",))
    with pytest.raises(ValueError, match="on_error"):
        DetectionDataset(CocoInstances(paths["train"]["instances"], paths["train"]["images"]), VOCAB, CANVAS,
                         on_error="ignore")


def test_trim_padding_keeps_the_logits_of_every_kept_position():
    from pix2seq_fast.model import Pix2Seq, get_config  # noqa: PLC0415

    torch.manual_seed(0)
    model = Pix2Seq(get_config("tiny")).eval()
    pad, size = model.vocab.pad, model.config.image_size
    target = torch.tensor([[5, 6, 7, pad, pad, pad, pad], [5, 6, pad, pad, pad, pad, pad]])
    batch = {"image": torch.rand(2, 3, size, size), "input": torch.randint(1, 30, (2, 7)), "target": target,
             "weight": torch.ones(2, 7), "task": ["x", "x"]}
    cut = trim_padding(batch, pad)
    assert cut["target"].shape == (2, 4) and cut["task"] == ["x", "x"]  # last real target at 2, + its end
    assert torch.equal(cut["input"], batch["input"][:, :4]) and torch.equal(cut["weight"], batch["weight"][:, :4])
    with torch.no_grad():
        assert torch.allclose(model(cut["image"], cut["input"]), model(batch["image"], batch["input"])[:, :4],
                              atol=1e-5)
    full = dict(batch, target=torch.full((2, 7), 9))
    assert trim_padding(full, pad) is full  # nothing to cut
    empty = dict(batch, target=torch.full((2, 7), pad))
    assert trim_padding(empty, pad)["target"].shape == (2, 1)
