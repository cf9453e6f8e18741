"""The predictor's few touch points with the model and the generation engine."""
from __future__ import annotations

import torch

from pix2seq_fast.vocab import Vocab


def model_vocab(model) -> Vocab:
    return model.config.vocab


def model_canvas(model) -> tuple[int, int]:
    """``(H, W)`` of the canvas images are padded to (a square unless the config says ``[H, W]``)."""
    return model.config.canvas_hw


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def model_tokenizer(model):
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("task 'caption' needs the model's SentencePiece tokenizer, and this model "
                         "has none (save_pretrained writes it as tokenizer.model next to the weights)")
    return tokenizer


def encode(model, pixels: torch.Tensor) -> torch.Tensor:
    """``pixels [B, 3, S, S]`` in [0, 1] -> image memory ``[B, N, D]``."""
    with torch.inference_mode():
        return model.encode(pixels)


def run_generate(model, memory, prompts, prompt_lengths, image_index, max_new_tokens, sampling,
                 decode, record=None, stop_on_eos=False, generator=None):
    """``generation.generate`` in inference mode with the attention backend of ``decode``; with
    ``decode.constrained`` under the grammar of the task that the prompts' first token names (PAD
    allowed as the end when ``stop_on_eos``). Returns its ``GenerationOutput``."""
    from pix2seq_fast.generation import generate  # noqa: PLC0415

    constraint = None
    if getattr(decode, "constrained", False):
        from pix2seq_fast.generation.constrained import constraint_for_prompts  # noqa: PLC0415

        constraint = constraint_for_prompts(prompts, model_vocab(model), allow_end=bool(stop_on_eos))
    with torch.inference_mode():
        return generate(model, memory, prompts, prompt_lengths, image_index, int(max_new_tokens),
                        sampling=sampling, record=record, stop_on_eos=stop_on_eos,
                        generator=generator, attention_backend=decode.attention_backend,
                        constraint=constraint)
