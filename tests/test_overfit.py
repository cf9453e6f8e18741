"""Training and inference agree: the tiny model, trained by the real trainer on a handful of synthetic
images (no augmentation), must reproduce those images' annotations through ``Pix2Seq.predict``.

A mismatch anywhere between the training sequences and what the predictor decodes (prompt boxes,
canvas mapping, token layout, coordinate order, padding, cropping) makes one of these fail: the
model can only fit what it was shown, and the predictor must read it back the same way.

The model is the ``tiny-lite0`` preset: an ImageNet-pretrained EfficientNet-Lite0 trunk (frozen;
its features memoised per image) and a trainable 2-layer decoder. Each test trains one task for a
few hundred steps (~30-80 s on one core).
"""
import json
import shutil

import numpy as np
import pytest

from pix2seq_fast.data.synthetic import generate_dataset
from pix2seq_fast.training.config import TrainConfig
from pix2seq_fast.training.run import run

NUM_IMAGES = 12
# 64 bins (2 px each at 128 px) and nothing between the token ranges: a 252-token vocabulary
COMPACT_VOCAB = {"class_offset": 50, "num_classes": 10, "coord_offset": 60, "bins": 64, "text_offset": 124,
                 "text_vocab_size": 128}
NO_AUGMENT = {"scale_range": (1.0, 1.0), "flip_prob": 0.0, "color_jitter": 0.0}
# Captions as the main job trains them: long enough that no caption is cut before its EOS (the
# longest here is 47 text tokens), and without SPEC's input token dropout, which shows the model
# other inputs in training than greedy decoding gives it (with both, 10 of 12 on one VM type).
CAPTION_TOKENS = 64


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """``NUM_IMAGES`` synthetic train images; the val split *is* the train split, and each image keeps
    one caption (so that "reproduce the training caption" has one answer)."""
    root = tmp_path_factory.mktemp("overfit_data")
    generate_dataset(root, num_train=NUM_IMAGES, num_val=1, image_size=128, seed=3, verbose=False)
    ann = root / "annotations"
    captions = json.loads((ann / "captions_train.json").read_text())
    seen = set()
    captions["annotations"] = [a for a in captions["annotations"]
                               if a["image_id"] not in seen and not seen.add(a["image_id"])]
    (ann / "captions_train.json").write_text(json.dumps(captions))
    for name in ("instances", "person_keypoints", "captions"):
        (ann / f"{name}_val.json").write_text((ann / f"{name}_train.json").read_text())
    shutil.rmtree(root / "images" / "val")
    shutil.copytree(root / "images" / "train", root / "images" / "val")
    return root


def train_one_task(data, out, task, steps, **overrides):
    """The trained model and its final evaluation on the training images (``run``'s metrics)."""
    settings = dict(
        preset="tiny-lite0", image_size=128, data_dir=str(data), out_dir=str(out),
        model_overrides={"vocab": COMPACT_VOCAB, "feature_stride": 8, "dropout": 0.0, "drop_path": 0.0},
        tasks=(task,), task_weights={task: 1.0}, text_vocab_size=96,
        task_configs={"detect": {"max_objects": 8}, "segment": {"max_points": 96, "start_vertex": "given"},
                      "caption": {"max_tokens": CAPTION_TOKENS, "corrupt_inputs": False}},
        augment={task: NO_AUGMENT}, cache_backbone_features=True, num_workers=0, threads=1,
        batch_size=NUM_IMAGES, steps=steps, warmup_steps=20, lr=3e-3, end_lr_factor=0.05, weight_decay=0.0,
        log_every=50, ckpt_every=0, eval_images=0, vis_images=0, seed=0, eval_options={"greedy": True})
    settings.update(overrides)
    result = run(TrainConfig(**settings), progress=False)
    return result["model"], result["metrics"]


@pytest.mark.slow
def test_detection_overfits_its_training_images(data, tmp_path):
    model, metrics = train_one_task(data, tmp_path / "det", "detect", steps=300, feature_cache_gb=0.5)
    assert metrics["detect"]["AP50"] >= 0.9, metrics
    assert model.encoder.trunk_cache.max_bytes == 1 << 29
    # without augmentation each of the images misses the feature cache once, at its first step
    last = [json.loads(line) for line in (tmp_path / "det" / "metrics.jsonl").read_text().splitlines()
            if '"loss"' in line][-1]
    assert last["trunk_cache_misses"] == NUM_IMAGES, last
    assert last["trunk_cache_hits"] + last["trunk_cache_misses"] == 300 * NUM_IMAGES, last
    features_mb = model.encoder.stem_projection.in_features * 16 * 16 * 4 / 2**20  # fp32, 128 px at stride 8
    assert last["trunk_cache_mb"] == round(NUM_IMAGES * features_mb, 1), last


@pytest.mark.slow
def test_segmentation_overfits_given_the_true_boxes(data, tmp_path):
    _, metrics = train_one_task(data, tmp_path / "seg", "segment", steps=400)
    assert metrics["segment_given_boxes"]["AP50"] >= 0.9, metrics


@pytest.mark.slow
def test_keypoints_overfit_given_the_true_boxes(data, tmp_path):
    persons = sum(a["category_id"] == 1 for a in json.loads(
        (data / "annotations" / "person_keypoints_train.json").read_text())["annotations"])
    _, metrics = train_one_task(data, tmp_path / "kp", "keypoints", steps=300, batch_size=persons)
    assert metrics["keypoints_given_boxes"]["AP50"] >= 0.8, metrics


@pytest.mark.slow
def test_captioning_reproduces_its_training_captions(data, tmp_path):
    model, _ = train_one_task(data, tmp_path / "cap", "caption", steps=300)
    refs = {a["image_id"]: a["caption"]
            for a in json.loads((data / "annotations" / "captions_train.json").read_text())["annotations"]}
    infos = sorted(json.loads((data / "annotations" / "captions_train.json").read_text())["images"],
                   key=lambda im: im["id"])
    files = [str(data / "images" / "train" / im["file_name"]) for im in infos]
    texts = [c.text for c in model.predict(files, "caption", greedy=True, max_length=CAPTION_TOKENS)]
    exact = np.mean([t == refs[im["id"]] for t, im in zip(texts, infos)])
    assert exact >= 0.9, list(zip(texts, [refs[im["id"]] for im in infos]))
