"""The segmentation predictor's optional crop to each instance (``SegmentOptions.crop``): the crop
window, the prompt box and the way back to original pixels (hand-computed, with the generation
replaced by fixed tokens), the agreement with the training crop (``augment(person_crop=True)``),
``crop=False`` unchanged, the option's routes (``predict``, ``evaluate_model``, the training
evaluation's ``predictor_options``) and its bad values. Tiny random model, 64 px canvas."""
import copy
import json
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

import pix2seq_fast.predictor as predictor_pkg
from pix2seq_fast.data.augment import AugmentConfig, augment
from pix2seq_fast.data.coco import Instances
from pix2seq_fast.model import create_model
from pix2seq_fast.predictor import SegmentOptions, engine, predict, task_option_names
from pix2seq_fast.predictor import segment as segment_mod
from pix2seq_fast.tasks.segmentation import SegmentationConfig, encode_segmentation

pytestmark = pytest.mark.usefixtures("one_thread")

CANVAS = 64


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("tiny", image_size=CANVAS, enc_layers=1, dec_layers=1).eval()


@pytest.fixture()
def coord_model(model):
    """Coordinate tokens favoured so the random model emits polygons."""
    v = model.config.vocab
    bias = model.decoder.output_bias
    saved = bias.detach().clone()
    with torch.no_grad():
        bias[v.coord_offset:v.coord_offset + v.bins] += 12.0
    yield model
    with torch.no_grad():
        bias.copy_(saved)


class FixedGeneration:
    """Stands in for ``engine.run_generate``: records each call and answers every sequence with the
    same response tokens (PAD after them)."""

    def __init__(self, response):
        self.response = torch.as_tensor(response, dtype=torch.int64)
        self.calls = []

    def __call__(self, model, memory, prompts, prompt_lengths, image_index, max_new_tokens, *args,
                 **kwargs):
        self.calls.append(dict(memory_batch=memory.shape[0], prompts=prompts.cpu().clone(),
                               image_index=image_index.cpu().clone()))
        vocab = engine.model_vocab(model)
        tokens = torch.full((prompts.shape[0], int(max_new_tokens)), vocab.pad, dtype=torch.int64)
        tokens[:, :self.response.numel()] = self.response
        return SimpleNamespace(tokens=tokens.to(prompts.device))


def _square_tokens(vocab, lo_bin, hi_bin):
    """A square ``y x`` polygon with corners at bins lo / hi on both axes."""
    pts = [(lo_bin, lo_bin), (lo_bin, hi_bin), (hi_bin, hi_bin), (hi_bin, lo_bin)]
    return [vocab.coord_offset + b for p in pts for b in p]


def _coco_mask(poly_xy, height, width):
    """pycocotools' rasterisation of one polygon ``[(x, y), ...]``."""
    rle = mask_utils.merge(mask_utils.frPyObjects([np.asarray(poly_xy, np.float64).reshape(-1).tolist()],
                                                  height, width))
    return mask_utils.decode(rle).astype(bool)


# ---- (a) geometry: a polygon in the crop's canvas lands at the right original pixels ----------------------
def test_crop_polygon_maps_to_hand_computed_pixels(model, monkeypatch):
    """Image 80 x 100, box xyxy [40, 20, 60, 60] (yx [20, 40, 60, 60]): crop_to_bbox window y [0, 80),
    x [28, 72) -> crop 80 x 44, on the 64 canvas resized to 64 x 35 (0.8 · 44 = 35.2 -> 35), so one
    canvas unit is 80 px in y and 64 · 44 / 35 px in x, and the crop's origin is x 28, y 0."""
    vocab = model.config.vocab
    q = vocab.bins - 1
    lo_bin, hi_bin = 100, 400
    fake = FixedGeneration(_square_tokens(vocab, lo_bin, hi_bin))
    monkeypatch.setattr(engine, "run_generate", fake)
    image = np.random.default_rng(0).integers(0, 256, (80, 100, 3), dtype=np.uint8)
    box = np.array([[40.0, 20.0, 60.0, 60.0]])
    out = predict(model, image, "segment", boxes=box, labels=[3], num_samples=2, max_points=8,
                  crop=True, seed=0)
    assert out.dense().shape == (1, 80, 100)

    (call,) = fake.calls
    assert call["memory_batch"] == 1                      # one crop encoded
    assert call["image_index"].tolist() == [0, 0]         # both samples attend to the crop
    f_y, f_x = 80.0, 64.0 * 44.0 / 35.0
    want_box = np.array([20 / f_y, (40 - 28) / f_x, 60 / f_y, (60 - 28) / f_x])
    want_tokens = np.round(want_box * q).astype(np.int64) + vocab.coord_offset
    assert call["prompts"][0].tolist() == [vocab.segment_prompt, *want_tokens.tolist(),
                                           vocab.class_offset + 3]

    lo_x, hi_x = 28 + lo_bin / q * f_x, 28 + hi_bin / q * f_x
    lo_y, hi_y = lo_bin / q * f_y, hi_bin / q * f_y
    want = _coco_mask([(lo_x, lo_y), (hi_x, lo_y), (hi_x, hi_y), (lo_x, hi_y)], 80, 100)
    assert want.sum() > 100
    np.testing.assert_array_equal(out.dense()[0], want)
    # without the crop the same tokens mean a different place (whole-image canvas: 64 x 80)
    whole = predict(model, image, "segment", boxes=box, labels=[3], num_samples=2, max_points=8, seed=0)
    assert not np.array_equal(whole.dense()[0], want)


def test_crops_of_several_images_and_chunks(model, monkeypatch):
    """Three instances on two images, each decoded on its own crop and mapped back through it;
    ``max_crops=1`` (one crop per encoding) gives the same masks."""
    vocab = model.config.vocab
    q = vocab.bins - 1
    fake = FixedGeneration(_square_tokens(vocab, 200, 700))
    monkeypatch.setattr(engine, "run_generate", fake)
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 256, (80, 100, 3), dtype=np.uint8), rng.integers(0, 256, (90, 60, 3), dtype=np.uint8)]
    boxes = [np.array([[40.0, 20.0, 60.0, 60.0], [0.0, 0.0, 30.0, 20.0]]), np.array([[10.0, 30.0, 50.0, 80.0]])]
    labels = [np.array([1, 2]), np.array([5])]
    out = predict(model, imgs, "segment", boxes=boxes, labels=labels, num_samples=3, max_points=8,
                  crop=True, seed=0)
    assert [c["memory_batch"] for c in fake.calls] == [3]
    assert fake.calls[0]["image_index"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]

    from pix2seq_fast.preprocess import crop_window, fitted_size  # noqa: PLC0415
    for res, img, b in zip(out, imgs, boxes):
        h, w = img.shape[:2]
        for j, (x0b, y0b, x1b, y1b) in enumerate(b):
            y0, x0, y1, x1 = crop_window(np.array([[y0b, x0b, y1b, x1b]]), h, w)[0]
            (rh, rw), _ = fitted_size(int(y1 - y0), int(x1 - x0), CANVAS)
            f_y, f_x = CANVAS * (y1 - y0) / rh, CANVAS * (x1 - x0) / rw
            ys = [y0 + 200 / q * f_y, y0 + 700 / q * f_y]
            xs = [x0 + 200 / q * f_x, x0 + 700 / q * f_x]
            want = _coco_mask([(xs[0], ys[0]), (xs[1], ys[0]), (xs[1], ys[1]), (xs[0], ys[1])], h, w)
            np.testing.assert_array_equal(res.dense()[j], want)

    fake.calls.clear()
    split = predict(model, imgs, "segment", boxes=boxes, labels=labels, num_samples=3, max_points=8,
                    crop=True, seed=0, max_crops=1, max_sequences=2)
    assert [c["memory_batch"] for c in fake.calls] == [1, 1, 1, 1, 1, 1]
    for a, b in zip(split, out):
        assert a.masks == b.masks


# ---- (b) the training crop is the inference crop ------------------------------------------------------------
def test_training_targets_map_back_through_the_predictor_crop(model, monkeypatch):
    """A pentagon instance in a 90 x 120 image: the training example (person_crop, no jitter, no flip)
    has the prompt the predictor builds from the instance's pixel box, and its target polygon tokens,
    fed back as the generation, come out at the original polygon within one bin per axis."""
    vocab = model.config.vocab
    poly_yx = np.array([[30.0, 50.0], [34.5, 81.25], [60.0, 90.0], [71.0, 62.0], [52.0, 44.5]], np.float32)
    box_yx = np.concatenate([poly_yx.min(0), poly_yx.max(0)])
    image = np.random.default_rng(2).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    inst = Instances(box_yx[None].astype(np.float32), np.array([7]), np.array([False]), [[poly_yx]],
                     np.zeros((1, 17, 3), np.float32), np.array([1]), [None])
    cfg = AugmentConfig(CANVAS, scale_range=(1.0, 1.0), flip_prob=0.0, person_crop=True)
    aug = augment(image, inst, np.random.default_rng(0), cfg, focus=0, with_polygons=True)
    assert aug.focus == 0 and not aug.flipped
    seq = encode_segmentation(aug.instances.boxes[0], 7, aug.instances.polygons[0], np.random.default_rng(0),
                              vocab, SegmentationConfig(max_points=8, start_vertex="given"))
    train_prompt = np.concatenate([seq.input[:1], seq.target[:5]])
    response = seq.target[5:5 + 2 * len(poly_yx)]
    assert vocab.is_coord(torch.from_numpy(response)).all()

    fake = FixedGeneration(response)
    monkeypatch.setattr(engine, "run_generate", fake)
    captured = []
    real_vote = segment_mod._vote
    monkeypatch.setattr(segment_mod, "_vote", lambda packed, *a: captured.append(packed) or real_vote(packed, *a))
    box_xyxy = box_yx[[1, 0, 3, 2]][None].astype(np.float64)
    predict(model, image, "segment", boxes=box_xyxy, labels=[7], num_samples=1, max_points=8, crop=True)

    # the same window: the training offset is the predictor crop's top-left corner
    from pix2seq_fast.predictor.geometry import person_crops  # noqa: PLC0415
    x0, y0, x1, y1 = person_crops(torch.from_numpy(box_xyxy), 90, 120)[0].tolist()
    assert aug.offset == (float(y0), float(x0))
    # the same canvas mapping: identical prompt tokens
    assert fake.calls[0]["prompts"][0].tolist() == train_prompt.tolist()
    (packed,) = captured
    back_xy = packed.coords.numpy()
    assert back_xy.shape == (len(poly_yx), 2)
    bin_px = np.array([CANVAS / aug.scale[1], CANVAS / aug.scale[0]]) / (vocab.bins - 1)  # x, y
    err = np.abs(back_xy - poly_yx[:, ::-1])
    assert (err <= bin_px + 1e-4).all(), (err, bin_px)


# ---- (c) crop=False is the former whole-image path -----------------------------------------------------------
def _former_segment(model, images, boxes, labels, k, max_points, seed):
    """The whole-image pipeline as it was before the crop option (sampling with a seeded generator)."""
    from pix2seq_fast.ops import rasterize_vote  # noqa: PLC0415
    from pix2seq_fast.predictor.geometry import pixel_boxes_to_canvas, pixel_factors  # noqa: PLC0415
    from pix2seq_fast.predictor.inputs import load_images, to_canvas  # noqa: PLC0415
    from pix2seq_fast.predictor.options import DecodeOptions  # noqa: PLC0415
    from pix2seq_fast.tasks.segmentation import decode_segmentation_packed, segmentation_prompt  # noqa: PLC0415

    vocab = model.config.vocab
    decode = DecodeOptions(seed=seed)
    generator = decode.generator(engine.model_device(model))
    imgs, _ = load_images(images)
    batch = to_canvas(imgs, engine.model_canvas(model), engine.model_device(model))
    memory = engine.encode(model, batch.pixels)
    counts = [len(b) for b in boxes]
    image_of = torch.repeat_interleave(torch.arange(len(boxes)), torch.tensor(counts))
    factors = pixel_factors(batch.sizes, engine.model_canvas(model))[image_of]
    boxes_px = torch.cat([torch.as_tensor(b, dtype=torch.float32) for b in boxes])
    canvas_boxes = pixel_boxes_to_canvas(boxes_px, factors).clamp_(0.0, 1.0)
    prompts = segmentation_prompt(canvas_boxes, torch.cat([torch.as_tensor(lab) for lab in labels]), vocab)
    prompts = prompts.repeat_interleave(k, dim=0)
    out = engine.run_generate(model, memory, prompts, torch.full((prompts.shape[0],), 6), image_of.repeat_interleave(k),
                              2 * max_points, decode.sampling_config(0.8), decode, stop_on_eos=True,
                              generator=generator)
    packed = segment_mod.pack_samples(segment_mod.concat_packed([decode_segmentation_packed(out.tokens, vocab)]), k,
                                      factors.repeat_interleave(k, dim=0))
    sizes = torch.tensor([tuple(int(s) for s in im.shape[1:]) for im in imgs])[image_of]
    return rasterize_vote(packed, sizes[:, 0].contiguous(), sizes[:, 1].contiguous(), threshold=0.5,
                          mode="coco", output="rle")


def _text_rle(rle):
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.decode() if isinstance(counts, bytes) else counts}


def test_crop_false_is_the_former_path(coord_model):
    rng = np.random.default_rng(3)
    imgs = [rng.integers(0, 256, (50, 70, 3), dtype=np.uint8), rng.integers(0, 256, (80, 40, 3), dtype=np.uint8)]
    boxes = [np.array([[2.0, 3.0, 40.0, 30.0], [10.0, 10.0, 60.0, 45.0]]), np.array([[5.0, 5.0, 35.0, 70.0]])]
    labels = [np.array([1, 4]), np.array([2])]
    want = _former_segment(coord_model, imgs, boxes, labels, k=3, max_points=8, seed=5)
    for extra in ({}, {"crop": False}, {"crop": False, "crop_padding": 1.0, "max_crops": 1}):
        out = predict(coord_model, imgs, "segment", boxes=boxes, labels=labels, num_samples=3, max_points=8,
                      seed=5, **extra)
        assert [_text_rle(m) for res in out for m in res.masks] == [_text_rle(m) for m in want]
    assert mask_utils.area(want).sum() > 0              # the comparison is not between empty masks


def test_crop_true_runs_on_a_real_model_and_on_detected_boxes(coord_model):
    rng = np.random.default_rng(4)
    imgs = [rng.integers(0, 256, (50, 70, 3), dtype=np.uint8), rng.integers(0, 256, (80, 40, 3), dtype=np.uint8)]
    dets = predict(coord_model, imgs, "detect", max_objects=2, greedy=True)
    segs = predict(coord_model, imgs, "segment", max_objects=2, greedy=True, num_samples=2, max_points=6,
                   crop=True)
    for det, seg in zip(dets, segs):                    # the crops are those of the detected boxes
        np.testing.assert_allclose(seg.boxes_xyxy, det.boxes_xyxy)
        np.testing.assert_allclose(seg.scores, det.scores)
        assert seg.dense().shape == (len(det), *det.image_size)
    # batched crops equal one image at a time
    boxes = [np.array([[2.0, 3.0, 40.0, 30.0]]), np.array([[5.0, 5.0, 35.0, 70.0], [0.0, 0.0, 40.0, 80.0]])]
    labels = [np.array([1]), np.array([2, 3])]
    both = predict(coord_model, imgs, "segment", boxes=boxes, labels=labels, num_samples=2, max_points=6,
                   greedy=True, crop=True)
    for img, b, lab, res in zip(imgs, boxes, labels, both):
        single = predict(coord_model, img, "segment", boxes=b, labels=lab, num_samples=2, max_points=6,
                         greedy=True, crop=True)
        assert single.masks == res.masks
    empty = predict(coord_model, imgs[0], "segment", boxes=np.zeros((0, 4)), labels=[], crop=True)
    assert len(empty) == 0 and empty.dense().shape == (0, 50, 70)


# ---- routes: evaluate_model and the training evaluation ------------------------------------------------------
def test_evaluate_model_routes_crop(coord_model, tmp_path, monkeypatch):
    model = coord_model
    assert {"crop", "crop_padding", "max_crops"} <= task_option_names("segment")
    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "annotations").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "val" / "a.png"), np.full((48, 64, 3), 90, np.uint8))
    poly = [10, 10, 40, 10, 40, 30, 10, 30]
    data = dict(images=[dict(id=1, file_name="a.png", height=48, width=64)],
                annotations=[dict(id=1, image_id=1, category_id=1, bbox=[10, 10, 30, 20], area=600.0,
                                  iscrowd=0, segmentation=[poly])],
                categories=[dict(id=1, name="thing")])
    (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps(data))
    seen = []
    real = predictor_pkg.segment_crops
    monkeypatch.setattr(predictor_pkg, "segment_crops",
                        lambda *a, **kw: seen.append(a[4].crop_padding) or real(*a, **kw))
    from pix2seq_fast.predictor.coco_run import evaluate_model  # noqa: PLC0415
    for given in (True, False):
        metrics = evaluate_model(model, tmp_path, "val", tasks=["segment"], progress=False, given_boxes=given,
                                 task_options={"crop": True, "crop_padding": 0.25, "num_samples": 1,
                                               "max_points": 4, "max_objects": 2}, seed=0)
        assert "AP" in metrics["segment"]
    assert seen == [0.25, 0.25]
    evaluate_model(model, tmp_path, "val", tasks=["segment"], progress=False, given_boxes=True,
                   task_options={"num_samples": 1, "max_points": 4}, seed=0)
    assert len(seen) == 2                                # crop off by default


def test_a_model_trained_on_crops_segments_on_crops(tmp_path, model, monkeypatch):
    from train_helpers import tiny_config  # noqa: PLC0415

    from pix2seq_fast.predictor import segment as segment_module  # noqa: PLC0415
    from pix2seq_fast.training.evaluation import predictor_options  # noqa: PLC0415
    from pix2seq_fast.training.model_setup import model_config  # noqa: PLC0415

    assert model_config(tiny_config(tmp_path, tmp_path)).segment_crop is False
    cropped = tiny_config(tmp_path, tmp_path, augment={"segment": {"person_crop": True}})
    assert model_config(cropped).segment_crop is True
    assert "crop" not in predictor_options(cropped, "segment")[1]   # the model's config decides
    other = tiny_config(tmp_path, tmp_path, augment={"keypoints": {"person_crop": True}})
    assert model_config(other).segment_crop is False
    off = tiny_config(tmp_path, tmp_path, eval_options={"segment": {"crop": False}})
    assert predictor_options(off, "segment")[1]["crop"] is False

    calls = []
    real = segment_module.segment_crops
    monkeypatch.setattr("pix2seq_fast.predictor.segment_crops",
                        lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    kw = dict(boxes=[[4.0, 4.0, 40.0, 30.0]], labels=[1], num_samples=1, max_points=4, greedy=True)
    image = np.zeros((48, 48, 3), np.uint8)
    predict(model, image, "segment", **kw)
    assert calls == []                                       # segment_crop False: whole image
    crop_model = copy.deepcopy(model)
    crop_model.config = crop_model.config.replace(segment_crop=True)
    predict(crop_model, image, "segment", **kw)
    assert calls == [1]
    predict(crop_model, image, "segment", crop=False, **kw)  # an explicit option wins
    assert calls == [1]


# ---- (d) bad option values ---------------------------------------------------------------------------------
@pytest.mark.parametrize("options, name", [
    ({"crop": "yes"}, "crop"), ({"crop": 1}, "crop"),
    ({"crop_padding": -0.5}, "crop_padding"), ({"crop_padding": float("nan")}, "crop_padding"),
    ({"crop_padding": "wide"}, "crop_padding"), ({"crop_padding": True}, "crop_padding"),
    ({"max_crops": 0}, "max_crops"),
])
def test_bad_crop_options(model, options, name):
    with pytest.raises(ValueError, match=name):
        SegmentOptions(**options)
    with pytest.raises(ValueError, match=name):
        predict(model, np.zeros((20, 30, 3), np.uint8), "segment", boxes=[[1.0, 1.0, 10.0, 10.0]], labels=[1],
                **options)


def test_segment_batch_refuses_crop(model):
    with pytest.raises(ValueError, match="segment_crops"):
        segment_mod.segment_batch(model, None, torch.zeros(1, 1, 1), [], None, SegmentOptions(crop=True))
