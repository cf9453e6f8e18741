"""A data set cannot make us read files outside its image folder: ``..`` and absolute ``file_name``s
are refused by the training loaders and by ``evaluate_model`` before any image is read."""
import json

import cv2
import numpy as np
import pytest

from pix2seq_fast.data.coco import CocoCaptions, CocoFormatError, CocoInstances
from pix2seq_fast.data.validate import resolve_image_path
from pix2seq_fast.predictor.coco_run import evaluate_model, image_files


@pytest.fixture()
def layout(tmp_path):
    """data/annotations/*.json, data/images/val/ok.png, and a secret file next to data/."""
    images = tmp_path / "data" / "images" / "val"
    images.mkdir(parents=True)
    (tmp_path / "data" / "annotations").mkdir()
    cv2.imwrite(str(images / "ok.png"), np.zeros((4, 5, 3), np.uint8))
    secret = tmp_path / "secret.png"
    cv2.imwrite(str(secret), np.full((4, 5, 3), 9, np.uint8))
    return tmp_path, images, secret


def _write(tmp_path, file_name, kind="instances"):
    data = {"images": [{"id": 1, "file_name": "ok.png", "height": 4, "width": 5},
                       {"id": 2, "file_name": file_name, "height": 4, "width": 5}],
            "categories": [{"id": 1, "name": "thing"}],
            "annotations": [{"id": 1, "image_id": 2, "category_id": 1, "bbox": [0, 0, 2, 2]}]}
    if kind == "captions":
        data["annotations"] = [{"id": 1, "image_id": 2, "caption": "a secret"}]
    path = tmp_path / "data" / "annotations" / f"{kind}_val.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("name", ["../../secret.png", "sub/../../../secret.png", "ABSOLUTE", "..\\..\\secret.png"])
def test_escaping_file_names_are_refused(layout, name):
    tmp_path, images, secret = layout
    name = str(secret) if name == "ABSOLUTE" else name
    for kind, reader in (("instances", CocoInstances), ("captions", CocoCaptions)):
        path = _write(tmp_path, name, kind)
        with pytest.raises(CocoFormatError) as err:
            reader(path, images)
        message = str(err.value)
        assert str(path) in message and "image id 2" in message and "field 'file_name'" in message
        assert repr(name) in message
    with pytest.raises(ValueError, match="file_name") as err:  # before any prediction: no model needed
        evaluate_model(None, tmp_path / "data", "val", tasks=["detect"])
    assert repr(name) in str(err.value) and "image id 2" in str(err.value)


def test_absolute_names_only_with_the_option(layout):
    tmp_path, images, secret = layout
    path = _write(tmp_path, str(secret))
    ds = CocoInstances(path, images, allow_absolute_paths=True)
    assert ds.load_image(2)[0, 0, 0] == 9
    assert image_files({"images": [{"id": 2, "file_name": str(secret)}]}, images, allow_absolute_paths=True) == [
        str(secret)]
    with pytest.raises(ValueError, match=r"'\.\.' is refused"):  # '..' stays refused even then
        CocoInstances(_write(tmp_path, "../../secret.png"), images, allow_absolute_paths=True)


def test_plain_names_resolve_inside(layout):
    _, images, _ = layout
    assert resolve_image_path(images, "sub/dir/x.png") == images / "sub" / "dir" / "x.png"
    for bad in ("", None, 7, "a\x00b"):
        with pytest.raises(ValueError, match="non-empty string"):
            resolve_image_path(images, bad)
