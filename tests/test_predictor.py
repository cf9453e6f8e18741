"""The four task pipelines end to end on a tiny random model (64 px canvas, short sequences).

A random model rarely emits well-formed sequences, so the fixtures raise the output bias of the
token range a task needs (coordinates, or text): the pipelines then see valid sequences while
every other part of the model stays random."""
import contextlib
import json

import cv2
import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

import pix2seq_fast
from pix2seq_fast.model import create_model
from pix2seq_fast.predictor import predict
from pix2seq_fast.results import Caption, Detections, InstanceMasks, Keypoints
from pix2seq_fast.text import Tokenizer

CAPTIONS = ["a red square on a blue field", "two green circles near a yellow triangle",
            "a small blue triangle", "three red circles and a square"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    tok = Tokenizer.train(CAPTIONS, vocab_size=40)
    m = create_model("tiny", tokenizer=tok, image_size=64, enc_layers=1, dec_layers=1,
                     vocab={**pix2seq_fast.Vocab().to_dict(), "text_vocab_size": tok.vocab_size})
    return m.eval()


@contextlib.contextmanager
def favour(model, lo, hi, amount=12.0):
    """Temporarily add ``amount`` to the output bias of tokens ``[lo, hi)``."""
    bias = model.decoder.output_bias
    saved = bias.detach().clone()
    with torch.no_grad():
        bias[lo:hi] += amount
    try:
        yield model
    finally:
        with torch.no_grad():
            bias.copy_(saved)


@pytest.fixture()
def coord_model(model):
    v = model.config.vocab
    with favour(model, v.coord_offset, v.coord_offset + v.bins) as m:
        yield m


def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (50, 70, 3), dtype=np.uint8),          # RGB, wide
            rng.integers(0, 256, (80, 40), dtype=np.uint8)]             # gray, tall


def _in_image(boxes, size):
    h, w = size
    return ((boxes >= 0).all() and (boxes[:, [0, 2]] <= w).all() and (boxes[:, [1, 3]] <= h).all()
            and (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all())


def test_detect_types_shapes_ranges(coord_model):
    out = predict(coord_model, images(), "detect", max_objects=4, seed=0)
    assert isinstance(out, list) and len(out) == 2
    for det, size in zip(out, [(50, 70), (80, 40)]):
        assert isinstance(det, Detections) and det.image_size == size
        assert 1 <= len(det) <= 4
        assert det.boxes_xyxy.dtype == np.float32 and det.boxes_xyxy.shape == (len(det), 4)
        assert _in_image(det.boxes_xyxy, size)
        assert ((det.scores >= 0) & (det.scores <= 1)).all()
        assert (np.diff(det.scores) <= 0).all()                     # best first
        assert ((det.labels >= 0) & (det.labels < coord_model.config.vocab.num_classes)).all()


def test_detect_single_image_returns_one_result(coord_model):
    out = coord_model.predict(images()[0], task="detect", max_objects=2, greedy=True)
    assert isinstance(out, Detections) and out.image_size == (50, 70)


def test_detect_batch_equals_one_at_a_time_greedy(coord_model):
    imgs = images()
    batched = predict(coord_model, imgs, "detect", max_objects=4, greedy=True)
    for img, det in zip(imgs, batched):
        single = predict(coord_model, img, "detect", max_objects=4, greedy=True)
        np.testing.assert_allclose(single.boxes_xyxy, det.boxes_xyxy, atol=1e-4)
        np.testing.assert_array_equal(single.labels, det.labels)
        np.testing.assert_allclose(single.scores, det.scores, rtol=1e-4)
    # batch_size=1 (one chunk per image) gives the same too
    chunked = predict(coord_model, imgs, "detect", max_objects=4, greedy=True, batch_size=1)
    for a, b in zip(chunked, batched):
        np.testing.assert_allclose(a.boxes_xyxy, b.boxes_xyxy, atol=1e-4)


def test_detect_threshold_and_max_detections(coord_model):
    full = predict(coord_model, images()[0], "detect", max_objects=5, greedy=True)
    top2 = predict(coord_model, images()[0], "detect", max_objects=5, greedy=True, max_detections=2)
    np.testing.assert_allclose(top2.scores, full.scores[:2])
    cut = float(full.scores[len(full) // 2])
    kept = predict(coord_model, images()[0], "detect", max_objects=5, greedy=True,
                   score_threshold=cut)
    np.testing.assert_allclose(kept.scores, full.scores[full.scores >= cut])


def test_detect_early_stop(coord_model):
    """The coordinate-biased model never emits PAD, so stopping at PAD changes nothing; a model
    that emits PAD first stops at once and has no detections either way."""
    full = predict(coord_model, images(), "detect", max_objects=4, greedy=True)
    early = predict(coord_model, images(), "detect", max_objects=4, greedy=True, early_stop=True)
    for a, b in zip(full, early):
        np.testing.assert_array_equal(a.boxes_xyxy, b.boxes_xyxy)
    pad = coord_model.config.vocab.pad
    with favour(coord_model, pad, pad + 1, 100.0):
        for flag in (False, True):
            out = predict(coord_model, images(), "detect", max_objects=4, greedy=True, early_stop=flag)
            assert [len(d) for d in out] == [0, 0]


def test_same_image_in_every_input_form(coord_model, tmp_path):
    from PIL import Image

    rgb = images()[0]
    path = tmp_path / "img.png"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    rgba = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 7, np.uint8)], axis=2)
    forms = [rgb, str(path), path, Image.fromarray(rgb), rgba,
             torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0]
    outs = predict(coord_model, forms, "detect", max_objects=3, greedy=True)
    outs += predict(coord_model, torch.stack([forms[-1]] * 2), "detect", max_objects=3, greedy=True)
    assert len(outs) == len(forms) + 2
    for out in outs[1:]:
        np.testing.assert_allclose(out.boxes_xyxy, outs[0].boxes_xyxy, atol=1e-3)
        np.testing.assert_array_equal(out.labels, outs[0].labels)


def test_segment_with_caller_boxes(coord_model, tmp_path):
    img = images()[0]
    boxes = [[5.0, 5.0, 30.0, 40.0], [0.0, 0.0, 10.0, 10.0], [40.0, 10.0, 69.0, 49.0]]
    out = predict(coord_model, img, "segment", boxes=boxes, labels=[1, 2, 3], num_samples=4,
                  max_points=8, seed=0)
    assert isinstance(out, InstanceMasks) and len(out) == 3
    np.testing.assert_array_equal(out.labels, [1, 2, 3])
    np.testing.assert_array_equal(out.scores, [1.0, 1.0, 1.0])
    np.testing.assert_allclose(out.boxes_xyxy, boxes)
    dense = out.dense()
    assert dense.shape == (3, 50, 70) and dense.dtype == bool
    assert dense.any()
    # COCO export loads
    gt = {"images": [{"id": 1, "height": 50, "width": 70}], "annotations": [],
          "categories": [{"id": c, "name": str(c)} for c in (1, 2, 3)]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    res = COCO(str(tmp_path / "gt.json")).loadRes(out.to_coco(1))
    assert len(res.anns) == 3


def test_segment_vote_threshold(coord_model):
    """Same seed -> same 4 samples; voting with threshold 1/4 (union) ⊇ 1/2 ⊇ 1 (intersection),
    and random samples disagree, so the union is strictly larger than the intersection."""
    img = images()[0]
    kw = dict(boxes=[[5.0, 5.0, 60.0, 45.0]], labels=[1], num_samples=4, max_points=6, seed=3)
    union = predict(coord_model, img, "segment", vote_threshold=0.25, **kw).dense()
    half = predict(coord_model, img, "segment", **kw).dense()
    inter = predict(coord_model, img, "segment", vote_threshold=1.0, **kw).dense()
    assert (half <= union).all() and (inter <= half).all()
    assert union.sum() > inter.sum()
    # greedy samples all agree: the voted mask is any one sample's mask
    greedy = dict(kw, greedy=True, seed=None)
    many = predict(coord_model, img, "segment", **greedy).dense()
    one = predict(coord_model, img, "segment", **dict(greedy, num_samples=1)).dense()
    np.testing.assert_array_equal(many, one)


def test_greedy_segment_decodes_one_sequence_per_instance(coord_model, monkeypatch):
    from pix2seq_fast.predictor import engine

    rows = []
    real = engine.run_generate
    monkeypatch.setattr(engine, "run_generate", lambda model, memory, prompts, *a, **k: (
        rows.append(prompts.shape[0]), real(model, memory, prompts, *a, **k))[1])
    boxes = [[5.0, 5.0, 60.0, 45.0], [10.0, 12.0, 30.0, 40.0]]
    predict(coord_model, images()[0], "segment", boxes=boxes, labels=[1, 2], num_samples=8, max_points=6,
            greedy=True)
    predict(coord_model, images()[0], "segment", boxes=boxes, labels=[1, 2], num_samples=8, max_points=6, seed=0)
    assert rows == [2, 16]


def test_segment_uses_own_detections(coord_model):
    imgs = images()
    dets = predict(coord_model, imgs, "detect", max_objects=3, greedy=True)
    segs = predict(coord_model, imgs, "segment", max_objects=3, greedy=True, num_samples=2,
                   max_points=6)
    for det, seg in zip(dets, segs):
        np.testing.assert_allclose(seg.boxes_xyxy, det.boxes_xyxy)
        np.testing.assert_allclose(seg.scores, det.scores)              # mask score = box score
        assert seg.dense().shape == (len(det), *det.image_size)


def test_segment_batch_equals_one_at_a_time_greedy(coord_model):
    imgs = images()
    boxes = [np.array([[2.0, 3.0, 40.0, 30.0], [10.0, 10.0, 60.0, 45.0]]),
             np.array([[5.0, 5.0, 35.0, 70.0]])]
    labels = [np.array([1, 4]), np.array([2])]
    batched = predict(coord_model, imgs, "segment", boxes=boxes, labels=labels, num_samples=2,
                      max_points=8, greedy=True)
    for img, b, lab, seg in zip(imgs, boxes, labels, batched):
        single = predict(coord_model, img, "segment", boxes=b, labels=lab, num_samples=2,
                         max_points=8, greedy=True)
        np.testing.assert_array_equal(single.dense(), seg.dense())
    # max_sequences splits the instance x sample batch without changing anything
    split = predict(coord_model, imgs, "segment", boxes=boxes, labels=labels, num_samples=2,
                    max_points=8, greedy=True, max_sequences=3)
    for a, b in zip(split, batched):
        assert a.masks == b.masks


def test_segment_no_instances(coord_model):
    out = predict(coord_model, images()[0], "segment", boxes=np.zeros((0, 4)), labels=[])
    assert len(out) == 0 and out.dense().shape == (0, 50, 70)


def test_keypoints_with_caller_boxes(coord_model):
    img = images()[1]                                   # 80 x 40
    boxes = [[5.0, 10.0, 30.0, 70.0], [0.0, 0.0, 40.0, 80.0]]
    out = predict(coord_model, img, "keypoints", boxes=boxes, seed=0)
    assert isinstance(out, Keypoints) and out.keypoints.shape == (2, 17, 3)
    np.testing.assert_array_equal(out.labels, [1, 1])   # person category by default
    x, y, v = out.keypoints[..., 0], out.keypoints[..., 1], out.keypoints[..., 2]
    assert ((x >= 0) & (x <= 40) & (y >= 0) & (y <= 80)).all()
    assert set(np.unique(v)) <= {0.0, 2.0} and (v == 2).any()
    assert ((out.scores > 0) & (out.scores <= 1)).all()
    json.dumps(out.to_coco(3))


def test_keypoints_no_persons(coord_model):
    out = predict(coord_model, images(), "keypoints", boxes=[np.zeros((0, 4)), np.zeros((0, 4))])
    assert [len(k) for k in out] == [0, 0] and out[0].keypoints.shape == (0, 17, 3)


def test_keypoints_batch_and_crop_chunks_equal_single_greedy(coord_model):
    imgs = images()
    boxes = [np.array([[5.0, 5.0, 40.0, 45.0], [30.0, 0.0, 70.0, 50.0]]),
             np.array([[5.0, 10.0, 30.0, 70.0]])]
    batched = predict(coord_model, imgs, "keypoints", boxes=boxes, greedy=True)
    chunked = predict(coord_model, imgs, "keypoints", boxes=boxes, greedy=True, max_crops=1)
    for img, b, kp, ck in zip(imgs, boxes, batched, chunked):
        single = predict(coord_model, img, "keypoints", boxes=b, greedy=True)
        np.testing.assert_allclose(single.keypoints, kp.keypoints, atol=1e-3)
        np.testing.assert_allclose(ck.keypoints, kp.keypoints, atol=1e-3)


def test_keypoints_from_person_detections(coord_model):
    imgs = images()
    dets = predict(coord_model, imgs, "detect", max_objects=4, greedy=True)
    person = int(dets[0].labels[0])
    out = predict(coord_model, imgs, "keypoints", max_objects=4, greedy=True, person_category=person)
    for det, kp in zip(dets, out):
        persons = det.labels == person
        assert len(kp) == persons.sum()
        np.testing.assert_allclose(kp.boxes_xyxy, det.boxes_xyxy[persons])
        assert (kp.labels == person).all()


def test_caption(model):
    v = model.config.vocab
    with favour(model, v.text_offset + 3, v.vocab_size, 10.0):
        imgs = images()
        out = predict(model, imgs, "caption", max_length=6, greedy=True)
        assert [type(c) for c in out] == [Caption, Caption]
        assert all(isinstance(c.text, str) and c.text for c in out)
        for img, cap in zip(imgs, out):
            assert predict(model, img, "caption", max_length=6, greedy=True).text == cap.text
        sampled = predict(model, imgs, "caption", max_length=6, seed=1)
        assert all(isinstance(c.text, str) for c in sampled)
        assert out[0].to_coco(4) == [{"image_id": 4, "caption": out[0].text}]


def test_seed_reproducible(coord_model):
    a = predict(coord_model, images(), "detect", max_objects=3, seed=5)
    b = predict(coord_model, images(), "detect", max_objects=3, seed=5)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.boxes_xyxy, y.boxes_xyxy)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(images=[]), ValueError, "empty batch"),
    (dict(images=3), ValueError, "images must be a path"),
    (dict(images=[np.zeros((4, 4, 3), np.uint8), "x", 2.0]), ValueError, r"images\[2\]"),
    (dict(images=np.zeros((4, 4, 5), np.uint8)), ValueError, "images"),
    (dict(images=np.zeros((4, 4, 3), np.float32)), ValueError, "uint8"),
    (dict(images=torch.zeros(3, 4, 4) + 2.0), ValueError, r"\[0, 1\]"),
    (dict(images="/nonexistent/image.png"), FileNotFoundError, "/nonexistent/image.png"),
    (dict(task="classify"), ValueError, "task must be one of"),
    (dict(bogus=1), ValueError, r"unknown option\(s\) \['bogus'\]"),
    (dict(task="caption", max_objects=3), ValueError, "unknown option"),
    (dict(top_p=1.5), ValueError, "top_p"),
    (dict(rule="nucleus"), ValueError, "rule"),
    (dict(boxes=[[0, 0, 1, 1]], labels=[1]), ValueError, "not 'detect'"),
    (dict(task="segment", labels=[1]), ValueError, "without boxes"),
    (dict(task="segment", boxes=[[0, 0, 1, 1]]), ValueError, "labels must be given"),
    (dict(task="segment", boxes=[[0, 0, 1]], labels=[1]), ValueError, r"boxes\[0\]"),
    (dict(task="segment", boxes=[[5, 5, 1, 1]], labels=[1]), ValueError, "x1 >= x0"),
    (dict(task="segment", boxes=[[0, 0, 1, 1]], labels=[1, 2]), ValueError, r"labels\[0\]"),
    (dict(task="keypoints", images=[np.zeros((8, 8), np.uint8)] * 2, boxes=[[[0, 0, 1, 1]]]),
     ValueError, r"one entry per image \(2\)"),
    (dict(task="segment", num_samples=0), ValueError, "num_samples"),
    (dict(batch_size=0), ValueError, "batch_size"),
])
def test_bad_inputs_raise_clearly(model, kwargs, error, match):
    kwargs = dict(kwargs)
    imgs = kwargs.pop("images", np.zeros((8, 8, 3), np.uint8))
    task = kwargs.pop("task", "detect")
    if task != "caption":
        kwargs.setdefault("max_objects", 1)
    with pytest.raises(error, match=match):
        predict(model, imgs, task, **kwargs)


def test_caption_without_tokenizer_raises():
    m = create_model("tiny", image_size=32, enc_layers=1, dec_layers=1).eval()
    with pytest.raises(ValueError, match="tokenizer"):
        predict(m, np.zeros((8, 8, 3), np.uint8), "caption", max_length=2)


def test_missing_checkpoint_dir():
    with pytest.raises(FileNotFoundError, match="/nonexistent/ckpt"):
        pix2seq_fast.Pix2Seq.from_pretrained("/nonexistent/ckpt")
