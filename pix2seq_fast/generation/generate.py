"""Prefill + decode with a static KV cache (DESIGN.md "Generation").

Every sequence refers to its image by ``image_index``: the image's cross-attention K/V exist once
(segmentation: 10 instances x 8 samples = 80 sequences over one image). Prompts may differ in length.
Tokens, log-probabilities and recorded log-softmax slices go to preallocated buffers; the loop never
syncs with the host except for the early-stop check every ``check_every`` steps.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pix2seq_fast.generation.kv_cache import allocate_cache
from pix2seq_fast.generation.sampling_config import SamplingConfig
from pix2seq_fast.generation.step import cached_decoder_pass, decode_step
from pix2seq_fast.ops.sampling import top_p_sample


@dataclass
class GenerationOutput:
    """``tokens[B, T]`` int64 generated tokens (PAD after a row's EOS when stopping early);
    ``logprobs[B, T]`` fp32 log-softmax of the chosen token under the untempered distribution
    (0 after EOS); ``recorded[B, T, hi - lo]`` log-softmax over the whole vocabulary sliced to
    ``[lo, hi)`` at every step, or None; ``lengths[B]`` generated tokens per row including EOS."""

    tokens: torch.Tensor
    logprobs: torch.Tensor
    recorded: torch.Tensor | None
    lengths: torch.Tensor


def _as_index(name: str, value, batch: int | None, device) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"generate: {name} must be an int64 tensor, got {type(value).__name__}")
    if value.dtype not in (torch.int64, torch.int32) or value.dim() != 1:
        raise ValueError(f"generate: {name} must be a 1-D integer tensor, got {value.dtype} {tuple(value.shape)}")
    if batch is not None and value.shape[0] != batch:
        raise ValueError(f"generate: {name} must have shape [{batch}], got {tuple(value.shape)}")
    if value.device != device:
        raise ValueError(f"generate: {name} is on {value.device} but memory is on {device}")
    return value.to(torch.int64)


def check_generate_args(model, memory, prompts, prompt_lengths, image_index, max_new_tokens, sampling,
                        record):
    """Raise ``ValueError`` naming the argument; returns ``(prompt_lengths, image_index, max_prompt)``."""
    config = model.config
    if not isinstance(memory, torch.Tensor) or memory.dim() != 3 or memory.shape[2] != config.dec_dim:
        raise ValueError(f"generate: memory must be [N_img, S, dec_dim={config.dec_dim}], got "
                         f"{tuple(memory.shape) if isinstance(memory, torch.Tensor) else type(memory).__name__}")
    if memory.shape[0] == 0 or memory.shape[1] == 0:
        raise ValueError(f"generate: memory must hold at least one image and token, got {tuple(memory.shape)}")
    device = memory.device
    if not isinstance(prompts, torch.Tensor) or prompts.dim() != 2 or prompts.dtype not in (torch.int64, torch.int32):
        raise ValueError("generate: prompts must be an integer tensor [B, P]")
    if prompts.shape[0] == 0 or prompts.shape[1] == 0:
        raise ValueError(f"generate: prompts must be non-empty [B, P], got {tuple(prompts.shape)}")
    if prompts.device != device:
        raise ValueError(f"generate: prompts is on {prompts.device} but memory is on {device}")
    batch, width = prompts.shape
    prompt_lengths = _as_index("prompt_lengths", prompt_lengths, batch, device)
    image_index = _as_index("image_index", image_index, batch, device)
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ValueError(f"generate: max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    if not isinstance(sampling, SamplingConfig):
        raise ValueError(f"generate: sampling must be a SamplingConfig, got {type(sampling).__name__}")
    vocab_size = config.vocab_size
    if record is not None:
        if (not isinstance(record, (tuple, list)) or len(record) != 2
                or not 0 <= int(record[0]) < int(record[1]) <= vocab_size):
            raise ValueError(f"generate: record must be (lo, hi) with 0 <= lo < hi <= vocab_size={vocab_size}, "
                             f"got {record!r}")
    # One host read at setup (never inside the loop): validate values and size the cache.
    lo_len, hi_len = int(prompt_lengths.min()), int(prompt_lengths.max())
    if lo_len < 1 or hi_len > width:
        raise ValueError(f"generate: prompt_lengths must be in [1, P={width}], got range [{lo_len}, {hi_len}]")
    if int(image_index.min()) < 0 or int(image_index.max()) >= memory.shape[0]:
        raise ValueError(f"generate: image_index must be in [0, N_img={memory.shape[0]}), got "
                         f"range [{int(image_index.min())}, {int(image_index.max())}]")
    if int(prompts.min()) < 0 or int(prompts.max()) >= vocab_size:
        raise ValueError(f"generate: prompts must lie in [0, vocab_size={vocab_size})")
    if hi_len + max_new_tokens - 1 > config.max_seq_len:
        raise ValueError(f"generate: longest prompt ({hi_len}) + max_new_tokens ({max_new_tokens}) - 1 exceeds "
                         f"the model's max_seq_len {config.max_seq_len}")
    return prompt_lengths, image_index, hi_len


def eos_tokens(prompts: torch.Tensor, vocab) -> torch.Tensor:
    """``[B]`` end token per row: the caption EOS for rows prompted ``[Describe]``, else PAD."""
    return torch.where(prompts[:, 0] == vocab.caption_prompt,
                       torch.full_like(prompts[:, 0], vocab.caption_eos),
                       torch.full_like(prompts[:, 0], vocab.pad)).to(torch.int64)


@dataclass
class Prefilled:
    """What ``generate`` and ``generate_constrained`` share once their arguments are checked: the
    prompts cut to the longest, per-row indices, the sampler, the KV cache holding the prompts, and
    each row's hidden state at its last prompt token (``last_hidden [B, D]``, before the final LN)."""

    prompts: torch.Tensor
    prompt_lengths: torch.Tensor
    image_index: torch.Tensor
    image_lengths: torch.Tensor
    cache: object
    sample: object
    last_hidden: torch.Tensor


def prefill(model, memory, prompts, prompt_lengths, image_index, max_new_tokens, sampling, record,
            generator, sampling_backend, check_every, attention_backend) -> Prefilled:
    """Check the arguments (``ValueError`` naming the argument), allocate the cache and run all
    prompts through the decoder at once (padding positions are overwritten by the rows' later steps)."""
    prompt_lengths, image_index, max_prompt = check_generate_args(
        model, memory, prompts, prompt_lengths, image_index, max_new_tokens, sampling, record)
    if not isinstance(check_every, int) or check_every < 1:
        raise ValueError(f"generate: check_every must be an int >= 1, got {check_every!r}")
    decoder = model.decoder
    device = memory.device
    batch = prompts.shape[0]
    prompts = prompts[:, :max_prompt].to(torch.int64)
    top_p, top_k, temperature = sampling.per_row(batch, device)
    backend = sampling.backend if sampling_backend is None else sampling_backend

    def sample(logits):
        return top_p_sample(logits, top_p, top_k, temperature, rule=sampling.rule, generator=generator,
                            backend=backend, return_logprobs=True)

    cache = allocate_cache(decoder, memory, batch, max_prompt + max_new_tokens - 1)
    image_lengths = torch.full((batch,), memory.shape[1], dtype=torch.int64, device=device)
    positions = torch.arange(max_prompt, device=device)
    zeros = torch.zeros(batch, dtype=torch.int64, device=device)
    hidden = cached_decoder_pass(decoder, cache, prompts, positions.expand(batch, -1), zeros,
                                 torch.full_like(zeros, max_prompt), image_index, image_lengths,
                                 attention_backend)
    last = hidden.gather(1, (prompt_lengths - 1).view(batch, 1, 1).expand(-1, 1, hidden.shape[-1]))[:, 0]
    return Prefilled(prompts, prompt_lengths, image_index, image_lengths, cache, sample, last)


class EndTracker:
    """Early stop at each row's end token (``stop_on_eos``): after a row's end, its tokens become PAD
    and their log-probs 0. ``lengths(steps)`` -> ``[B]`` tokens per row including the end token."""

    def __init__(self, prompts: torch.Tensor, vocab, eos_token, max_new_tokens: int, enabled: bool,
                 check_every: int):
        self.enabled, self.check_every, self.pad = enabled, check_every, vocab.pad
        batch, device = prompts.shape[0], prompts.device
        if enabled:
            self.eos = eos_tokens(prompts, vocab) if eos_token is None else torch.as_tensor(
                eos_token, dtype=torch.int64, device=device).expand(batch)
            self.finished = torch.zeros(batch, dtype=torch.bool, device=device)
            self.ends = torch.full((batch,), max_new_tokens, dtype=torch.int64, device=device)
        self.device = device
        self.batch = batch

    def update(self, t: int, ids: torch.Tensor, logprobs: torch.Tensor):
        """Step ``t``'s sampled ``ids[B]`` / ``logprobs[B]`` -> what is stored."""
        if not self.enabled:
            return ids, logprobs
        ids = ids.masked_fill(self.finished, self.pad)
        logprobs = logprobs.masked_fill(self.finished, 0.0)
        ended = (ids == self.eos) & ~self.finished
        self.ends.masked_fill_(ended, t + 1)
        self.finished |= ended
        return ids, logprobs

    def all_done(self, t: int) -> bool:
        """Every row has ended (a host read, only every ``check_every`` steps)."""
        return self.enabled and (t + 1) % self.check_every == 0 and bool(self.finished.all())

    def lengths(self, steps: int) -> torch.Tensor:
        if not self.enabled:
            return torch.full((self.batch,), steps, dtype=torch.int64, device=self.device)
        return torch.minimum(self.ends, torch.tensor(steps, device=self.device))


class _Recorder:
    """Preallocated per-step outputs; ``write(t, ...)`` stores column t without leaving the device."""

    def __init__(self, batch, steps, record, device):
        self.tokens = torch.zeros(batch, steps, dtype=torch.int64, device=device)
        self.logprobs = torch.zeros(batch, steps, dtype=torch.float32, device=device)
        self.record = None if record is None else (int(record[0]), int(record[1]))
        self.recorded = None if record is None else torch.zeros(
            batch, steps, self.record[1] - self.record[0], dtype=torch.float32, device=device)

    def write(self, t, logits, ids, logprobs):
        self.tokens[:, t] = ids
        self.logprobs[:, t] = logprobs
        if self.recorded is not None:
            lo, hi = self.record
            # log_softmax, as the reference engine: logits - logsumexp rounds to 0 for extreme logits
            self.recorded[:, t] = torch.log_softmax(logits.float(), dim=-1)[:, lo:hi]

    def output(self, steps, lengths):
        recorded = None if self.recorded is None else self.recorded[:, :steps]
        return GenerationOutput(self.tokens[:, :steps], self.logprobs[:, :steps], recorded, lengths)


@torch.no_grad()
def generate(model, memory: torch.Tensor, prompts: torch.Tensor, prompt_lengths: torch.Tensor,
             image_index: torch.Tensor, max_new_tokens: int, sampling: SamplingConfig = SamplingConfig(),
             record: tuple[int, int] | None = None, stop_on_eos: bool = False,
             generator: torch.Generator | None = None, *, eos_token: int | torch.Tensor | None = None,
             attention_backend: str = "auto", sampling_backend: str | None = None, check_every: int = 8,
             compile: bool = False, constraint=None) -> GenerationOutput:
    """Generate ``max_new_tokens`` tokens after each prompt.

    ``memory[N_img, S, D]`` from ``model.encode``; ``prompts[B, P]`` right-padded, row b's prompt is
    ``prompts[b, :prompt_lengths[b]]``; ``image_index[B]`` picks each row's image. ``record=(lo, hi)``
    stores ``log_softmax(logits)[..., lo:hi]`` per step. ``stop_on_eos``: rows stop at their end token
    (``eos_token``, default PAD, or the caption EOS for ``[Describe]`` prompts) and the loop ends when
    every row has (checked every ``check_every`` steps); otherwise all ``max_new_tokens`` are generated
    (fixed-length detection mode). ``attention_backend`` / ``sampling_backend`` (default
    ``sampling.backend``) choose the ops' implementations. ``compile`` wraps the decode step in
    ``torch.compile``. ``constraint`` (a ``constrained.TokenConstraint``, e.g.
    ``constrained.task_constraint(task, vocab)``): sample only the tokens the task's grammar allows at
    each position and project only those (``generation/constrained.py``; None = unconstrained).
    """
    if constraint is not None:
        from pix2seq_fast.generation.constrained import generate_constrained  # noqa: PLC0415

        return generate_constrained(model, memory, prompts, prompt_lengths, image_index, max_new_tokens,
                                    sampling, record, stop_on_eos, generator, constraint, eos_token=eos_token,
                                    attention_backend=attention_backend, sampling_backend=sampling_backend,
                                    check_every=check_every)
    run = prefill(model, memory, prompts, prompt_lengths, image_index, max_new_tokens, sampling, record,
                  generator, sampling_backend, check_every, attention_backend)
    decoder = model.decoder
    recorder = _Recorder(prompts.shape[0], max_new_tokens, record, memory.device)
    ends = EndTracker(run.prompts, model.config.vocab, eos_token, max_new_tokens, stop_on_eos, check_every)
    logits = decoder.logits(run.last_hidden)
    step = torch.compile(decode_step, dynamic=False) if compile else decode_step
    position = run.prompt_lengths.clone()
    steps = max_new_tokens
    for t in range(max_new_tokens):
        ids, logprobs = ends.update(t, *run.sample(logits))
        recorder.write(t, logits, ids, logprobs)
        if t + 1 == max_new_tokens:
            break
        if ends.all_done(t):
            steps = t + 1
            break
        logits = step(decoder, run.cache, ids, position, run.image_index, run.image_lengths, attention_backend)
        position += 1
    return recorder.output(steps, ends.lengths(steps))
