"""Segmentation codec: prompt + polygon layout, truncation, start vertex, decoding (SPEC §2, §4)."""
import numpy as np
import pytest
import torch

from pix2seq_fast.tasks.segmentation import (SegmentationConfig, decode_segmentation,
                                             decode_segmentation_packed, encode_segmentation,
                                             segmentation_prompt)
from pix2seq_fast.vocab import Vocab

VOCAB = Vocab()
SMALL = Vocab(num_classes=20, class_offset=100, coord_offset=200, bins=100, text_offset=300,
              text_vocab_size=64)
FIXED = SegmentationConfig(start_vertex="given")
BOX = [0.1, 0.2, 0.5, 0.6]
PROMPT = [11, 1100, 1200, 1500, 1599, 103]


def encode(polygons, cfg=FIXED, vocab=VOCAB, seed=0, box=BOX, label=3):
    return encode_segmentation(box, label, polygons, np.random.default_rng(seed), vocab, cfg)


def response_of(seq):
    return seq.target[5:]


def test_hand_made_layout_two_polygons():
    triangle = [[0.1, 0.2], [0.3, 0.4], [0.5, 0.5]]
    other = [[0.2, 0.2], [0.3, 0.3], [0.1, 0.9]]
    seq = encode([np.array(triangle), np.array(other)])
    response = [1100, 1200, 1300, 1400, 1500, 1500, 40, 40, 1200, 1200, 1300, 1300, 1100, 1899]
    np.testing.assert_array_equal(seq.input, PROMPT + response + [0] * 241)
    np.testing.assert_array_equal(seq.target, PROMPT[1:] + response + [0] * 242)
    np.testing.assert_array_equal(seq.weight, np.array([0] * 5 + [1] * 256, np.float32))
    assert seq.input.shape == (261,) and seq.input.dtype == np.int64
    assert seq.weight.dtype == np.float32


def test_flat_yx_arrays_equal_point_arrays():
    pts = np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.5]], np.float32)
    np.testing.assert_array_equal(encode([pts]).target, encode([pts.reshape(-1)]).target)


def test_truncation_at_128_points():
    pts = np.random.default_rng(0).uniform(0, 1, size=(200, 2))
    seq = encode([pts])
    np.testing.assert_array_equal(response_of(seq), VOCAB.quantize(pts[:128]).reshape(-1))
    assert (seq.target != 0).all()


def test_separator_pairs_count_toward_the_128_points():
    rng = np.random.default_rng(1)
    first, second = rng.uniform(0, 1, size=(127, 2)), rng.uniform(0, 1, size=(5, 2))
    resp = response_of(encode([first, second]))
    assert resp.shape == (256,)
    np.testing.assert_array_equal(resp[:254], VOCAB.quantize(first).reshape(-1))
    np.testing.assert_array_equal(resp[254:], [40, 40])  # the cut leaves a trailing pair

    first = rng.uniform(0, 1, size=(126, 2))
    resp = response_of(encode([first, second]))
    np.testing.assert_array_equal(resp[252:254], [40, 40])
    np.testing.assert_array_equal(resp[254:], VOCAB.quantize(second[0]))


def test_random_start_vertex_rotates_each_polygon():
    pts = np.array([[0.1, 0.1], [0.1, 0.5], [0.5, 0.5], [0.5, 0.1], [0.3, 0.05]], np.float32)
    q = VOCAB.quantize(pts)
    rotations = {tuple(np.roll(q, -k, axis=0).reshape(-1)) for k in range(5)}
    starts = set()
    rng = np.random.default_rng(2)
    for _ in range(40):
        seq = encode_segmentation(BOX, 3, [pts, pts[:3]], rng, VOCAB)
        resp = response_of(seq)
        assert tuple(resp[:10]) in rotations
        np.testing.assert_array_equal(resp[10:12], [40, 40])
        assert sorted(map(tuple, resp[12:18].reshape(-1, 2))) == sorted(map(tuple, q[:3]))
        starts.add(tuple(resp[:2]))
    assert len(starts) == 5


def test_top_start_vertex_is_canonical():
    tl, tr, br, bl = [0.3, 0.1], [0.3, 0.5], [0.7, 0.5], [0.7, 0.1]
    square = np.array([br, tr, tl, bl], np.float32)               # anticlockwise on screen, from a corner
    triangle = np.array([[0.2, 0.6], [0.1, 0.8], [0.2, 0.9]], np.float32)  # higher up: comes first
    cfg = SegmentationConfig(start_vertex="top")
    rng = np.random.default_rng(0)
    seq = encode_segmentation(BOX, 3, [square, triangle], rng, VOCAB, cfg)
    resp = response_of(seq)
    expected_triangle = VOCAB.quantize(triangle[[1, 2, 0]]).reshape(-1)    # clockwise from the top vertex
    np.testing.assert_array_equal(resp[:6], expected_triangle)
    np.testing.assert_array_equal(resp[6:8], [40, 40])
    np.testing.assert_array_equal(resp[8:16], VOCAB.quantize(np.array([tl, tr, br, bl], np.float32)).reshape(-1))
    rotated = encode_segmentation(BOX, 3, [np.roll(triangle, 1, axis=0), square[::-1]], rng, VOCAB, cfg)
    np.testing.assert_array_equal(rotated.target, seq.target)


def test_unknown_start_vertex_rule_is_refused():
    with pytest.raises(ValueError, match="start_vertex"):
        SegmentationConfig(start_vertex="left")


def test_max_instance_weight_caps_a_long_response_and_leaves_short_ones():
    square = [[0.1, 0.1], [0.1, 0.3], [0.3, 0.3], [0.3, 0.1]]  # 8 response tokens
    parts = [np.array(square) + 0.05 * k for k in range(5)]  # 5 parts: 40 points + 4 separator pairs = 48 tokens
    cfg = SegmentationConfig(start_vertex="given", pad_weight=0.1, max_instance_weight=12)
    long_seq, short_seq = encode(parts, cfg), encode([np.array(square)], cfg)
    assert long_seq.weight[5:5 + 48].sum() == pytest.approx(12.0)
    np.testing.assert_allclose(long_seq.weight[5:5 + 48], 12 / 48)
    np.testing.assert_allclose(long_seq.weight[5 + 48:], 0.1)  # PAD / end targets keep pad_weight
    uncapped = SegmentationConfig(start_vertex="given", pad_weight=0.1)
    np.testing.assert_array_equal(short_seq.weight, encode([np.array(square)], uncapped).weight)
    np.testing.assert_array_equal(long_seq.target, encode(parts, FIXED).target)  # tokens unchanged


@pytest.mark.parametrize("cap", [0, -3.0])
def test_bad_max_instance_weight_is_refused(cap):
    with pytest.raises(ValueError, match="max_instance_weight"):
        SegmentationConfig(max_instance_weight=cap)


def test_polygons_of_fewer_than_3_points_and_empty_parts():
    seq = encode([[[0.5, 0.5]], np.zeros((0, 2)), [[0.2, 0.3], [0.4, 0.5]]])
    np.testing.assert_array_equal(response_of(seq)[:8], [1500, 1500, 40, 40, 1200, 1300, 1400, 1500])
    assert response_of(seq)[8] == 0
    parts = decode_segmentation(torch.from_numpy(response_of(seq))[None], VOCAB)[0]
    assert [p.shape[0] for p in parts] == [1, 2]


def test_no_polygon_gives_an_immediate_end():
    seq = encode([])
    np.testing.assert_array_equal(seq.target[:6], [1100, 1200, 1500, 1599, 103, 0])
    assert seq.weight[5] == 1.0  # the end token after the prompt is learned (pad weight 1.0)
    assert decode_segmentation(torch.from_numpy(response_of(seq))[None], VOCAB) == [[]]


def test_out_of_canvas_points_are_clipped():
    seq = encode([[[-0.5, 0.5], [1.5, 0.25], [0.3, 2.0]]])
    np.testing.assert_array_equal(response_of(seq)[:6], [1000, 1500, 1999, 1250, 1300, 1999])


@pytest.mark.parametrize("polygons, word", [
    ([[0.1, 0.2, 0.3]], r"polygons\[0\].*odd"),
    ([np.array([[0.1, 0.2], [np.nan, 0.3]])], r"polygons\[0\]"),
    ([[[0.1, 0.2, 0.3]]], r"polygons\[0\]"),
    ([[[0.1, 0.2]], np.zeros((2, 2, 2))], r"polygons\[1\]"),
    (np.array([[0.1, 0.2], [0.3, 0.4]]), "polygons"),
    ("0.1 0.2", "polygons"),
])
def test_bad_polygons_raise(polygons, word):
    with pytest.raises(ValueError, match=word):
        encode(polygons)


@pytest.mark.parametrize("box, label, word", [
    ([0.1, 0.2, 0.3], 1, "box"),
    ([0.1, 0.2, 0.3, np.inf], 1, "box"),
    (BOX, 900, "label"),
    (BOX, -2, "label"),
])
def test_bad_box_or_label_raise(box, label, word):
    with pytest.raises(ValueError, match=word):
        encode([[[0.1, 0.2]]], box=box, label=label)


def test_config_lengths():
    cfg = SegmentationConfig()
    assert (cfg.seq_len, cfg.max_new_tokens, cfg.top_p, cfg.num_samples) == (261, 256, 0.8, 8)
    assert encode([[[0.1, 0.2]]], cfg=SegmentationConfig(max_points=4)).input.shape == (13,)
    with pytest.raises(ValueError, match="max_points"):
        SegmentationConfig(max_points=0)


# ---- prompts --------------------------------------------------------------------------------------
def test_segmentation_prompt_numpy_and_torch():
    boxes = np.array([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0]], np.float32)
    expected = [[11, 1100, 1200, 1500, 1599, 103], [11, 1000, 1000, 1999, 1999, 190]]
    np.testing.assert_array_equal(segmentation_prompt(boxes, [3, 90], VOCAB), expected)
    out = segmentation_prompt(torch.from_numpy(boxes), torch.tensor([3, 90]), VOCAB)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.int64
    assert out.tolist() == expected
    assert segmentation_prompt(np.zeros((0, 4)), [], VOCAB).shape == (0, 6)
    with pytest.raises(ValueError, match="labels"):
        segmentation_prompt(torch.from_numpy(boxes), torch.tensor([3, 900]), VOCAB)
    with pytest.raises(ValueError, match="boxes"):
        segmentation_prompt(torch.zeros(2, 3), torch.tensor([3, 9]), VOCAB)


# ---- decoding -------------------------------------------------------------------------------------
def random_polygons(rng, max_parts=3):
    return [rng.uniform(0, 1, size=(int(rng.integers(1, 12)), 2)).astype(np.float32)
            for _ in range(int(rng.integers(1, max_parts + 1)))]


@pytest.mark.parametrize("vocab", [VOCAB, SMALL], ids=["default", "small"])
def test_round_trip_within_half_a_bin_batched(vocab):
    rng = np.random.default_rng(3)
    cases = [random_polygons(rng) for _ in range(8)] + [[], [np.array([[0.5, 0.5]])]]
    tokens = np.stack([encode(p, vocab=vocab, label=1).target[5:] for p in cases])
    decoded = decode_segmentation(torch.from_numpy(tokens), vocab)
    assert len(decoded) == len(cases)
    for polys, parts in zip(cases, decoded):
        assert len(parts) == len(polys)
        for want, got in zip(polys, parts):
            assert got.dtype == torch.float32 and got.shape == want.shape
            assert np.abs(got.numpy() - want).max() <= 0.5 / (vocab.bins - 1) + 1e-6


def test_round_trip_of_a_truncated_sequence_keeps_the_first_128_points():
    rng = np.random.default_rng(4)
    first, second = rng.uniform(0, 1, (100, 2)), rng.uniform(0, 1, (60, 2))
    tokens = torch.from_numpy(encode([first, second]).target[5:])[None]
    parts = decode_segmentation(tokens, VOCAB)[0]
    assert [p.shape[0] for p in parts] == [100, 27]
    assert np.abs(parts[1].numpy() - second[:27]).max() <= 0.5 / 999 + 1e-6


C = 1000  # coordinate offset of the default vocabulary


@pytest.mark.parametrize("tokens, expected", [
    ([C + 1, C + 2, C + 3, C + 4, 0, C + 5, C + 6], [[(1, 2), (3, 4)]]),                   # cut at PAD
    ([C + 1, C + 2, 40, 40, C + 3, C + 4, 0], [[(1, 2)], [(3, 4)]]),                        # pair
    ([C + 1, C + 2, 40, C + 3, C + 4], [[(1, 2)], [(3, 4)]]),                               # lone 40
    ([C + 1, C + 2, C + 3, 40, 40, C + 4, C + 5, C + 6], [[(1, 2)], [(4, 5)]]),             # odd
    ([40, 40, C + 1, C + 2, 40, 40], [[(1, 2)]]),                                           # no empties
    ([C + 1, 41, C + 2, 150, C + 3, C + 4, 3005], [[(1, 2), (3, 4)]]),                      # skipped
    ([C + 1, 0, 0, 0], []),
    ([0, C + 1, C + 2], []),
])
def test_decode_rules(tokens, expected):
    parts = decode_segmentation(torch.tensor([tokens]), VOCAB)[0]
    got = [[tuple(round(float(v) * 999) for v in p) for p in part] for part in parts]
    assert got == expected


def test_decode_matches_a_per_row_reference_on_random_tokens():
    rng = np.random.default_rng(5)
    B, T = 16, 64
    kinds = rng.integers(0, 20, size=(B, T))
    tokens = np.where(kinds < 16, rng.integers(C, C + 1000, (B, T)),
                      np.where(kinds < 18, 40, rng.choice([0, 41, 130, 3002], size=(B, T))))
    got = decode_segmentation(torch.from_numpy(tokens), VOCAB)
    for row, parts in zip(tokens.tolist(), got):
        ref, current = [], []
        for t in row:
            if t == 0:
                break
            if t == 40:
                ref.append(current)
                current = []
            elif C <= t < C + 1000:
                current.append(t - C)
        ref.append(current)
        ref = [[(p[2 * i], p[2 * i + 1]) for i in range(len(p) // 2)] for p in ref]
        ref = [p for p in ref if p]
        assert [[tuple(round(float(v) * 999) for v in pt) for pt in part] for part in parts] == ref


@pytest.mark.parametrize("seed", [0, 1])
def test_packed_form_matches_the_lists(seed):
    rng = np.random.default_rng(seed)
    B, T = 12, 40
    kinds = rng.integers(0, 10, size=(B, T))
    tokens = np.where(kinds < 8, rng.integers(C, C + 1000, (B, T)),
                      np.where(kinds < 9, 40, rng.choice([0, 41], size=(B, T))))
    tokens[3] = 0  # a row without points
    tokens = torch.from_numpy(tokens)
    packed = decode_segmentation_packed(tokens, VOCAB)
    lists = decode_segmentation(tokens, VOCAB)
    assert packed.part_offsets.dtype == packed.sequence_offsets.dtype == torch.int64
    assert packed.sequence_offsets.shape == (B + 1,) and packed.sequence_offsets[0] == 0
    assert int(packed.sequence_offsets[-1]) == len(packed.part_offsets) - 1
    assert int(packed.part_offsets[-1]) == packed.points.shape[0]
    assert lists[3] == []
    for b in range(B):
        lo, hi = packed.sequence_offsets[b:b + 2].tolist()
        assert len(lists[b]) == hi - lo
        for p, part in zip(range(lo, hi), lists[b]):
            a, z = packed.part_offsets[p:p + 2].tolist()
            assert z > a and torch.equal(packed.points[a:z], part)


def test_packed_form_of_nothing():
    packed = decode_segmentation_packed(torch.zeros(3, 5, dtype=torch.long), VOCAB)
    assert packed.points.shape == (0, 2)
    assert packed.part_offsets.tolist() == [0] and packed.sequence_offsets.tolist() == [0, 0, 0, 0]
    assert decode_segmentation(torch.zeros(2, 0, dtype=torch.long), VOCAB) == [[], []]
    assert decode_segmentation(torch.zeros(0, 7, dtype=torch.long), VOCAB) == []


def test_decode_bad_tokens_raise():
    with pytest.raises(ValueError, match="tokens"):
        decode_segmentation(torch.zeros(3, 4), VOCAB)
    with pytest.raises(ValueError, match="tokens"):
        decode_segmentation(torch.zeros(4, dtype=torch.long), VOCAB)
