"""Inference preprocessing: the authors' eval images from tf_parity (bitwise), TF's size rounding,
the resize against torch's antialiased bilinear, every accepted input kind and the errors."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import TF_PARITY, requires_tf_parity
from pix2seq_fast.preprocess import fitted_size, load_image, preprocess_batch, resize_and_pad


@requires_tf_parity
def test_matches_authors_eval_images_bitwise():
    inputs = np.load(TF_PARITY / "tiny_a" / "inputs.npz")
    expected = torch.from_numpy(inputs["images"]).permute(0, 3, 1, 2)
    for i, resized in ((0, (96, 96)), (1, (96, 72))):
        raw = inputs[f"raw_image_{i}"]
        padded, scale = resize_and_pad(load_image(raw), 96)
        assert fitted_size(*raw.shape[:2], 96)[0] == resized
        assert padded.dtype == torch.float32 and padded.shape == (3, 96, 96)
        assert torch.equal(padded, expected[i]), f"image {i}: max diff {(padded - expected[i]).abs().max()}"
    assert scale == pytest.approx(1.2)
    batch, scales, sizes = preprocess_batch([inputs["raw_image_0"], inputs["raw_image_1"]], 96)
    assert torch.equal(batch, expected)
    assert scales.tolist() == [1.0, pytest.approx(1.2)]
    assert sizes.tolist() == [[96, 96], [80, 60]]


@pytest.mark.parametrize("height,width,canvas,expected", [
    (80, 60, 96, (96, 72)),
    (1000, 750, 640, (640, 480)),
    (427, 640, 1333, (889, 1333)),
    (5, 8, 4, (2, 4)),        # 2.5 rounds half to even (TF's tf.round), not up
    (3, 8, 4, (2, 4)),        # 1.5 -> 2
    (480, 640, (480, 960), (480, 640)),
    (1, 1000, 640, (1, 640)),  # never below one pixel
])
def test_fitted_size_uses_tf_rounding(height, width, canvas, expected):
    size, scale = fitted_size(height, width, canvas)
    assert size == expected
    assert np.float32(scale) == scale  # a float32 factor, as TF computes it


@pytest.mark.parametrize("height,width,canvas", [
    (37, 53, 64), (64, 64, 64), (200, 90, 64), (13, 120, 48), (300, 300, 97), (5, 7, 96), (1, 40, 32),
])
def test_resize_agrees_with_torch_antialias(height, width, canvas):
    """Same triangle filter as torch's antialiased bilinear; only float rounding differs (TF, and so
    we, compute sample positions in float32: ulp(300) ~ 3e-5 pixel moves weights by ~1e-5)."""
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(height * width))
    padded, _ = resize_and_pad(image, canvas)
    (new_h, new_w), _ = fitted_size(height, width, canvas)
    reference = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", antialias=True,
                              align_corners=False)[0]
    assert (padded[:, :new_h, :new_w] - reference).abs().max() < 2e-5
    assert torch.all(padded[:, new_h:, :] == np.float32(0.3)) and torch.all(padded[:, :, new_w:] == np.float32(0.3))


def test_constant_image_stays_constant_and_pad_value():
    image = torch.full((3, 50, 31), 0.7)
    padded, scale = resize_and_pad(image, (40, 60), pad_value=0.0)
    (new_h, new_w), _ = fitted_size(50, 31, (40, 60))
    assert padded.shape == (3, 40, 60) and (new_h, new_w) == (40, 25) and scale == pytest.approx(0.8)
    assert (padded[:, :new_h, :new_w] - 0.7).abs().max() < 1e-6
    assert torch.all(padded[:, :, new_w:] == 0)


def test_load_image_kinds(tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    expected = torch.from_numpy(rgb).permute(2, 0, 1).float() * np.float32(1 / 255)
    path = tmp_path / "img.png"
    cv2.imwrite(str(path), rgb[:, :, ::-1])  # OpenCV writes BGR
    for source in (rgb, str(path), path, Image.fromarray(rgb), torch.from_numpy(rgb),
                   torch.from_numpy(rgb).permute(2, 0, 1), expected.clone()):
        loaded = load_image(source)
        assert loaded.dtype == torch.float32 and loaded.shape == (3, 5, 7), type(source)
        assert torch.equal(loaded, expected), type(source)
    rgba = np.concatenate([rgb, np.full((5, 7, 1), 9, np.uint8)], axis=2)
    assert torch.equal(load_image(rgba), expected)
    assert torch.equal(load_image(Image.fromarray(rgba)), expected)
    gray = rgb[:, :, 0]
    for source in (gray, gray[:, :, None], Image.fromarray(gray), torch.from_numpy(gray)):
        loaded = load_image(source)
        assert loaded.shape == (3, 5, 7) and torch.equal(loaded[0], loaded[2]), type(source)
        assert torch.equal(loaded[1], expected[0])
    assert torch.equal(load_image(expected[:1]), expected[:1].expand(3, -1, -1))
    assert load_image(expected.double()).dtype == torch.float32


def test_load_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="image file not found"):
        load_image(tmp_path / "missing.jpg")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(ValueError, match="could not be decoded"):
        load_image(corrupt)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match="could not be decoded"):
        load_image(tmp_path / "empty.png")
    bad = [
        (np.zeros((4, 4, 3), np.float64), "dtype must be uint8"),
        (np.zeros((2, 4, 4, 3), np.uint8), "shape"),
        (np.zeros((4, 4, 2), np.uint8), "channels"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
        (np.zeros(4, np.uint8), "shape"),
        (torch.zeros(4, 4, 4), r"\[3, H, W\]"),
        (torch.zeros(3, 0, 4), "empty"),
        (torch.full((3, 4, 4), 1.5), r"in \[0, 1\]"),
        (torch.full((3, 4, 4), float("nan")), "finite"),
        (torch.zeros(3, 4, 4, dtype=torch.int32), "dtype"),
        ([[0, 1], [2, 3]], "expected a path"),
        (None, "expected a path"),
    ]
    for value, message in bad:
        with pytest.raises(ValueError, match=message):
            load_image(value)


def test_resize_and_pad_errors():
    image = torch.rand(3, 8, 8)
    for canvas in (0, -3, (8,), (8, 8, 8), 8.0, True, (8, 0), "8"):
        with pytest.raises(ValueError, match="canvas"):
            resize_and_pad(image, canvas)
    for bad in (np.zeros((3, 8, 8), np.float32), torch.rand(8, 8), torch.rand(1, 8, 8),
                torch.zeros(3, 8, 8, dtype=torch.uint8), torch.rand(3, 0, 8)):
        with pytest.raises(ValueError, match="image"):
            resize_and_pad(bad, 8)
    with pytest.raises(ValueError, match="images must not be empty"):
        preprocess_batch([], 8)


def test_preprocess_batch_rectangular_canvas():
    images = [np.zeros((10, 20, 3), np.uint8), np.full((30, 10), 255, np.uint8)]
    batch, scales, sizes = preprocess_batch(images, (16, 24))
    assert batch.shape == (2, 3, 16, 24) and batch.dtype == torch.float32
    assert sizes.tolist() == [[10, 20], [30, 10]]
    assert scales.tolist() == [pytest.approx(1.2), pytest.approx(16 / 30)]
    assert torch.all(batch[0, :, :12, :] == 0) and torch.all(batch[0, :, 12:, :] == np.float32(0.3))
    assert (batch[1, :, :, :5] - 1).abs().max() < 1e-6 and torch.all(batch[1, :, :, 5:] == np.float32(0.3))


def test_axis_scales_and_canvas_unit_pixels():
    from pix2seq_fast.preprocess import axis_scales, canvas_hw, canvas_unit_pixels

    # 427x640 -> 640 canvas: scale 1.0 (TF: min(640/427, 640/640)), nothing rounded
    np.testing.assert_allclose(canvas_unit_pixels((427, 640), 640), [640 * 427 / 427, 640.0])
    # 5x8 -> 4: resized (2, 4) (2.5 rounds half to even): y 4 * 5 / 2 = 10, x 4 * 8 / 4 = 8
    np.testing.assert_allclose(canvas_unit_pixels([(5, 8), (8, 5)], 4), [[10.0, 8.0], [8.0, 10.0]])
    np.testing.assert_allclose(axis_scales((100, 300), (21, 64)), [0.21, 64 / 300])
    assert canvas_hw(64) == (64, 64) and canvas_hw([64, 96]) == (64, 96)
    with pytest.raises(ValueError, match="original_hw"):
        axis_scales((0, 5), (1, 1))
    with pytest.raises(ValueError, match="resized_hw"):
        axis_scales((4, 5), (1, 1, 1))
    with pytest.raises(ValueError, match="canvas"):
        canvas_unit_pixels((4, 5), (0, 4))
