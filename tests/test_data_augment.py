"""Augmentation keeps annotations consistent with the pixels (SPEC §6)."""
import json

import cv2

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from pix2seq_fast.data import synthetic
from pix2seq_fast.data.augment import (AugmentConfig, augment, crop_instances, flip_instances,
                                       task_augment_config)
from pix2seq_fast.data.coco import CocoInstances, Instances
from pix2seq_fast.tasks.keypoints import FLIP_PERMUTATION

CANVAS = 128


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_aug")
    out = synthetic.generate_dataset(root, num_train=24, num_val=1, image_size=128, seed=5, verbose=False)
    colours = {}
    for name in ("instances", "person_keypoints"):
        with open(out["train"][name]) as f:
            colours.update({a["id"]: a["color"] for a in json.load(f)["annotations"]})
    return dict(
        inst=CocoInstances(out["train"]["instances"], out["train"]["images"]),
        kp=CocoInstances(out["train"]["person_keypoints"], out["train"]["images"]), colours=colours)


def _polygon_mask(parts, canvas):
    flat = [(p[:, ::-1] * canvas).reshape(-1).tolist() for p in parts]
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(flat, canvas, canvas))).astype(bool)


def _check_consistent(out, colours, canvas, min_on_colour=0.9):
    inst = out.instances
    h, w = out.size
    assert out.image.shape == (canvas, canvas, 3) and out.image.dtype == np.float32
    np.testing.assert_allclose(out.image[h:], 0.3)
    np.testing.assert_allclose(out.image[:, w:], 0.3)
    assert (inst.boxes >= 0).all() and (inst.boxes[:, [0, 2]] <= h / canvas + 1e-6).all()
    assert (inst.boxes[:, [1, 3]] <= w / canvas + 1e-6).all()
    assert ((inst.boxes[:, 2:] > inst.boxes[:, :2]).all(1)).all()
    for i, parts in enumerate(inst.polygons):
        if not parts:
            continue
        pts = np.concatenate(parts)
        assert (pts >= inst.boxes[i, :2] - 1e-4).all() and (pts <= inst.boxes[i, 2:] + 1e-4).all()
        mask = cv2.erode(_polygon_mask(parts, canvas).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        if mask.sum() < 20:
            continue
        colour = np.array(synthetic.PALETTE[colours[int(inst.ann_ids[i])]]) / 255
        close = np.abs(out.image[mask] - colour).max(-1) < 0.08
        assert close.mean() >= min_on_colour, (inst.ann_ids[i], close.mean())


@pytest.mark.parametrize("seed", range(6))
def test_detection_and_segmentation_stay_consistent(synth, seed):
    ds = synth["inst"]
    rng = np.random.default_rng(seed)
    image_id = ds.image_ids[seed * 3]
    for task in ("detect", "segment"):
        out = augment(ds.load_image(image_id), ds.instances(image_id), rng, task_augment_config(task, CANVAS))
        _check_consistent(out, synth["colours"], CANVAS, min_on_colour=0.9)
        assert not any(out.instances.is_crowd)


def test_forced_crop_clips_and_drops(synth):
    ds = synth["inst"]
    cfg = AugmentConfig(CANVAS, scale_range=(2.0, 2.0), flip_prob=0.0)
    seen_drop = seen_clip = False
    for k, image_id in enumerate(ds.image_ids):
        inst = ds.instances(image_id)
        out = augment(ds.load_image(image_id), inst, np.random.default_rng(k), cfg)
        _check_consistent(out, synth["colours"], CANVAS, min_on_colour=0.9)
        seen_drop |= len(out.instances) < int((~inst.is_crowd).sum())
        seen_clip |= bool((out.instances.boxes[:, 2:] >= 1 - 1e-6).any())
    assert seen_drop and seen_clip


def test_flip_mirrors_and_swaps_keypoints(synth):
    ds = synth["kp"]
    image_id, pos = ds.instance_index(require=("keypoints",))[0]
    image, inst = ds.load_image(image_id), ds.instances(image_id)
    base = AugmentConfig(CANVAS, scale_range=(0.8, 0.8), flip_prob=0.0, person_crop=True)
    plain = augment(image, inst, np.random.default_rng(1), base, focus=pos)
    flipped = augment(image, inst, np.random.default_rng(1), AugmentConfig(
        CANVAS, scale_range=(0.8, 0.8), flip_prob=1.0, person_crop=True), focus=pos)
    h, w = plain.size
    np.testing.assert_array_equal(flipped.image[:h, :w], plain.image[:h, :w][:, ::-1])
    a, b = plain.instances.keypoints[plain.focus], flipped.instances.keypoints[flipped.focus]
    width = w / CANVAS
    for i, j in enumerate(FLIP_PERMUTATION):
        assert b[i, 2] == a[j, 2]
        if a[j, 2] > 0:
            np.testing.assert_allclose(b[i, :2], [a[j, 0], width - a[j, 1]], atol=1e-6)
    pb, fb = plain.instances.boxes[plain.focus], flipped.instances.boxes[flipped.focus]
    np.testing.assert_allclose(fb, [pb[0], width - pb[3], pb[2], width - pb[1]], atol=1e-6)


def test_person_crop_keypoints_land_on_the_person(synth):
    ds = synth["kp"]
    cfg = task_augment_config("keypoints", CANVAS, train=False)
    checked = 0
    for image_id, pos in ds.instance_index(require=("keypoints",)):
        out = augment(ds.load_image(image_id), ds.instances(image_id), np.random.default_rng(0), cfg, focus=pos)
        kp = out.instances.keypoints[out.focus]
        colour = np.array(synthetic.PALETTE[synth["colours"][int(out.instances.ann_ids[out.focus])]]) / 255
        scale = np.tile(out.scale, 2)  # per axis (y, x)
        box = out.instances.boxes[out.focus] * CANVAS / scale + np.tile(out.offset, 2)
        np.testing.assert_allclose(box, ds.instances(image_id).boxes[pos], atol=1e-3)
        assert max(out.size) == CANVAS
        for y, x, v in kp:
            if v == 2:
                pixel = out.image[int(y * CANVAS), int(x * CANVAS)]
                assert np.abs(pixel - colour).max() < 0.25
                checked += 1
    assert checked > 10


def test_reproducible_and_colour_jitter(synth):
    ds = synth["inst"]
    image_id = ds.image_ids[0]
    cfg = task_augment_config("caption", CANVAS)
    a = augment(ds.load_image(image_id), ds.instances(image_id), np.random.default_rng(9), cfg)
    b = augment(ds.load_image(image_id), ds.instances(image_id), np.random.default_rng(9), cfg)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.instances.boxes, b.instances.boxes)
    no_jitter = augment(ds.load_image(image_id), ds.instances(image_id), np.random.default_rng(9),
                        AugmentConfig(CANVAS, (0.3, 2.0), color_jitter=0.0))
    assert a.size == no_jitter.size
    assert not np.allclose(a.image, no_jitter.image)
    assert a.image.min() >= 0 and a.image.max() <= 1


def test_crop_and_flip_by_hand():
    square = np.array([[2, 2], [2, 8], [8, 8], [8, 2]], np.float32)      # y x
    kp = np.zeros((2, 17, 3), np.float32)
    kp[0, 0] = [5, 5, 2]
    kp[0, 1] = [5, 12, 2]                                                # right of the crop
    inst = Instances(boxes=np.array([[2, 2, 8, 8], [20, 20, 30, 30]], np.float32), labels=np.array([3, 4]),
                     is_crowd=np.zeros(2, bool), polygons=[[square], [square + 20]], keypoints=kp,
                     ann_ids=np.array([11, 12]), crowd_rles=[None, None])
    out, kept = crop_instances(inst, 4, 0, 10, 6)                        # window y 4..14, x 0..6
    assert kept.tolist() == [0] and out.ann_ids.tolist() == [11]
    np.testing.assert_allclose(out.boxes[0], [0, 2, 4, 6])
    poly = out.polygons[0][0]
    assert poly[:, 0].min() == 0 and poly[:, 0].max() == 4 and poly[:, 1].min() == 2 and poly[:, 1].max() == 6
    assert abs(_area(poly)) == pytest.approx(16.0)
    assert out.keypoints[0, 0].tolist() == [1, 5, 2] and out.keypoints[0, 1, 2] == 0
    flipped = flip_instances(out, 6)
    np.testing.assert_allclose(flipped.boxes[0], [0, 0, 4, 4])
    assert flipped.keypoints[0, 0].tolist() == [1, 1, 2]                 # nose stays the nose
    assert flipped.keypoints[0, 2, 2] == 0 and flipped.keypoints[0, 1, 2] == 0


def _area(p):
    x, y = p[:, 1], p[:, 0]
    return 0.5 * (np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def test_bad_arguments(synth):
    with pytest.raises(ValueError, match="scale_range"):
        AugmentConfig(64, scale_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="flip_prob"):
        AugmentConfig(64, flip_prob=1.5)
    with pytest.raises(ValueError, match="task"):
        task_augment_config("pose", 64)
    ds = synth["inst"]
    image_id = ds.image_ids[0]
    with pytest.raises(ValueError, match="focus"):
        augment(ds.load_image(image_id), ds.instances(image_id), np.random.default_rng(0),
                AugmentConfig(64), focus=99)
    with pytest.raises(ValueError, match="image"):
        augment(np.zeros((4, 4), np.uint8), Instances.empty(), np.random.default_rng(0), AugmentConfig(64))
