"""Instance segmentation as a token sequence (SPEC §2 segmentation, §4 segmentation decoding).

Sequence: prompt ``[11] ymin xmin ymax xmax class`` of one instance, then its polygon vertices
``y x y x …``; several polygons of the instance are joined by a SEPARATOR pair ``40 40``. The
response holds at most ``max_points`` (128) points, i.e. 256 tokens; as in the authors' code the
separator pairs count toward the 256, so a cut can leave a trailing ``40 40``. Total
``6 + 256`` tokens, so ``L = 261``. PAD targets weigh ``pad_weight`` (1.0).

Following the v2 paper, each polygon starts at a random vertex on every call (``start_vertex``
"random"); "given" keeps the stored vertex order, "top" makes the sequence a function of the shape
alone: every polygon turns the same way round (clockwise on screen) from its topmost vertex (then
leftmost), and the polygons follow one another by that first vertex (top to bottom, then left to
right).
Polygons of fewer than 3 points are encoded as given, as the authors do; empty polygons are skipped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from pix2seq_fast.tasks.common import (SequenceLengths, TrainSequence, check_float_array, check_label, check_rng,
                                       check_tokens, instance_prompt, shift_sequence)
from pix2seq_fast.vocab import Vocab, dequantize


START_VERTEX_RULES = ("random", "given", "top")


@dataclass(frozen=True)
class SegmentationConfig(SequenceLengths):
    """Segmentation sequence settings; defaults are the papers' / authors' values.

    max_points: points per response (128), separator pairs included.
    start_vertex: "random" (rotate every polygon to a random first vertex: the paper), "given" (as
        stored) or "top" (canonical: clockwise from the topmost vertex, polygons ordered by it).
    pad_weight: weight of PAD / end targets (1.0).
    max_instance_weight: if set, the response targets of one instance together weigh at most this
        many tokens (a longer response has each target scaled down), so that instances of many
        polygons, such as a person's parts, do not outweigh the rest of a batch (None: no cap; the
        authors' weighting).
    top_p: inference nucleus p (0.8).
    num_samples: sequences drawn per instance at inference, voted into one mask (8).
    """

    max_points: int = 128
    start_vertex: str = "random"
    pad_weight: float = 1.0
    max_instance_weight: float | None = None
    top_p: float = 0.8
    num_samples: int = 8

    def __post_init__(self):
        if self.max_points < 1:
            raise ValueError(f"max_points must be >= 1, got {self.max_points}")
        if self.start_vertex not in START_VERTEX_RULES:
            raise ValueError(f"start_vertex must be one of {START_VERTEX_RULES}, got {self.start_vertex!r}")
        if self.max_instance_weight is not None and not self.max_instance_weight > 0:
            raise ValueError(f"max_instance_weight must be > 0 or None, got {self.max_instance_weight}")

    @property
    def prompt_length(self) -> int:
        return 6

    @property
    def max_response(self) -> int:
        return 2 * self.max_points


def segmentation_prompt(boxes, labels, vocab: Vocab):
    """Prompts ``[n, 6]`` int64 for ``boxes [n, 4]`` and ``labels [n]`` (numpy or torch in, same out)."""
    return instance_prompt(vocab.segment_prompt, boxes, labels, vocab)


def _check_polygons(polygons) -> list[np.ndarray]:
    if isinstance(polygons, (np.ndarray, torch.Tensor)) or not isinstance(polygons, (list, tuple)):
        raise ValueError("polygons must be a list of [k, 2] (y, x) arrays, one per part, "
                         f"got {type(polygons).__name__}")
    parts = []
    for i, part in enumerate(polygons):
        arr = np.asarray(part, dtype=np.float32)
        if arr.ndim == 1:
            if arr.shape[0] % 2:
                raise ValueError(f"polygons[{i}] is a flat array of odd length {arr.shape[0]}; "
                                 "flat polygons must be y x pairs")
            arr = arr.reshape(-1, 2)
        arr = check_float_array(arr, f"polygons[{i}]", (None, 2))
        if arr.shape[0]:
            parts.append(arr)
    return parts


def canonical_polygon(part: np.ndarray) -> np.ndarray:
    """``part [k, 2]`` (y x) turned clockwise on screen (y down) and rolled to start at its topmost
    vertex (the leftmost of those)."""
    y, x = part[:, 0].astype(np.float64), part[:, 1].astype(np.float64)
    if np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) < 0:  # shoelace in (x, y): < 0 is anticlockwise on screen
        part = part[::-1]
    start = int(np.lexsort((part[:, 1], part[:, 0]))[0])
    return np.roll(part, -start, axis=0)


def encode_segmentation(box, label, polygons, rng: np.random.Generator, vocab: Vocab,
                        cfg: SegmentationConfig | None = None) -> TrainSequence:
    """One instance -> training sequence (``[L]`` arrays, ``L = 5 + 2 * cfg.max_points``).

    box ``[4]`` normalised ``ymin xmin ymax xmax``; label a category id; polygons a list of parts,
    each ``[k, 2]`` normalised ``y x`` (or a flat ``[2k]`` y-x array), clipped to [0, 1].
    """
    cfg = cfg or SegmentationConfig()
    rng = check_rng(rng)
    box = check_float_array(box, "box", (4,))
    label = check_label(label, vocab)
    parts = _check_polygons(polygons)

    if cfg.start_vertex == "top":
        parts = sorted((canonical_polygon(p) for p in parts), key=lambda p: (float(p[0, 0]), float(p[0, 1])))
    pieces = []
    for i, part in enumerate(parts):
        if cfg.start_vertex == "random":
            part = np.roll(part, -int(rng.integers(part.shape[0])), axis=0)
        if i:
            pieces.append(np.array([vocab.separator, vocab.separator], dtype=np.int64))
        pieces.append(vocab.quantize(np.clip(part, 0.0, 1.0)).reshape(-1))
    response = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
    response = response[:cfg.max_response]
    prompt = instance_prompt(vocab.segment_prompt, box[None], np.array([label]), vocab)[0]
    response_weight = 1.0
    if cfg.max_instance_weight is not None and response.shape[0] > cfg.max_instance_weight:
        response_weight = cfg.max_instance_weight / response.shape[0]
    return shift_sequence(prompt, response, np.float32(response_weight), cfg.max_response, cfg.pad_weight,
                          vocab.pad)


class PackedSegmentation(NamedTuple):
    """Decoded polygons of ``B`` sequences in flat form (see :func:`decode_segmentation_packed`).

    points ``[P, 2]`` float32 normalised ``y x``, all parts back to back; part ``p`` is
    ``points[part_offsets[p]:part_offsets[p + 1]]``; sequence ``b`` owns parts
    ``sequence_offsets[b]:sequence_offsets[b + 1]``. Offsets are int64 and start at 0.
    """

    points: torch.Tensor
    part_offsets: torch.Tensor
    sequence_offsets: torch.Tensor


def decode_segmentation_packed(tokens, vocab: Vocab) -> PackedSegmentation:
    """Generated response tokens ``[B, T]`` -> :class:`PackedSegmentation`, tensor ops only.

    Rules: everything from the first PAD on is dropped; parts are split at SEPARATOR tokens (a
    ``40 40`` pair, a lone 40 also splits; empty parts vanish); other non-coordinate tokens
    (INVISIBLE, class, text…) are skipped and the coordinates around them pair up as if they were
    absent; within each part coordinates pair up in order as ``y x`` and an odd trailing coordinate
    is dropped. Parts of 1–2 points are kept (the rasteriser decides what they cover).
    """
    tokens = check_tokens(tokens)
    B, T = tokens.shape
    device = tokens.device
    zero = torch.zeros(1, dtype=torch.int64, device=device)
    if B * T == 0:
        return PackedSegmentation(torch.zeros(0, 2, device=device), zero,
                                  torch.zeros(B + 1, dtype=torch.int64, device=device))
    is_pad = tokens == vocab.pad
    first_pad = torch.where(is_pad.any(dim=1), is_pad.to(torch.int8).argmax(dim=1),
                            torch.full((B,), T, device=device))
    alive = torch.arange(T, device=device)[None, :] < first_pad[:, None]
    is_coord = vocab.is_coord(tokens)
    event = alive & (is_coord | (tokens == vocab.separator))

    # From here on 1-D over the coordinate / separator events of all rows, in row-major order.
    flat = event.reshape(-1).nonzero().squeeze(1)
    rows = torch.repeat_interleave(torch.arange(B, device=device), event.sum(dim=1))
    tok = tokens.reshape(-1)[flat]
    coord = vocab.is_coord(tok)
    boundary = ~coord
    boundary[0:1] = True
    boundary[1:] |= rows[1:] != rows[:-1]  # a separator or a new row starts a segment
    segment = boundary.cumsum(0) - 1
    coord_count = coord.cumsum(0)
    before = torch.where(boundary, coord_count - coord.long(), torch.zeros_like(coord_count))
    ordinal = coord_count - before.cummax(0).values - 1
    num_segments = int(segment[-1]) + 1 if segment.numel() else 0
    per_segment = torch.zeros(num_segments, dtype=torch.int64, device=device)
    per_segment.scatter_add_(0, segment, coord.long())  # coordinates per segment
    keep = (coord & (ordinal < (per_segment[segment] & -2))).nonzero().squeeze(1)

    points = dequantize(tok[keep] - vocab.coord_offset, vocab.bins).reshape(-1, 2)
    first_of_pair = keep[0::2]
    part_of_point = segment[first_of_pair]
    if part_of_point.numel() == 0:
        return PackedSegmentation(points, zero, torch.zeros(B + 1, dtype=torch.int64, device=device))
    _, lengths = torch.unique_consecutive(part_of_point, return_counts=True)
    starts = torch.cat([zero, lengths.cumsum(0)])
    row_of_part = rows[first_of_pair[starts[:-1]]]
    parts_per_row = torch.bincount(row_of_part, minlength=B)
    return PackedSegmentation(points, starts, torch.cat([zero, parts_per_row.cumsum(0)]))


def decode_segmentation(tokens, vocab: Vocab) -> list[list[torch.Tensor]]:
    """Generated response tokens ``[B, T]`` -> per sequence a list of parts, each ``[k, 2]`` float32
    normalised ``y x`` (on the tokens' device); ``[]`` for a sequence without points.

    The rules are :func:`decode_segmentation_packed`'s; only the final grouping into Python lists
    loops, once per sequence.
    """
    packed = decode_segmentation_packed(tokens, vocab)
    lengths = (packed.part_offsets[1:] - packed.part_offsets[:-1]).tolist()
    parts = torch.split(packed.points, lengths) if lengths else ()
    bounds = packed.sequence_offsets.tolist()
    return [list(parts[bounds[b]:bounds[b + 1]]) for b in range(len(bounds) - 1)]
