"""``predict`` never turns non-finite values into results: NaN weights or encodings, NaN / inf caller
scores, and category ids the vocabulary has no class token for are refused with a ``ValueError``
naming the argument; typed results refuse non-finite scores, boxes and keypoints."""
import re

import numpy as np
import pytest
import torch

from pix2seq_fast.model import create_model
from pix2seq_fast.predictor import predict
from pix2seq_fast.results import Detections, InstanceMasks, Keypoints, rle_area

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("tiny", image_size=64, enc_layers=1, dec_layers=1).eval()


IMAGE = np.full((20, 30, 3), 128, np.uint8)


@pytest.mark.parametrize("where", ["decoder", "encoder", "buffer-free bias"])
def test_nan_weights_are_refused(model, where):
    params = dict(model.named_parameters())
    name = next(n for n in params if n.startswith("decoder" if where != "encoder" else "encoder"))
    if where == "buffer-free bias":
        name = "decoder.output_bias"
    saved = params[name].detach().clone()
    with torch.no_grad():
        params[name].view(-1)[0] = float("nan")
    try:
        for task in ("detect", "segment", "keypoints"):
            with pytest.raises(ValueError, match=r"weights are not finite .*" + name.split(".")[0]):
                predict(model, IMAGE, task, max_objects=2)
    finally:
        with torch.no_grad():
            params[name].copy_(saved)
    assert isinstance(predict(model, IMAGE, "detect", max_objects=2, seed=0), Detections)  # restored: runs


def test_nan_encodings_are_refused(model):
    hook = model.encoder.register_forward_hook(lambda _m, _i, out: out * float("nan"))
    try:
        with pytest.raises(ValueError, match="encodings are not finite"):
            predict(model, IMAGE, "detect", max_objects=2)
    finally:
        hook.remove()


@pytest.mark.parametrize("scores, words", [([float("nan")], "scores must be finite"),
                                           ([float("inf")], "scores must be finite")])
def test_caller_scores_must_be_finite(model, scores, words):
    with pytest.raises(ValueError, match=words):
        predict(model, IMAGE, "segment", boxes=[[1, 1, 10, 10]], labels=[3], scores=scores, num_samples=1,
                max_points=4)


def test_category_ids_need_a_class_token(model):
    n = model.config.vocab.num_classes
    cases = [(dict(task="segment", boxes=[[1, 1, 10, 10]], labels=[n]), "labels[0]"),
             (dict(task="segment", boxes=[[1, 1, 10, 10]], labels=[-1]), "labels[0]"),
             (dict(task="detect", categories=(1, n + 5)), "categories"),
             (dict(task="keypoints", person_category=n), "person_category"),
             (dict(task="keypoints", person_category=-3), "person_category")]
    for kwargs, name in cases:
        with pytest.raises(ValueError, match=rf"{re.escape(name)}.*\[0, {n}\)"):
            predict(model, IMAGE, **kwargs)


def test_results_refuse_non_finite_values():
    nan = float("nan")
    with pytest.raises(ValueError, match="scores must be finite"):
        Detections([[0, 0, 1, 1]], [1], [nan], (4, 4))
    with pytest.raises(ValueError, match="boxes_xyxy must be finite"):
        Detections([[0, 0, float("inf"), 1]], [1], [0.5], (4, 4))
    with pytest.raises(ValueError, match="scores must be finite"):
        InstanceMasks([[0, 0, 1, 1]], [1], [nan], [{"size": [4, 4], "counts": "04"}], (4, 4))
    for counts, words in (("\x01garbage", "invalid character"), ("PPP", "middle of a number"), ("0", "sum to")):
        with pytest.raises(ValueError, match=words):  # checked before pycocotools could hang on it
            InstanceMasks([[0, 0, 1, 1]], [1], [0.5], [{"size": [4, 4], "counts": counts}], (4, 4))
    with pytest.raises(ValueError, match="sum to"):
        rle_area({"size": [4, 4], "counts": "02"})
    with pytest.raises(ValueError, match="keypoints must be finite"):
        Keypoints(np.full((1, 17, 3), nan), [[0, 0, 1, 1]], [1], [0.5], (4, 4))
