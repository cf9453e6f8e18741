"""Predictor coordinate maps: canvas <-> pixels per axis (the authors' ``canvas · original /
unpadded``), the authors' ``crop_to_bbox`` windows, keypoint tokens -> image pixels, decoded polygons ->
packed pixel polygons. Every expected number below is worked out by hand in the comments."""
import numpy as np
import pytest
import torch

from pix2seq_fast.predictor.geometry import (canvas_boxes_to_pixels, canvas_points_to_pixels,
                                             person_crops, pixel_boxes_to_canvas, pixel_factors)
from pix2seq_fast.predictor.keypoints import keypoints_to_pixels
from pix2seq_fast.predictor.segment import concat_packed, pack_samples
from pix2seq_fast.preprocess import axis_scales, canvas_unit_pixels, crop_window, fitted_size
from pix2seq_fast.tasks.segmentation import decode_segmentation_packed
from pix2seq_fast.vocab import Vocab

VOCAB = Vocab(bins=101, text_vocab_size=0)  # q / 100: quarter and half positions are exact


def test_factors_use_the_rounded_resized_size_per_axis():
    # 100x300 onto a 64 canvas: TF's scale 64/300 = 0.21333; resized (rint(21.33), 64) = (21, 64).
    # y: 64 * 100 / 21 = 304.7619 pixels per canvas unit; x: 64 * 300 / 64 = 300 (the unrounded
    # scale would give 300 on both axes).
    assert fitted_size(100, 300, 64)[0] == (21, 64)
    np.testing.assert_allclose(canvas_unit_pixels((100, 300), 64), [6400 / 21, 300.0], rtol=1e-12)
    f = pixel_factors([(100, 300), (300, 100)], 64)
    assert f.dtype == torch.float64 and f.shape == (2, 2)
    torch.testing.assert_close(f, torch.tensor([[6400 / 21, 300.0], [300.0, 6400 / 21]], dtype=torch.float64))
    # non-square canvas 64x96, image 61x80: scale min(64/61, 96/80) = 1.04918; resized (64, rint(83.93))
    # = (64, 84): y 64 * 61 / 64 = 61, x 96 * 80 / 84 = 91.4286
    np.testing.assert_allclose(canvas_unit_pixels((61, 80), (64, 96)), [61.0, 96 * 80 / 84], rtol=1e-12)


def test_training_targets_map_back_to_the_same_pixels():
    """A row at y = 50.5 of a 100x300 image: the training path puts it at 50.5 · 21/100 / 64 on the
    canvas (``axis_scales`` of the rounded resize); inference maps that back to 50.5 within 1e-4 px
    (the unrounded scale would give 49.73, 0.77 px off)."""
    sy, sx = axis_scales((100, 300), (21, 64))
    canvas_yx = torch.tensor([[[50.5 * sy / 64, 123.25 * sx / 64]]], dtype=torch.float32)
    back = canvas_points_to_pixels(canvas_yx, pixel_factors([(100, 300)], 64)[0])
    torch.testing.assert_close(back, torch.tensor([[[123.25, 50.5]]]), atol=1e-4, rtol=0)
    assert abs(float(canvas_yx[0, 0, 0]) * 64 / fitted_size(100, 300, 64)[1] - 50.5) > 0.7


def test_canvas_boxes_to_pixels_known_values():
    # image 100x300 on a 64 canvas: factors (6400/21, 300)
    f = pixel_factors([(100, 300)], 64)[0]
    boxes = torch.tensor([[0.21, 0.25, 0.3, 0.5]])  # y x y x
    px = canvas_boxes_to_pixels(boxes, f, 100, 300)
    torch.testing.assert_close(px, torch.tensor([[75.0, 64.0, 150.0, 6400 / 21 * 0.3]]))
    # beyond the image (the padding) is clipped to the image
    px = canvas_boxes_to_pixels(torch.tensor([[0.5, 0.5, 1.0, 1.0]]), f, 100, 300)
    torch.testing.assert_close(px, torch.tensor([[150.0, 100.0, 300.0, 100.0]]))


@pytest.mark.parametrize("size", [(100, 300), (37, 53), (480, 640), (1, 40)])
def test_pixel_canvas_round_trip(size):
    g = torch.Generator().manual_seed(0)
    xy0 = torch.rand(5, 2, generator=g) * 20
    boxes = torch.cat([xy0, xy0 + torch.rand(5, 2, generator=g) * 20], 1)
    f = pixel_factors([size], 96)[0]
    canvas = pixel_boxes_to_canvas(boxes, f)
    back = canvas_boxes_to_pixels(canvas, f, 10_000, 10_000)
    torch.testing.assert_close(back, boxes, atol=1e-4, rtol=0)
    per_box = pixel_boxes_to_canvas(boxes, f.expand(5, 2))
    torch.testing.assert_close(per_box, canvas)
    with pytest.raises(ValueError, match="factors"):
        pixel_boxes_to_canvas(boxes, f.expand(4, 2))


def test_canvas_points_with_offset():
    pts = torch.tensor([[[0.25, 0.5], [0.0, 0.0]]])  # y x
    out = canvas_points_to_pixels(pts, torch.tensor([[128.0, 100.0]]), torch.tensor([[40.0, 20.0]]))
    torch.testing.assert_close(out, torch.tensor([[[40 + 50.0, 20 + 32.0], [40.0, 20.0]]]))


# crop_to_bbox by hand, image 80 (H) x 100 (W): y uses (H - 1) = 79, x uses (W - 1) = 99.
CROP_CASES = [
    # inside: y 0.25·79 = 19.75 -> 19, 0.75·79 = 59.25 -> 60, size 42, pad 21 -> [0, 79];
    #         x 0.4·99 = 39.6 -> 39, 0.6·99 = 59.4 -> 60, size 22, pad 11 -> [28, 71]
    ([40.0, 20.0, 60.0, 60.0], [28, 0, 72, 80]),
    # small 2x2 box: y 9.875 -> 9, 11.85 -> 12, size 4, pad 2 -> [7, 14]; x 9.9 -> 9, 11.88 -> 12
    # -> [7, 14]: 8x8 pixels (a literal "twice the box" gives 4x4)
    ([10.0, 10.0, 12.0, 12.0], [7, 7, 15, 15]),
    # touching the top-left corner: y 0, 9.875 -> 10, size 11, pad 5 -> [0, 15]; x 0, 9.9 -> 10
    ([0.0, 0.0, 10.0, 10.0], [0, 0, 16, 16]),
    # touching the bottom-right corner: y 59.25 -> 59, 79, size 21, pad 10 -> [49, 79];
    #         x 0.9·99 = 89.1 -> 89, 99, size 11, pad 5 -> [84, 99]
    ([90.0, 60.0, 100.0, 80.0], [84, 49, 100, 80]),
    # filling the image: [0, 79] x [0, 99], pad 40 / 50, clamped
    ([0.0, 0.0, 100.0, 80.0], [0, 0, 100, 80]),
    # degenerate point: y 0.625·79 = 49.375 -> 49, 50, size 2, pad 1 -> [48, 51]; x 49.5 -> 49, 50
    ([50.0, 50.0, 50.0, 50.0], [48, 48, 52, 52]),
]


def test_person_crops_are_the_authors_crop_to_bbox():
    boxes = torch.tensor([b for b, _ in CROP_CASES])
    crops = person_crops(boxes, height=80, width=100)
    assert crops.dtype == torch.int64
    assert crops.tolist() == [w for _, w in CROP_CASES]
    # the same windows as the training crop (y first there)
    yx = crop_window(boxes[:, [1, 0, 3, 2]].numpy(), 80, 100)
    assert yx[:, [1, 0, 3, 2]].tolist() == crops.tolist()
    assert person_crops(torch.zeros(0, 4), 80, 100).shape == (0, 4)


def test_crop_window_errors():
    with pytest.raises(ValueError, match="boxes"):
        crop_window(np.zeros((2, 3)), 8, 8)
    with pytest.raises(ValueError, match="boxes"):
        crop_window(np.array([[5.0, 0, 4, 1]]), 8, 8)  # ymax < ymin
    with pytest.raises(ValueError, match="boxes"):
        crop_window(np.array([[np.nan, 0, 4, 1]]), 8, 8)
    with pytest.raises(ValueError, match="height and width"):
        crop_window(np.zeros((1, 4)), 0, 8)
    with pytest.raises(ValueError, match="pad_scale"):
        crop_window(np.zeros((1, 4)), 8, 8, pad_scale=-1)


def _coord(v):
    return VOCAB.coord_offset + int(round(v * (VOCAB.bins - 1)))


def test_keypoint_tokens_map_to_known_pixels():
    """Hand-made keypoint sequence of a crop at x 40, y 20 whose canvas unit is 128 crop pixels
    along y and 100 along x."""
    tokens = torch.full((1, 34), _coord(0.5))
    tokens[0, 0:2] = torch.tensor([_coord(0.25), _coord(0.5)])      # point 0 at y .25, x .5
    tokens[0, 2:4] = VOCAB.invisible                                 # point 1: INVISIBLE
    tokens[0, 4:6] = VOCAB.pad                                       # point 2: nothing recorded
    coord_lp = torch.full((1, 34, VOCAB.bins), -5.0)
    coord_lp[0, 2, 10] = -0.1                                        # best coordinate y = 0.10
    coord_lp[0, 3, 20] = -0.1                                        # best coordinate x = 0.20
    coord_lp[0, 4:6] = float("-inf")
    token_lp = torch.full((1, 34), -0.5)
    windows = torch.tensor([[40, 20, 168, 148]])
    box = torch.tensor([[72.0, 52.0, 136.0, 116.0]])
    out, scores = keypoints_to_pixels(tokens, coord_lp, token_lp, VOCAB, torch.tensor([[128.0, 100.0]]),
                                      windows, box, torch.tensor([[300, 400]]))
    assert out.shape == (1, 17, 3)
    torch.testing.assert_close(out[0, 0], torch.tensor([40 + 0.5 * 100, 20 + 0.25 * 128, 2.0]))
    torch.testing.assert_close(out[0, 1], torch.tensor([40 + 0.2 * 100, 20 + 0.1 * 128, 2.0]))
    torch.testing.assert_close(out[0, 2], torch.tensor([104.0, 84.0, 0.0]))  # box centre, v = 0
    torch.testing.assert_close(out[0, 3], torch.tensor([90.0, 84.0, 2.0]))
    # mean likelihood over the 32 non-PAD tokens
    torch.testing.assert_close(scores, torch.tensor([float(np.exp(-0.5))]))


def test_keypoints_clipped_to_image():
    tokens = torch.full((1, 34), _coord(1.0))
    out, _ = keypoints_to_pixels(tokens, None, torch.zeros(1, 34), VOCAB, torch.tensor([[256.0, 256.0]]),
                                 torch.tensor([[10, 10, 20, 20]]), torch.tensor([[12.0, 12, 18, 18]]),
                                 torch.tensor([[50, 60]]))
    torch.testing.assert_close(out[0, :, :2], torch.tensor([60.0, 50.0]).expand(17, 2))


def test_pack_samples_matches_nested_rasterisation():
    from pix2seq_fast.ops import rasterize_vote

    square = torch.tensor([[0.1, 0.1], [0.1, 0.5], [0.5, 0.5], [0.5, 0.1]])  # y x
    tri = torch.tensor([[0.6, 0.6], [0.9, 0.6], [0.9, 0.9]])
    # instance 0: 2 samples (square; square + triangle); instance 1: 2 samples (nothing; triangle)
    polygons = [[square], [square, tri], [], [tri]]
    factors = torch.tensor([[128.0, 100.0], [128.0, 100.0], [256.0, 200.0], [256.0, 200.0]],
                           dtype=torch.float64)  # (f_y, f_x) per sequence
    tokens = torch.stack([_segment_tokens(seq) for seq in polygons])
    decoded = decode_segmentation_packed(tokens, VOCAB)
    halves = concat_packed([decode_segmentation_packed(tokens[:1], VOCAB),
                            decode_segmentation_packed(tokens[1:], VOCAB)])
    for a, b in zip(halves, decoded):
        torch.testing.assert_close(a, b)
    packed = pack_samples(decoded, 2, factors)
    assert packed.instance_offsets.tolist() == [0, 2, 4]
    assert packed.sample_offsets.tolist() == [0, 1, 3, 3, 4]
    assert packed.part_offsets.tolist() == [0, 4, 8, 11, 14]
    got = rasterize_vote(packed, torch.tensor([40, 260]), torch.tensor([60, 250]), output="mask",
                         backend="ref")

    def nested(seq, f):
        return [(p.flip(-1).double() * f.flip(-1)).reshape(-1).tolist() for p in seq]

    want = rasterize_vote([[nested(polygons[0], factors[0]), nested(polygons[1], factors[1])],
                           [nested(polygons[2], factors[2]), nested(polygons[3], factors[3])]],
                          [40, 260], [60, 250], output="mask", backend="ref")
    for g, w in zip(got, want):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    assert np.asarray(got[0]).sum() > 0 and np.asarray(got[1]).sum() > 0


def _segment_tokens(parts, length=24):
    """Response tokens of a sequence holding ``parts`` (``[k, 2]`` y x), PAD-terminated."""
    pieces = []
    for i, p in enumerate(parts):
        if i:
            pieces += [VOCAB.separator, VOCAB.separator]
        pieces += VOCAB.quantize(p).reshape(-1).tolist()
    return torch.tensor(pieces + [VOCAB.pad] * (length - len(pieces)))


def test_pack_samples_all_empty():
    from pix2seq_fast.tasks.segmentation import decode_segmentation_packed

    decoded = decode_segmentation_packed(torch.zeros(2, 6, dtype=torch.int64), VOCAB)
    packed = pack_samples(decoded, 2, torch.ones(2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="factors"):
        pack_samples(decoded, 2, torch.ones(2, dtype=torch.float64))
    assert packed.coords.shape == (0, 2)
    assert packed.sample_offsets.tolist() == [0, 0, 0]
