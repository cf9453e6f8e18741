"""Detection codec: sequence layout, augmentation statistics, corruption, decoding (SPEC §2, §4)."""
import numpy as np
import pytest
import torch

from pix2seq_fast.tasks.detection import (DetectionConfig, decode_detection, encode_detection,
                                          jitter_boxes, noise_boxes, random_boxes, shift_boxes)
from pix2seq_fast.vocab import Vocab

VOCAB = Vocab()
SMALL = Vocab(num_classes=20, class_offset=100, coord_offset=200, bins=100, text_offset=300,
              text_vocab_size=64)
V1 = Vocab(bins=2000, text_vocab_size=0)  # v1 from scratch: 2000 bins, detection-only vocabulary
PLAIN = DetectionConfig(noise_boxes=False, corrupt_classes=False, object_order="given")


def random_annotation(rng, n, vocab=VOCAB):
    yx = rng.uniform(0, 0.7, size=(n, 2))
    hw = rng.uniform(0.02, 0.3, size=(n, 2))
    boxes = np.concatenate([yx, yx + hw], axis=1).astype(np.float32)
    labels = rng.integers(1, min(vocab.num_classes, 91), size=n)
    return boxes, labels


def objects_of(seq):
    """Target tokens as [100, 5] objects (the detection response is always 5-aligned)."""
    return seq.target.reshape(-1, 5)


# ---- layout ---------------------------------------------------------------------------------------
def test_hand_made_layout_without_augmentation():
    boxes = [[0.1, 0.2, 0.5, 0.6], [0.3, 0.3, 0.9, 0.8]]
    seq = encode_detection(boxes, [1, 5], np.random.default_rng(0), VOCAB, PLAIN)
    response = [1100, 1200, 1500, 1599, 101, 1300, 1300, 1899, 1799, 105]
    np.testing.assert_array_equal(seq.input, [10] + response + [0] * 489)
    np.testing.assert_array_equal(seq.target, response + [0] * 490)
    np.testing.assert_array_equal(seq.weight, np.array([1.0] * 10 + [0.1] * 490, np.float32))
    assert seq.input.dtype == np.int64 and seq.target.dtype == np.int64
    assert seq.weight.dtype == np.float32


def test_hand_made_layout_with_noise_objects():
    cfg = DetectionConfig(corrupt_classes=False, object_order="given")
    seq = encode_detection([[0.1, 0.2, 0.5, 0.6]], [7], np.random.default_rng(0), VOCAB, cfg)
    assert seq.input.shape == seq.target.shape == seq.weight.shape == (500,)
    np.testing.assert_array_equal(seq.target[:5], [1100, 1200, 1500, 1599, 107])
    np.testing.assert_array_equal(seq.weight[:5], [1, 1, 1, 1, 1])
    objects = objects_of(seq)
    np.testing.assert_array_equal(objects[1:, 4], 30)
    assert VOCAB.is_coord(objects[1:, :4]).all()
    weights = seq.weight.reshape(-1, 5)
    np.testing.assert_array_equal(weights[1:, :4], 0.0)
    np.testing.assert_array_equal(weights[1:, 4], 1.0)
    np.testing.assert_array_equal(seq.input[1:], seq.target[:-1])


@pytest.mark.parametrize("n", [0, 1, 7, 99, 100, 130])
def test_training_sequence_is_always_500_tokens(n):
    rng = np.random.default_rng(n)
    boxes, labels = random_annotation(rng, n)
    seq = encode_detection(boxes, labels, rng, VOCAB)
    objects = objects_of(seq)
    assert (objects != 0).all(), "no PAD in a training detection sequence"
    real = objects[:, 4] != 30
    assert real.sum() == min(n, 100)
    assert real[:min(n, 100)].all(), "real objects come first"
    weights = seq.weight.reshape(-1, 5)
    np.testing.assert_array_equal(weights[real], 1.0)
    np.testing.assert_array_equal(weights[~real, :4], 0.0)
    np.testing.assert_array_equal(weights[~real, 4], 1.0)
    assert seq.weight.sum() == pytest.approx(5 * min(n, 100) + (100 - min(n, 100)))


def test_more_than_100_objects_keeps_a_random_subset_of_100():
    rng = np.random.default_rng(1)
    boxes, labels = random_annotation(rng, 130)
    allowed = {tuple(r) for r in np.concatenate(
        [VOCAB.quantize(boxes), labels[:, None] + 100], axis=1).tolist()}
    kept = []
    for _ in range(5):
        seq = encode_detection(boxes, labels, rng, VOCAB, DetectionConfig(corrupt_classes=False))
        objects = {tuple(r) for r in objects_of(seq).tolist()}
        assert len(objects) == 100 and objects <= allowed
        kept.append(objects)
    assert len(set.union(*kept)) > 100, "a new random subset on every call"


def test_new_random_order_every_call():
    rng = np.random.default_rng(2)
    boxes, labels = random_annotation(rng, 6)
    cfg = DetectionConfig(noise_boxes=False, corrupt_classes=False)
    orders = set()
    for _ in range(20):
        objects = objects_of(encode_detection(boxes, labels, rng, VOCAB, cfg))[:6]
        orders.add(tuple(objects[:, 4].tolist() + objects[:, 0].tolist()))
        assert sorted(map(tuple, objects.tolist())) == sorted(map(tuple, np.concatenate(
            [VOCAB.quantize(boxes), labels[:, None] + 100], axis=1).tolist()))
    assert len(orders) > 10


def test_order_is_kept_when_object_order_is_given():
    rng = np.random.default_rng(3)
    boxes, labels = random_annotation(rng, 5)
    seq = encode_detection(boxes, labels, rng, VOCAB, PLAIN)
    np.testing.assert_array_equal(objects_of(seq)[:5, 4], labels + 100)


@pytest.mark.parametrize("order", ["area", "dist2ori"])
def test_fixed_orders_sort_the_objects(order):
    boxes = np.array([[0.5, 0.5, 0.6, 0.6], [0.1, 0.2, 0.9, 0.8], [0.0, 0.1, 0.2, 0.3]], np.float32)
    seq = encode_detection(boxes, [1, 2, 3], np.random.default_rng(0), VOCAB,
                           DetectionConfig(noise_boxes=False, corrupt_classes=False, object_order=order))
    expected = {"area": [102, 103, 101], "dist2ori": [103, 102, 101]}[order]
    np.testing.assert_array_equal(objects_of(seq)[:3, 4], expected)


def test_unknown_object_order_is_refused():
    with pytest.raises(ValueError, match="object_order"):
        DetectionConfig(object_order="size")


# ---- augmentation statistics ----------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 3, 60, 90])
def test_duplicate_count_is_uniform_over_0_to_100_minus_n(n):
    rng = np.random.default_rng(n)
    boxes, _ = random_annotation(rng, n)
    dups = []
    for _ in range(400):
        fake, dup = noise_boxes(boxes, 100 - n, rng, DetectionConfig())
        assert fake.shape == (100 - n, 4)
        assert (fake >= 0).all() and (fake <= 1).all()
        dups.append(dup)
    dups = np.array(dups)
    assert dups.min() >= 0 and dups.max() <= 100 - n
    assert abs(dups.mean() - (100 - n) / 2) < 0.12 * (100 - n) + 0.5
    if n >= 60:  # few values: both ends must show up in 400 draws
        assert dups.min() == 0 and dups.max() == 100 - n


def test_no_real_objects_gives_100_random_boxes_and_no_duplicates():
    rng = np.random.default_rng(4)
    for _ in range(20):
        fake, dup = noise_boxes(np.zeros((0, 4), np.float32), 100, rng, DetectionConfig())
        assert dup == 0 and fake.shape == (100, 4)
    seq = encode_detection(np.zeros((0, 4)), [], rng, VOCAB)
    np.testing.assert_array_equal(objects_of(seq)[:, 4], 30)
    np.testing.assert_array_equal(seq.weight.reshape(-1, 5)[:, :4], 0.0)


def test_all_noise_is_duplicates_when_dup_is_maximal():
    """With one real box every duplicate is a jittered copy of it (within 0.1 of its size)."""
    rng = np.random.default_rng(5)
    box = np.array([[0.4, 0.4, 0.6, 0.7]], np.float32)
    seen_full = False
    for _ in range(400):
        fake, dup = noise_boxes(box, 99, rng, DetectionConfig())
        near = (np.abs(fake - box) <= 0.1 * np.array([0.2, 0.3, 0.2, 0.3]) + 1e-6).all(axis=1)
        assert near.sum() >= dup
        seen_full |= dup == 99
        if dup == 99:
            assert near.all()
    assert seen_full


def test_jitter_is_truncated_normal_with_std_0_05_of_the_size():
    rng = np.random.default_rng(6)
    box = np.tile(np.array([[0.3, 0.2, 0.5, 0.6]], np.float32), (20000, 1))  # h 0.2, w 0.4
    moved = (jitter_boxes(box, 0.1, rng) - box) / np.array([0.2, 0.4, 0.2, 0.4], np.float32)
    assert np.abs(moved).max() <= 0.1 + 1e-5
    # TruncatedNormal(0, 0.05) cut at 2 std has std 0.05 * 0.8796
    assert moved.std() == pytest.approx(0.05 * 0.8796, rel=0.03)
    assert abs(moved.mean()) < 2e-3


def test_shifted_boxes_keep_their_size_and_random_boxes_are_bounded():
    rng = np.random.default_rng(7)
    box = np.tile(np.array([[0.1, 0.1, 0.2, 0.15]], np.float32), (2000, 1))
    shifted = shift_boxes(box, rng)
    inside = (shifted > 0).all(axis=1) & (shifted < 1).all(axis=1)
    np.testing.assert_allclose(shifted[inside, 2] - shifted[inside, 0], 0.1, atol=1e-5)
    np.testing.assert_allclose(shifted[inside, 3] - shifted[inside, 1], 0.05, atol=1e-5)
    centres = (shifted[inside, :2] + shifted[inside, 2:]) / 2
    assert centres.mean() == pytest.approx(0.5, abs=0.03)

    rand = random_boxes(20000, 1.0, rng)
    size = rand[:, 2:] - rand[:, :2]
    assert (size >= 0).all() and (size <= 1.0 + 1e-6).all()
    assert (rand >= 0).all() and (rand <= 1).all()

    small = random_boxes(20000, 0.1, rng)  # rarely clipped: sizes are |TruncatedNormal(0, 0.05)|
    size = (small[:, 2:] - small[:, :2])[((small > 0) & (small < 1)).all(axis=1)]
    assert size.max() <= 0.1 + 1e-6
    expected_mean = 0.05 * np.sqrt(2 / np.pi) * (1 - np.exp(-2)) / 0.9545
    assert size.mean() == pytest.approx(expected_mean, rel=0.03)


# ---- class corruption -----------------------------------------------------------------------------
def test_rand_n_fake_cls_corrupts_every_input_class_and_never_the_target():
    rng = np.random.default_rng(8)
    boxes, labels = random_annotation(rng, 10)
    noise_count = class_count = 0
    for _ in range(40):
        seq = encode_detection(boxes, labels, rng, VOCAB)
        clean = encode_detection(boxes, labels, np.random.default_rng(0), VOCAB,
                                 DetectionConfig(corrupt_classes=False))
        classes_in = seq.input[5::5]  # input class slots of objects 0..98 (object 99's is cut)
        assert classes_in.shape == (99,)
        assert np.all((classes_in == 30) | VOCAB.is_class(classes_in))
        noise_count += int((classes_in == 30).sum())
        class_count += int(VOCAB.is_class(classes_in).sum())
        coords = np.ones(500, bool)
        coords[0] = False
        coords[5::5] = False
        np.testing.assert_array_equal(seq.input[coords], seq.target[:-1][coords[1:]])
        assert VOCAB.is_coord(seq.input[coords]).all()
        assert seq.target.shape == clean.target.shape
    assert noise_count / (noise_count + class_count) == pytest.approx(0.5, abs=0.04)


def test_random_classes_cover_the_class_range():
    rng = np.random.default_rng(9)
    boxes, labels = random_annotation(rng, 1, SMALL)
    seen = set()
    for _ in range(30):
        seq = encode_detection(boxes, labels, rng, SMALL)
        seen |= set(seq.input[5::5][SMALL.is_class(seq.input[5::5])].tolist())
    assert seen == set(range(100, 120))


# ---- edge cases -----------------------------------------------------------------------------------
def test_degenerate_and_out_of_canvas_boxes_are_clipped_and_encoded():
    boxes = [[0.5, 0.5, 0.5, 0.5], [-0.2, 0.5, 1.3, 0.7]]
    seq = encode_detection(boxes, [3, 4], np.random.default_rng(0), VOCAB, PLAIN)
    np.testing.assert_array_equal(seq.target[:10],
                                  [1500, 1500, 1500, 1500, 103, 1000, 1500, 1999, 1699, 104])


@pytest.mark.parametrize("boxes, labels, word", [
    ([[0.1, 0.2, np.nan, 0.4]], [1], "boxes"),
    ([[0.1, 0.2, 0.3]], [1], "boxes"),
    ([0.1, 0.2, 0.3, 0.4], [1], "boxes"),
    ([[0.1, 0.2, 0.3, 0.4]], [900], "labels"),
    ([[0.1, 0.2, 0.3, 0.4]], [-1], "labels"),
    ([[0.1, 0.2, 0.3, 0.4]], [1, 2], "labels"),
    ([[0.1, 0.2, 0.3, 0.4]], [1.5], "labels"),
    ([["a", 0.2, 0.3, 0.4]], [1], "boxes"),
])
def test_bad_annotation_raises(boxes, labels, word):
    with pytest.raises(ValueError, match=word):
        encode_detection(boxes, labels, np.random.default_rng(0), VOCAB)


def test_bad_rng_raises():
    with pytest.raises(ValueError, match="rng"):
        encode_detection([[0.1, 0.2, 0.3, 0.4]], [1], 0, VOCAB)


def test_bad_config_raises():
    with pytest.raises(ValueError, match="max_objects"):
        DetectionConfig(max_objects=0)


def test_config_lengths():
    cfg = DetectionConfig()
    assert (cfg.seq_len, cfg.max_new_tokens, cfg.top_p) == (500, 500, 0.4)
    seq = encode_detection([[0.1, 0.1, 0.2, 0.2]], [1], np.random.default_rng(0), VOCAB,
                           DetectionConfig(max_objects=3))
    assert seq.input.shape == (15,)


# ---- decoding -------------------------------------------------------------------------------------
def class_logprobs_for(tokens, vocab, seed):
    """Full-vocabulary log-softmax of random logits, sliced to the real classes."""
    B, T = tokens.shape
    logits = torch.randn(B, T, vocab.vocab_size, generator=torch.Generator().manual_seed(seed))
    return torch.log_softmax(logits, dim=-1)[:, :, vocab.class_offset:
                                             vocab.class_offset + vocab.num_classes]


def peaked_class_logprobs(labels, T, vocab):
    """``[1, T, C]`` log-probs with probability 0.9 on ``labels[k]`` at object k's class slot and
    the remaining 0.1 spread over the rest of the vocabulary."""
    lp = torch.full((1, T, vocab.num_classes), float(np.log(0.1 / (vocab.vocab_size - 1))))
    lp[0, 4 + 5 * np.arange(len(labels)), torch.from_numpy(labels)] = float(np.log(0.9))
    return lp


def reference_decode(tokens, class_logprobs, vocab):
    B, T = tokens.shape
    n = T // 5
    boxes = np.zeros((B, n, 4), np.float32)
    labels = np.zeros((B, n), np.int64)
    scores = np.zeros((B, n), np.float32)
    valid = np.zeros((B, n), bool)
    for b in range(B):
        row = tokens[b].tolist()
        end = row.index(0) if 0 in row else T
        for i in range(n):
            obj = row[5 * i:5 * i + 5]
            ok = 5 * i + 4 < end and all(vocab.coord_offset <= t < vocab.coord_offset + vocab.bins
                                         for t in obj[:4])
            valid[b, i] = ok
            if ok:
                boxes[b, i] = [(t - vocab.coord_offset) / (vocab.bins - 1) for t in obj[:4]]
            lp = class_logprobs[b, 5 * i + 4]
            labels[b, i] = int(lp.argmax())
            scores[b, i] = float(lp.max().exp())
    return boxes, labels, scores, valid


@pytest.mark.parametrize("vocab", [VOCAB, SMALL, V1], ids=["default", "small", "v1"])
@pytest.mark.parametrize("n", [0, 1, 13, 100])
def test_round_trip_within_half_a_bin(vocab, n):
    rng = np.random.default_rng(n)
    boxes, labels = random_annotation(rng, n, vocab)
    seq = encode_detection(boxes, labels, rng, vocab, PLAIN)
    tokens = torch.from_numpy(seq.target)[None]
    out = decode_detection(tokens, peaked_class_logprobs(labels, 500, vocab), vocab)
    assert out.boxes.shape == (1, 100, 4) and out.boxes.dtype == torch.float32
    assert out.labels.dtype == torch.int64 and out.valid.dtype == torch.bool
    assert out.valid[0, :n].all() and not out.valid[0, n:].any()
    np.testing.assert_array_less(np.abs(out.boxes[0, :n].numpy() - boxes),
                                 0.5 / (vocab.bins - 1) + 1e-6)
    np.testing.assert_array_equal(out.labels[0, :n].numpy(), labels)
    np.testing.assert_allclose(out.scores[0, :n].numpy(), 0.9, rtol=1e-5)


@pytest.mark.parametrize("vocab, B, T", [(SMALL, 6, 53), (VOCAB, 2, 27)], ids=["small", "default"])
def test_decode_matches_a_per_object_reference_on_random_tokens(vocab, B, T):
    rng = np.random.default_rng(10)
    lo, hi = vocab.coord_offset, vocab.coord_offset + vocab.bins
    cls = vocab.class_offset
    kinds = rng.integers(0, 10, size=(B, T))
    tokens = np.where(kinds < 7, rng.integers(lo, hi, size=(B, T)),
                      np.where(kinds < 8, 30, np.where(kinds < 9, rng.integers(cls, cls + 20, (B, T)),
                                                       rng.choice([0, 40, hi], size=(B, T)))))
    tokens[0, :] = rng.integers(lo, hi, size=T)  # a row without PAD
    tokens = torch.from_numpy(tokens)
    lp = class_logprobs_for(tokens, vocab, 10)
    out = decode_detection(tokens, lp, vocab)
    ref = reference_decode(tokens, lp, vocab)
    np.testing.assert_allclose(out.boxes.numpy(), ref[0], atol=1e-6)
    np.testing.assert_array_equal(out.labels.numpy(), ref[1])
    np.testing.assert_allclose(out.scores.numpy(), ref[2], rtol=1e-5)
    np.testing.assert_array_equal(out.valid.numpy(), ref[3])


def test_class_is_repicked_over_real_classes_with_unnormalised_probability():
    V = VOCAB.vocab_size
    logits = torch.full((1, 5, V), -30.0)
    logits[0, 4, 30] = 5.0     # NOISE is the most likely token: excluded
    logits[0, 4, 1500] = 4.0   # a coordinate token: excluded
    logits[0, 4, 117] = 3.0    # best real class: id 17
    logits[0, 4, 150] = 2.0
    full = torch.log_softmax(logits, dim=-1)
    tokens = torch.tensor([[1100, 1200, 1300, 1400, 30]])  # the sampled class token was NOISE
    out = decode_detection(tokens, full[:, :, 100:1000], VOCAB)
    assert out.labels.item() == 17
    assert out.scores.item() == pytest.approx(torch.softmax(logits[0, 4], -1)[117].item(), rel=1e-5)
    assert out.scores.item() < 0.25  # not renormalised over the classes
    assert out.valid.item()


def test_valid_is_false_for_non_coordinates_and_after_the_end():
    tokens = torch.tensor([[1100, 1200, 1300, 1400, 101,
                            1100, 30, 1300, 1400, 101,     # NOISE in a coordinate slot
                            1100, 1200, 1300, 1400, 0,     # ended at its class slot
                            1100, 1200, 1300, 1400, 101]])  # after the end
    lp = torch.log_softmax(torch.zeros(1, 20, VOCAB.num_classes), -1)
    out = decode_detection(tokens, lp, VOCAB)
    assert out.valid.tolist() == [[True, False, False, False]]
    assert (out.boxes[0, 1:] == 0).all()


def test_trailing_tokens_are_ignored_and_empty_input():
    lp = torch.zeros(2, 7, VOCAB.num_classes)
    out = decode_detection(torch.full((2, 7), 1500), lp, VOCAB)
    assert out.boxes.shape == (2, 1, 4) and out.valid.all()
    out = decode_detection(torch.zeros(2, 0, dtype=torch.int64),
                           torch.zeros(2, 0, VOCAB.num_classes), VOCAB)
    assert out.boxes.shape == (2, 0, 4)


@pytest.mark.parametrize("tokens, lp, word", [
    (torch.zeros(2, 10), torch.zeros(2, 10, 900), "tokens"),
    (torch.zeros(10, dtype=torch.long), torch.zeros(10, 900), "tokens"),
    (torch.zeros(2, 10, dtype=torch.long), torch.zeros(2, 10, 901), "class_logprobs"),
    (torch.zeros(2, 10, dtype=torch.long), torch.zeros(2, 9, 900), "class_logprobs"),
    (torch.zeros(2, 10, dtype=torch.long), np.zeros((2, 10, 900)), "class_logprobs"),
])
def test_decode_bad_input_raises(tokens, lp, word):
    with pytest.raises(ValueError, match=word):
        decode_detection(tokens, lp, VOCAB)
