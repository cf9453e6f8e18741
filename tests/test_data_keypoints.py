"""Training geometry against the authors' and against our own inference: which instances are keypoint
examples, the crop window (``crop_to_bbox``) and the per-axis canvas mapping. Hand-made COCO files."""
import json

import cv2
import numpy as np
import pytest
import torch

from pix2seq_fast.data.augment import augment, person_crop_window, task_augment_config
from pix2seq_fast.data.coco import CocoInstances, Instances
from pix2seq_fast.data.datasets import KeypointDataset
from pix2seq_fast.predictor.geometry import canvas_boxes_to_pixels, person_crops, pixel_factors
from pix2seq_fast.vocab import Vocab

VOCAB = Vocab(bins=101, text_vocab_size=0)
CANVAS = 64
NAMES = [f"k{i}" for i in range(17)]


def _keypoints(labelled: bool) -> list:
    if not labelled:
        return [0] * 51
    kp = np.zeros((17, 3))
    kp[:, 0], kp[:, 1], kp[:, 2] = np.linspace(42, 58, 17), np.linspace(22, 58, 17), 2
    return kp.reshape(-1).tolist()


def _write(tmp_path, categories, annotations, height=80, width=100):
    image = np.full((height, width, 3), 128, np.uint8)
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), image)
    anns = [dict(id=i + 1, image_id=1, area=1.0, **a) for i, a in enumerate(annotations)]
    data = dict(images=[dict(id=1, file_name="a.png", height=height, width=width)], annotations=anns,
                categories=categories)
    path = tmp_path / "person_keypoints.json"
    path.write_text(json.dumps(data))
    return CocoInstances(path, tmp_path / "images")


PERSON = dict(id=1, name="person", keypoints=NAMES, skeleton=[])
KITE = dict(id=38, name="kite")  # a category without keypoints


def test_keypoint_examples_are_the_keypoint_category_only(tmp_path):
    """Positions: 0 a person with labelled points, 1 a person with none (num_keypoints 0), 2 a crowd
    person, 3 a kite that (oddly) carries labelled points, 4 a kite without. The authors train on 0 and
    1 (every non-crowd instance of the keypoint category); the old rule took 0 and 3."""
    source = _write(tmp_path, [PERSON, KITE], [
        dict(category_id=1, bbox=[40, 20, 20, 40], iscrowd=0, keypoints=_keypoints(True), num_keypoints=17),
        dict(category_id=1, bbox=[10, 10, 30, 50], iscrowd=0, keypoints=_keypoints(False), num_keypoints=0),
        dict(category_id=1, bbox=[0, 0, 50, 50], iscrowd=1, keypoints=_keypoints(True), num_keypoints=17,
             segmentation=dict(size=[80, 100], counts=[0, 8000])),
        dict(category_id=38, bbox=[40, 20, 20, 40], iscrowd=0, keypoints=_keypoints(True), num_keypoints=17),
        dict(category_id=38, bbox=[5, 5, 10, 10], iscrowd=0),
    ])
    ds = KeypointDataset(source, VOCAB, CANVAS, train=False)
    assert ds.index == [(1, 0), (1, 1)]
    unlabelled = ds[1]
    tgt, w = unlabelled["target"].numpy(), unlabelled["weight"].numpy()
    assert unlabelled["input"][5] == VOCAB.class_offset + 1              # the prompt's class: person
    assert (tgt[5:39] == VOCAB.invisible).all()                          # 17 INVISIBLE pairs
    np.testing.assert_allclose(w[5:39], 0.1)
    labelled = ds[0]["target"].numpy()[5:39]
    assert VOCAB.is_coord(labelled).all()


def test_no_keypoint_category_is_an_error(tmp_path):
    source = _write(tmp_path, [KITE], [dict(category_id=38, bbox=[5, 5, 10, 10], iscrowd=0)])
    with pytest.raises(ValueError, match="no category carries 'keypoints'"):
        KeypointDataset(source, VOCAB, CANVAS)


def test_training_crop_is_the_inference_crop():
    """yx box [20, 40, 60, 60] in 80x100: y [19, 60] + 21 -> [0, 79]; x [39, 60] + 11 -> [28, 71]."""
    assert person_crop_window([20.0, 40.0, 60.0, 60.0], 80, 100) == (0, 28, 80, 72)
    rng = np.random.default_rng(0)
    for _ in range(20):
        h, w = (int(v) for v in rng.integers(5, 300, 2))
        y0, x0 = rng.uniform(0, h), rng.uniform(0, w)
        box = [y0, x0, rng.uniform(y0, h), rng.uniform(x0, w)]
        y_0, x_0, y_1, x_1 = person_crop_window(box, h, w)
        xyxy = torch.tensor([[box[1], box[0], box[3], box[2]]], dtype=torch.float64)
        assert person_crops(xyxy, h, w).tolist() == [[x_0, y_0, x_1, y_1]]
        assert y_0 <= box[0] and x_0 <= box[1] and box[2] <= y_1 and box[3] <= x_1


def test_augment_crops_with_the_authors_window():
    image = np.zeros((80, 100, 3), np.uint8)
    inst = Instances(np.array([[20, 40, 60, 60]], np.float32), np.array([1]), np.array([False]), [[]],
                     np.zeros((1, 17, 3), np.float32), np.array([7]), [None])
    out = augment(image, inst, np.random.default_rng(0), task_augment_config("keypoints", CANVAS, train=False),
                  focus=0, with_polygons=False)
    # window 80 x 44 at (0, 28); longer side -> 64: 64 x round(44 * 0.8) = 64 x 35
    assert out.offset == (0.0, 28.0) and out.size == (64, 35)
    np.testing.assert_allclose(out.scale, (64 / 80, 35 / 44))


def test_training_targets_decode_to_their_pixels_per_axis():
    """A 100x300 image on a 64 canvas (eval resize: 21 x 64). The training box target at y 50.5..70.25,
    x 123.25..200 maps back through the predictor's factors to the same pixels (within 1e-4); the
    unrounded scale (64 / 300 on both axes) would be 0.77 px off in y."""
    image = np.zeros((100, 300, 3), np.uint8)
    inst = Instances(np.array([[50.5, 123.25, 70.25, 200.0]], np.float32), np.array([1]), np.array([False]),
                     [[]], np.zeros((1, 17, 3), np.float32), np.array([1]), [None])
    out = augment(image, inst, np.random.default_rng(0), task_augment_config("detect", CANVAS, train=False),
                  with_polygons=False)
    assert out.size == (21, 64)
    target = torch.from_numpy(out.instances.boxes)
    back = canvas_boxes_to_pixels(target, pixel_factors([(100, 300)], CANVAS)[0], 100, 300)
    torch.testing.assert_close(back, torch.tensor([[123.25, 50.5, 200.0, 70.25]]), atol=1e-4, rtol=0)
    assert abs(float(target[0, 0]) * 300 - 50.5) > 0.7
