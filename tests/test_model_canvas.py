"""A model canvas may be ``[H, W]`` (the authors' configs allow it): config round trip, checkpoints, and
every predictor task on a 64x96 canvas. Also: the checkpoint module does not import the model class."""
import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import pix2seq_fast.model.checkpoint as checkpoint_module
from pix2seq_fast.model import ModelConfig, Pix2Seq, create_model
from pix2seq_fast.predictor import engine

SMALL_VOCAB = dict(class_offset=100, num_classes=50, coord_offset=150, bins=100, text_offset=250, text_vocab_size=6)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_image_size_forms():
    assert ModelConfig(image_size=640).canvas_hw == (640, 640)
    assert ModelConfig(image_size=[96, 96]).image_size == 96            # a square stays a scalar
    config = ModelConfig(image_size=[64, 96])
    assert config.image_size == (64, 96) and config.canvas_hw == (64, 96)
    again = ModelConfig.from_json(config.to_json())
    assert again == config and json.loads(config.to_json())["image_size"] == [64, 96]
    for bad in (0, -3, [64], [64, 0], (64, 96, 3), "640", 64.0, True, [True, 2]):
        with pytest.raises(ValueError, match="image_size"):
            ModelConfig(image_size=bad)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("tiny", enc_layers=1, image_size=(64, 96), max_seq_len=64, vocab=SMALL_VOCAB).eval()


def test_save_pretrained_keeps_both_sides(model, tmp_path):
    model.save_pretrained(tmp_path)
    loaded = Pix2Seq.from_pretrained(tmp_path)
    assert loaded.config.image_size == (64, 96)
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert loaded.encode(image).shape == (1, 4 * 6, 128)
        torch.testing.assert_close(loaded.encode(image), model.encode(image))


@pytest.mark.parametrize("task", ["detect", "segment", "keypoints"])
def test_every_task_runs_on_the_non_square_canvas(model, task, monkeypatch):
    seen = []
    encode = engine.encode
    monkeypatch.setattr(engine, "encode", lambda m, pixels: seen.append(tuple(pixels.shape)) or encode(m, pixels))
    images = [torch.rand(3, 50, 40), torch.rand(3, 30, 120)]
    kwargs = dict(greedy=True)
    if task == "detect":
        kwargs["max_objects"] = 3
    else:
        kwargs.update(boxes=[np.array([[5.0, 5.0, 30.0, 40.0]]), np.array([[10.0, 2.0, 100.0, 28.0]])],
                      labels=[np.array([1]), np.array([1])])
        if task == "segment":
            kwargs.update(num_samples=2, max_points=4)
    results = model.predict(images, task, **kwargs)
    assert all(s[-2:] == (64, 96) for s in seen), seen
    assert [r.image_size for r in results] == [(50, 40), (30, 120)]
    if task == "keypoints":
        for r, (h, w) in zip(results, [(50, 40), (30, 120)]):
            assert r.keypoints.shape == (1, 17, 3)
            assert (r.keypoints[..., 0] <= w).all() and (r.keypoints[..., 1] <= h).all()


def test_checkpoint_module_does_not_import_the_model_class():
    """``model/checkpoint.py`` <-> ``model/pix2seq.py`` was an import circle; now only pix2seq.py
    imports checkpoint.py."""
    tree = ast.parse(Path(checkpoint_module.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "pix2seq_fast.model.pix2seq" not in imported and "pix2seq_fast.model" not in imported
