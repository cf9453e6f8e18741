"""Constrained decoding: sample each token only among those the task's grammar allows there, and
compute the output projection only on that slice of the vocabulary (an option; off by default, so
the authors' unconstrained semantics stay the default).

Grammars (:func:`task_constraint`), by generated position ``t`` (0 = first token after the prompt):

- detection: coordinate bins at ``t % 5 in 0..3``, real class tokens (NOISE excluded) at
  ``t % 5 == 4``; with ``allow_end`` also PAD at ``t % 5 == 0`` (early stop). With
  ``exact_class_scores`` (default) the class positions project the *whole* vocabulary, so the recorded
  class log-probabilities — the detection scores — are the authors' full-vocabulary ones; only the
  sampled class is restricted.
- segmentation: coordinate bins, SEPARATOR and PAD (the end).
- keypoints: coordinate bins and INVISIBLE.
- captioning: text tokens (the caption EOS is one).

Semantics of the outputs under a constraint: ``tokens`` always lie in the allowed set; ``logprobs``
are log-probabilities under the constrained distribution (the softmax over the allowed tokens);
``recorded[..., lo:hi]`` holds the full-vocabulary log-softmax at positions that project the whole
vocabulary, and elsewhere the log-softmax over the allowed set at the allowed tokens of
``[lo, hi)`` and ``-inf`` at the others. When the model already puts all its mass inside the
allowed set, every one of these equals unconstrained decoding (``tests/test_constrained_decoding.py``).
"""
from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pix2seq_fast.vocab import TASKS

_SLICE_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class TokenConstraint:
    """Allowed tokens by generated position: position ``t`` uses ``sets[t % len(sets)]`` — a sorted,
    duplicate-free int64 tensor of token ids. ``full_logits[i]``: project the whole vocabulary at
    those positions (the recorded log-softmax is then the full one), still sampling inside the set."""

    sets: tuple
    full_logits: tuple

    def __post_init__(self):
        if not self.sets or len(self.sets) != len(self.full_logits):
            raise ValueError("TokenConstraint: sets and full_logits must be non-empty and of equal length")
        for i, s in enumerate(self.sets):
            if not isinstance(s, torch.Tensor) or s.dim() != 1 or s.numel() == 0 or s.dtype != torch.int64:
                raise ValueError(f"TokenConstraint: sets[{i}] must be a non-empty 1-D int64 tensor")
            if s.numel() > 1 and not bool((s[1:] > s[:-1]).all()):
                raise ValueError(f"TokenConstraint: sets[{i}] must be sorted and without duplicates")

    @property
    def period(self) -> int:
        return len(self.sets)

    def allowed(self, t: int) -> torch.Tensor:
        return self.sets[t % self.period]

    def check_vocab(self, vocab_size: int) -> None:
        for i, s in enumerate(self.sets):
            if int(s[0]) < 0 or int(s[-1]) >= vocab_size:
                raise ValueError(f"TokenConstraint: sets[{i}] holds tokens outside [0, {vocab_size})")


def _span(lo: int, hi: int) -> torch.Tensor:
    return torch.arange(lo, hi, dtype=torch.int64)


def _union(*parts) -> torch.Tensor:
    return torch.unique(torch.cat([torch.as_tensor(p, dtype=torch.int64).reshape(-1) for p in parts]))


def task_constraint(task: str, vocab, *, allow_end: bool = False, exact_class_scores: bool = True) -> TokenConstraint:
    """The grammar of ``task`` (one of ``TASKS``) on ``vocab`` (module docstring); memoised, so that
    the projection slices cached per decoder are reused across calls."""
    if task not in TASKS:
        raise ValueError(f"task_constraint: task must be one of {TASKS}, got {task!r}")
    return _task_constraint(task, vocab, bool(allow_end) and task == "detect",
                            bool(exact_class_scores) or task != "detect")


@functools.lru_cache(maxsize=64)
def _task_constraint(task: str, vocab, allow_end: bool, exact_class_scores: bool) -> TokenConstraint:
    coords = _span(vocab.coord_offset, vocab.coord_offset + vocab.bins)
    if task == "detect":
        classes = _span(vocab.class_offset, vocab.class_offset + vocab.num_classes)
        first = _union([vocab.pad], coords) if allow_end else coords
        return TokenConstraint((first, coords, coords, coords, classes),
                               (False, False, False, False, bool(exact_class_scores)))
    if task == "segment":
        return TokenConstraint((_union([vocab.pad, vocab.separator], coords),), (False,))
    if task == "keypoints":
        return TokenConstraint((_union([vocab.invisible], coords),), (False,))
    if task == "caption":
        if vocab.text_vocab_size == 0:
            raise ValueError("task_constraint: this vocabulary has no text tokens to caption with")
        return TokenConstraint((_span(vocab.text_offset, vocab.vocab_size),), (False,))
    raise ValueError(f"task_constraint: task must be one of {TASKS}, got {task!r}")


def constraint_for_prompts(prompts: torch.Tensor, vocab, allow_end: bool = False) -> TokenConstraint | None:
    """The grammar of the task whose prompt token starts ``prompts[B, P]`` (one host read), or None
    when rows mix tasks or the first token is no task prompt."""
    first = torch.unique(prompts[:, 0]).tolist()
    table = {vocab.detect_prompt: "detect", vocab.segment_prompt: "segment",
             vocab.keypoints_prompt: "keypoints", vocab.caption_prompt: "caption"}
    if len(first) != 1 or first[0] not in table:
        return None
    return task_constraint(table[first[0]], vocab, allow_end=allow_end)


class _Slice:
    """One allowed set on one device: ``index[n]``, the projection onto it, and where its log-probs go
    in a recorded window ``[lo, hi)`` (``cols`` of the slice -> ``dest`` = token - lo)."""

    def __init__(self, decoder, tokens: torch.Tensor, full: bool, device, record):
        self.full = full
        self.index = tokens.to(device)
        vocab_size = decoder.token_embedding.weight.shape[0]
        if full:
            mask = torch.full((vocab_size,), float("-inf"), device=device)
            mask[self.index] = 0.0
            self.mask = mask
        else:
            lo_t, hi_t = int(tokens[0]), int(tokens[-1]) + 1
            contiguous = hi_t - lo_t == tokens.numel()
            head = decoder.output_projection
            if head is not None:
                self.head = head.select_rows(self.index) if hasattr(head, "select_rows") else None
                if self.head is None:
                    raise ValueError("constrained decoding: decoder.output_projection has no select_rows")
                self.weight = self.bias = None
            else:
                self.head = None
                w, b = decoder.token_embedding.weight, decoder.output_bias
                self.weight = w[lo_t:hi_t] if contiguous else w.index_select(0, self.index).contiguous()
                self.bias = b[lo_t:hi_t] if contiguous else b.index_select(0, self.index).contiguous()
        self.cols = self.dest = None
        if record is not None and not full:
            lo, hi = record
            inside = (tokens >= lo) & (tokens < hi)
            self.cols = inside.nonzero().squeeze(1).to(device)
            self.dest = (tokens[inside] - lo).to(device)

    def project(self, decoder, hidden: torch.Tensor) -> torch.Tensor:
        """``hidden[B, D]`` (before the final LN) -> logits ``[B, n]`` over the slice (or ``[B, V]``)."""
        if self.full:
            return decoder.logits(hidden)
        normed = decoder.norm(hidden)
        if self.head is not None:
            return self.head(normed)
        return F.linear(normed, self.weight, self.bias)


def _slices(decoder, constraint: TokenConstraint, device, record) -> list[_Slice]:
    """Per-set slices, cached per decoder while its output weights and the constraint are unchanged."""
    weight = decoder.token_embedding.weight
    head = decoder.output_projection
    key = (id(constraint), str(device), None if record is None else tuple(int(r) for r in record),
           weight.data_ptr(), weight._version, decoder.output_bias._version, id(head))
    per_decoder = _SLICE_CACHE.setdefault(decoder, {})
    hit = per_decoder.get(key)
    if hit is not None and hit[0] is constraint:
        return hit[1]
    built = [_Slice(decoder, s, f, device, record) for s, f in zip(constraint.sets, constraint.full_logits)]
    per_decoder.clear()  # one constraint at a time per decoder bounds the cache
    per_decoder[key] = (constraint, built)
    return built


def sample_step(decoder, hidden, sl: _Slice, sample):
    """Project ``hidden[B, D]`` onto slice ``sl`` and draw: -> ``(logits, ids[B], logprobs[B])``,
    ``logits`` over the slice (``[B, n]``) or the whole vocabulary for a full slice (unmasked)."""
    logits = sl.project(decoder, hidden)
    if sl.full:
        ids, logprobs = sample(logits + sl.mask)
        return logits, ids, logprobs
    sub_ids, logprobs = sample(logits)
    return logits, sl.index[sub_ids], logprobs


def write_record(recorded: torch.Tensor, t: int, logits: torch.Tensor, sl: _Slice, record) -> None:
    """Store step ``t``'s log-softmax window (module docstring) into ``recorded[B, T, hi - lo]``."""
    logits = logits.float()
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)
    if sl.full:
        lo, hi = record
        recorded[:, t] = logits[:, lo:hi] - lse
    elif sl.cols.numel():
        recorded[:, t].index_copy_(1, sl.dest, logits.index_select(1, sl.cols) - lse)


@torch.no_grad()
def generate_constrained(model, memory, prompts, prompt_lengths, image_index, max_new_tokens, sampling,
                         record, stop_on_eos, generator, constraint: TokenConstraint, *, eos_token=None,
                         attention_backend="auto", sampling_backend=None, check_every=8):
    """``generation.generate`` with ``constraint`` (same arguments and ``GenerationOutput``; the
    module docstring gives what logprobs / recorded hold)."""
    from pix2seq_fast.generation.generate import EndTracker, GenerationOutput, prefill  # noqa: PLC0415
    from pix2seq_fast.generation.step import decode_hidden  # noqa: PLC0415

    if not isinstance(constraint, TokenConstraint):
        raise ValueError(f"generate: constraint must be a TokenConstraint, got {type(constraint).__name__}")
    constraint.check_vocab(model.config.vocab_size)
    run = prefill(model, memory, prompts, prompt_lengths, image_index, max_new_tokens, sampling, record,
                  generator, sampling_backend, check_every, attention_backend)
    decoder = model.decoder
    device = memory.device
    batch = prompts.shape[0]
    slices = _slices(decoder, constraint, device, record)
    tokens = torch.zeros(batch, max_new_tokens, dtype=torch.int64, device=device)
    logprob_out = torch.zeros(batch, max_new_tokens, dtype=torch.float32, device=device)
    recorded = None if record is None else torch.full(
        (batch, max_new_tokens, int(record[1]) - int(record[0])), float("-inf"), device=device)
    ends = EndTracker(run.prompts, model.config.vocab, eos_token, max_new_tokens, stop_on_eos, check_every)
    hidden = run.last_hidden
    position = run.prompt_lengths.clone()
    steps = max_new_tokens
    for t in range(max_new_tokens):
        sl = slices[t % constraint.period]
        logits, ids, logprobs = sample_step(decoder, hidden, sl, run.sample)
        ids, logprobs = ends.update(t, ids, logprobs)
        tokens[:, t] = ids
        logprob_out[:, t] = logprobs
        if recorded is not None:
            write_record(recorded, t, logits, sl, record)
        if t + 1 == max_new_tokens:
            break
        if ends.all_done(t):
            steps = t + 1
            break
        hidden = decode_hidden(decoder, run.cache, ids, position, run.image_index, run.image_lengths,
                               attention_backend)
        position += 1
    return GenerationOutput(tokens[:, :steps], logprob_out[:, :steps],
                            None if recorded is None else recorded[:, :steps], ends.lengths(steps))
