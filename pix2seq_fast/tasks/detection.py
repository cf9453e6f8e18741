"""Object detection as a token sequence (SPEC §2 detection, §4 detection decoding).

Sequence: ``[10]`` then per object ``ymin xmin ymax xmax class``, objects in a new random order on
every call (or a fixed order, ``object_order``: Pix2seq v1 Fig. 7), up to ``max_objects`` (100); total ``1 + 5 * max_objects`` tokens, so ``input`` /
``target`` / ``weight`` have ``L = 5 * max_objects = 500``.

Training sequence augmentation (Pix2Seq v1 §2.3, the authors' ``data_utils.augment_bbox``) fills the
image up to ``max_objects`` objects with NOISE-labelled boxes, so a training sequence always holds
500 response tokens. The real objects come first (shuffled), then the noise objects (shuffled):

- ``dup ~ UniformInt[0, max_objects - n]`` (0 when n = 0) jittered duplicates of real boxes: each
  coordinate moves by ``TruncatedNormal(0, dup_max_jitter / 2)`` (re-drawn beyond 2 std, so at most
  ``dup_max_jitter`` = 0.1) times the box height / width;
- the rest are "bad" boxes, drawn as in the authors' code: ``bad`` shifted real boxes (same size,
  uniform centre) and ``bad`` random boxes (uniform centre, ``|TruncatedNormal(0, 0.5)|`` height and
  width) are pooled, shuffled, and the first ``bad`` kept;
- all clipped to [0, 1] and labelled NOISE; their 4 coordinate targets weigh 0, their class target
  (NOISE) weighs ``noise_class_weight`` (1).

Duplicated / shifted boxes are drawn without replacement from the real boxes tiled
``(max_objects - n) // n + 1`` times, as the authors do. With more than ``max_objects`` objects the
(shuffled) list is cut, so each call keeps a new random subset — the authors' order of operations.

Choices where SPEC is silent: labels are category ids in ``[0, vocab.num_classes)``; boxes are
clipped to [0, 1] and otherwise encoded as given (degenerate or empty boxes included — dropping
boxes emptied by a crop belongs to the data pipeline, as in the authors' ``filter_invalid_objects``);
an image without objects gives 100 random noise boxes (the authors skip such images in training).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from pix2seq_fast.tasks.common import (SequenceLengths, TrainSequence, check_boxes, check_labels, check_rng,
                                       check_tokens, shift_sequence, truncated_normal)
from pix2seq_fast.vocab import Vocab


OBJECT_ORDERS = ("random", "area", "dist2ori", "given")


@dataclass(frozen=True)
class DetectionConfig(SequenceLengths):
    """Detection sequence settings; defaults are the papers' / authors' values.

    max_objects: objects per sequence (100); more are a random subset, fewer are topped up with noise.
    noise_boxes: sequence augmentation with NOISE objects (training on; off gives ``5n`` tokens + PAD).
    corrupt_classes: ``rand_n_fake_cls`` input corruption: every *input* class token becomes a
        uniformly random class token (p 0.5) or NOISE (p 0.5); targets are untouched.
    object_order: "random" (a new order on every call: the v1 paper's best at convergence), "area"
        (largest first), "dist2ori" (box top-left corner nearest the image origin first) or "given"
        (as annotated). Fixed orders break ties stably by the given order.
    dup_max_jitter: duplicates move by TruncatedNormal(0, dup_max_jitter / 2) × box size (0.1).
    random_box_max_size: random boxes' |TruncatedNormal(0, max / 2)| height and width (1.0).
    noise_class_weight: weight of a noise object's class target (1.0); its coordinates weigh 0.
    pad_weight: weight of PAD / end targets (0.1).
    top_p: inference nucleus p (0.4).
    """

    max_objects: int = 100
    noise_boxes: bool = True
    corrupt_classes: bool = True
    object_order: str = "random"
    dup_max_jitter: float = 0.1
    random_box_max_size: float = 1.0
    noise_class_weight: float = 1.0
    pad_weight: float = 0.1
    top_p: float = 0.4

    def __post_init__(self):
        if self.max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {self.max_objects}")
        if self.object_order not in OBJECT_ORDERS:
            raise ValueError(f"object_order must be one of {OBJECT_ORDERS}, got {self.object_order!r}")

    @property
    def prompt_length(self) -> int:
        return 1

    @property
    def max_response(self) -> int:
        return 5 * self.max_objects


class DetectionOutput(NamedTuple):
    """Decoded detections, ``n = T // 5`` slots per sequence.

    boxes ``[B, n, 4]`` float32 normalised ``ymin xmin ymax xmax`` in [0, 1] (0 where not valid);
    labels ``[B, n]`` int64 category ids; scores ``[B, n]`` float32; valid ``[B, n]`` bool.
    """

    boxes: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor
    valid: torch.Tensor


# ---- training -------------------------------------------------------------------------------------
def _clip01(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes, 0.0, 1.0).astype(np.float32)


def shift_boxes(boxes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Same height / width, uniform new centre, clipped."""
    n = boxes.shape[0]
    centre = rng.uniform(0.0, 1.0, size=(n, 2)).astype(np.float32)
    half = np.abs(boxes[:, 2:] - boxes[:, :2]) / 2.0
    return _clip01(np.concatenate([centre - half, centre + half], axis=1))


def random_boxes(n: int, max_size: float, rng: np.random.Generator) -> np.ndarray:
    """Uniform centre, |TruncatedNormal(0, max_size / 2)| height and width, clipped."""
    centre = rng.uniform(0.0, 1.0, size=(n, 2)).astype(np.float32)
    half = np.abs(truncated_normal(rng, max_size / 2.0, (n, 2))) / 2.0
    return _clip01(np.concatenate([centre - half, centre + half], axis=1))


def jitter_boxes(boxes: np.ndarray, max_jitter: float, rng: np.random.Generator) -> np.ndarray:
    """Each coordinate += TruncatedNormal(0, max_jitter / 2) × the box's height (y) / width (x)."""
    size = boxes[:, 2:] - boxes[:, :2]
    scale = np.concatenate([size, size], axis=1)
    return _clip01(boxes + scale * truncated_normal(rng, max_jitter / 2.0, boxes.shape))


def noise_boxes(boxes: np.ndarray, num_noise: int, rng: np.random.Generator,
                cfg: DetectionConfig) -> tuple[np.ndarray, int]:
    """``num_noise`` noise boxes ``[num_noise, 4]`` for the real ``boxes [n, 4]``, shuffled.

    Returns the boxes and ``dup``, the number of jittered duplicates among them.
    """
    n = boxes.shape[0]
    dup = 0 if n == 0 else int(rng.integers(0, num_noise + 1))
    bad = num_noise - dup
    tiled = np.tile(boxes, ((num_noise // n + 1) if n else 1, 1))
    shifted = shift_boxes(tiled[rng.permutation(len(tiled))[:bad]], rng)
    pool = np.concatenate([shifted, random_boxes(bad, cfg.random_box_max_size, rng)], axis=0)
    bad_boxes = pool[rng.permutation(len(pool))[:bad]]
    dup_boxes = jitter_boxes(tiled[rng.permutation(len(tiled))[:dup]], cfg.dup_max_jitter, rng)
    out = np.concatenate([bad_boxes, dup_boxes], axis=0).reshape(-1, 4)
    return out[rng.permutation(num_noise)], dup


def object_order(boxes: np.ndarray, order: str, rng: np.random.Generator) -> np.ndarray:
    """Permutation ``[n]`` that puts ``boxes [n, 4]`` (``ymin xmin ymax xmax``) in ``order``."""
    if order == "random":
        return rng.permutation(boxes.shape[0])
    if order == "area":
        key = -(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    elif order == "dist2ori":
        key = boxes[:, 0] ** 2 + boxes[:, 1] ** 2
    elif order == "given":
        key = np.zeros(boxes.shape[0])
    else:
        raise ValueError(f"object_order must be one of {OBJECT_ORDERS}, got {order!r}")
    return np.argsort(key, kind="stable")


def encode_detection(boxes, labels, rng: np.random.Generator, vocab: Vocab,
                     cfg: DetectionConfig | None = None) -> TrainSequence:
    """Annotation -> training sequence (``[L]`` arrays, ``L = 5 * cfg.max_objects``).

    boxes ``[n, 4]`` normalised ``ymin xmin ymax xmax`` (clipped to [0, 1]; degenerate boxes are
    encoded as given — dropping boxes emptied by a crop is the data pipeline's job), labels ``[n]``
    category ids in ``[0, vocab.num_classes)``.
    """
    cfg = cfg or DetectionConfig()
    rng = check_rng(rng)
    boxes = _clip01(check_boxes(boxes, "boxes"))
    labels = check_labels(labels, boxes.shape[0], vocab, "labels")

    order = object_order(boxes, cfg.object_order, rng)
    boxes, labels = boxes[order], labels[order]
    boxes, labels = boxes[:cfg.max_objects], labels[:cfg.max_objects]
    n = boxes.shape[0]
    class_tokens = labels + vocab.class_offset
    is_real = np.ones(n, dtype=bool)
    if cfg.noise_boxes and n < cfg.max_objects:
        fake, _ = noise_boxes(boxes, cfg.max_objects - n, rng, cfg)
        boxes = np.concatenate([boxes, fake], axis=0)
        class_tokens = np.concatenate([class_tokens, np.full(len(fake), vocab.noise, np.int64)])
        is_real = np.concatenate([is_real, np.zeros(len(fake), dtype=bool)])

    objects = np.concatenate([vocab.quantize(boxes), class_tokens[:, None]], axis=1)  # [m, 5]
    weight = np.ones(objects.shape, dtype=np.float32)
    weight[~is_real, :4] = 0.0
    weight[~is_real, 4] = cfg.noise_class_weight
    seq = shift_sequence(np.array([vocab.detect_prompt]), objects.reshape(-1), weight.reshape(-1),
                         cfg.max_response, cfg.pad_weight, vocab.pad)
    if cfg.corrupt_classes and len(objects):
        seq = seq._replace(input=_rand_n_fake_cls(seq.input, len(objects), rng, vocab))
    return seq


def _rand_n_fake_cls(inputs: np.ndarray, num_objects: int, rng: np.random.Generator,
                     vocab: Vocab) -> np.ndarray:
    """Each input class token -> a random class token (p 0.5) or NOISE (p 0.5)."""
    out = inputs.copy()
    pos = 5 + 5 * np.arange(num_objects)  # input[i] = seq[i]; object k's class is seq[5k + 5]
    pos = pos[pos < len(out)]
    rand_cls = vocab.class_offset + rng.integers(0, vocab.num_classes, size=len(pos))
    out[pos] = np.where(rng.uniform(size=len(pos)) > 0.5, rand_cls, vocab.noise)
    return out


# ---- inference ------------------------------------------------------------------------------------
def decode_detection(tokens, class_logprobs, vocab: Vocab) -> DetectionOutput:
    """Generated tokens -> boxes, labels, scores (SPEC §4).

    tokens ``[B, T]`` response tokens (no prompt); class_logprobs ``[B, T, C]`` the log-softmax over
    the *whole* vocabulary recorded at every generated position, sliced to the ``C = num_classes``
    real class tokens. Trailing ``T % 5`` tokens are ignored. At each class position the label is
    the argmax over real classes (NOISE excluded) and the score its full-vocabulary probability (not
    renormalised). ``valid`` is false where any coordinate slot does not hold a coordinate token or
    the object reaches into the end of the sequence (at or after the first PAD).
    """
    tokens = check_tokens(tokens)
    if not isinstance(class_logprobs, torch.Tensor):
        raise ValueError(f"class_logprobs must be a torch tensor, got {type(class_logprobs).__name__}")
    B, T = tokens.shape
    if class_logprobs.ndim != 3 or class_logprobs.shape[:2] != (B, T):
        raise ValueError(f"class_logprobs must have shape [{B}, {T}, {vocab.num_classes}], "
                         f"got {tuple(class_logprobs.shape)}")
    if class_logprobs.shape[2] != vocab.num_classes:
        raise ValueError(f"class_logprobs last dim must be vocab.num_classes={vocab.num_classes}, "
                         f"got {class_logprobs.shape[2]}")
    if not class_logprobs.dtype.is_floating_point:
        raise ValueError(f"class_logprobs must be floating point, got {class_logprobs.dtype}")
    n = T // 5
    objs = tokens[:, :5 * n].reshape(B, n, 5)
    ended = (tokens[:, :5 * n] == vocab.pad).cumsum(dim=1).reshape(B, n, 5)[:, :, 4] > 0
    coords = objs[:, :, :4]
    valid = vocab.is_coord(coords).all(dim=2) & ~ended
    boxes = vocab.dequantize(coords.clamp(vocab.coord_offset, vocab.coord_offset + vocab.bins - 1))
    boxes = torch.where(valid[:, :, None], boxes, torch.zeros_like(boxes))
    class_lp = class_logprobs[:, 4:5 * n:5, :].float()  # [B, n, C]
    best_lp, labels = class_lp.max(dim=2)
    return DetectionOutput(boxes, labels.to(torch.int64), best_lp.exp(), valid)
