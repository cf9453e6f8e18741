"""Odd and broken images, for training (``CocoInstances.load_image``) and for ``predict``'s input
loader: 16-bit scaled to 8 bits (v / 257), float pixels refused unless a [3, H, W] float tensor,
ambiguous CHW / HWC uint8 tensors refused, oversize images refused before decoding, each with a
``ValueError`` naming the image."""
import json
import struct
import zlib

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from pix2seq_fast.data.coco import CocoInstances, ImageReadError, decode_image
from pix2seq_fast.data.validate import MAX_IMAGE_PIXELS
from pix2seq_fast.predictor.inputs import load_images


def _png_with_size(path, height, width):
    """A PNG whose header claims ``height x width`` (8-bit gray) with a one-row body: a bomb header."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" + b"\x00" * width)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A folder of odd image files and a COCO file naming them."""
    root = tmp_path_factory.mktemp("bad_images")
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 65536, (6, 7, 3), dtype=np.uint16)
    gray16 = rng.integers(0, 65536, (5, 4), dtype=np.uint16)
    cv2.imwrite(str(root / "rgb16.png"), wide[:, :, ::-1])  # opencv writes BGR
    cv2.imwrite(str(root / "gray16.png"), gray16)
    cv2.imwrite(str(root / "float.tiff"), rng.random((4, 4, 3)).astype(np.float32))
    (root / "truncated.png").write_bytes((root / "rgb16.png").read_bytes()[:40])
    (root / "text.png").write_text("not an image")
    _png_with_size(root / "bomb.png", 20000, 20000)
    files = {"rgb16.png": (6, 7), "gray16.png": (5, 4), "float.tiff": (4, 4), "truncated.png": (6, 7),
             "text.png": (6, 7), "bomb.png": (6, 7)}  # the bomb lies in its header
    coco = {"images": [{"id": i + 1, "file_name": name, "height": h, "width": w}
                       for i, (name, (h, w)) in enumerate(files.items())],
            "categories": [{"id": 1, "name": "thing"}], "annotations": []}
    (root / "instances.json").write_text(json.dumps(coco))
    return {"root": root, "rgb16": wide, "gray16": gray16, "ids": {n: i + 1 for i, n in enumerate(files)}}


def _to8(values):
    return np.floor(values.astype(np.float64) / 257 + 0.5).astype(np.uint8)


def test_sixteen_bit_files_are_scaled_not_clipped(images):
    root = images["root"]
    ds = CocoInstances(root / "instances.json", root)
    np.testing.assert_array_equal(ds.load_image(images["ids"]["rgb16.png"]), _to8(images["rgb16"]))
    np.testing.assert_array_equal(decode_image(root / "rgb16.png"), _to8(images["rgb16"]))
    gray = ds.load_image(images["ids"]["gray16.png"])
    np.testing.assert_array_equal(gray, np.repeat(_to8(images["gray16"])[:, :, None], 3, axis=2))
    assert gray.max() < 255 or images["gray16"].max() > 65407  # not the clip of the old reader
    loaded, _ = load_images([str(root / "rgb16.png")])  # predict reads files the same way
    expected = torch.from_numpy(_to8(images["rgb16"])).permute(2, 0, 1).float() * np.float32(1 / 255)
    torch.testing.assert_close(loaded[0], expected)


@pytest.mark.parametrize("name, words", [("float.tiff", "floating-point pixels are refused"),
                                         ("truncated.png", "cannot be decoded"),
                                         ("text.png", "cannot be decoded"),
                                         ("bomb.png", f"20000x20000 pixels exceeds the limit of {MAX_IMAGE_PIXELS}")])
def test_broken_files_name_the_file(images, name, words):
    root = images["root"]
    ds = CocoInstances(root / "instances.json", root)
    with pytest.raises(ImageReadError) as err:
        ds.load_image(images["ids"][name])
    assert str(root / name) in str(err.value) and words in str(err.value)
    with pytest.raises(ValueError, match=r"images\[0\]: .*" + name.replace(".", r"\.")):
        load_images([str(root / name)])


def test_in_memory_images_follow_the_same_rules():
    rng = np.random.default_rng(1)
    sixteen = rng.integers(0, 65536, (5, 6, 3), dtype=np.uint16)
    loaded, _ = load_images([sixteen, Image.fromarray(sixteen[:, :, 0])])
    torch.testing.assert_close(loaded[0], torch.from_numpy(_to8(sixteen)).permute(2, 0, 1).float()
                               * np.float32(1 / 255))
    gray = torch.from_numpy(_to8(sixteen[:, :, 0])).float() * np.float32(1 / 255)
    torch.testing.assert_close(loaded[1], gray.expand(3, -1, -1))
    cases = [
        (Image.fromarray(rng.random((4, 4)).astype(np.float32), mode="F"), "mode F"),
        (rng.random((4, 4, 3)).astype(np.float32), "dtype must be uint8"),
        (torch.zeros(3, 5, 3, dtype=torch.uint8), "ambiguous"),
        (np.broadcast_to(np.zeros(1, np.uint8), (12000, 12000, 3)), "exceeds the limit"),
        (torch.zeros(1, 1, 1).expand(3, 12000, 12000), "exceeds the limit"),
        (torch.full((3, 4, 4), float("nan")), "finite"),
        (torch.full((3, 4, 4), 2.0), "[0, 1]"),
    ]
    for i, (image, words) in enumerate(cases):
        with pytest.raises(ValueError, match=r"images\[1\]") as err:
            load_images([np.zeros((2, 2, 3), np.uint8), image])
        assert words in str(err.value), (i, str(err.value))
    float_tensor = torch.rand(3, 4, 5)
    torch.testing.assert_close(load_images(float_tensor)[0][0], float_tensor)  # taken as is
