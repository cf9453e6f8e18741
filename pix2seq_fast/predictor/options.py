"""Decoding settings shared by every task, turned into the generation engine's ``SamplingConfig``."""
from __future__ import annotations

from dataclasses import dataclass

import torch

RULES = ("pix2seq", "standard")


@dataclass(frozen=True)
class DecodeOptions:
    """How tokens are drawn (SPEC §4).

    top_p: nucleus mass; ``None`` takes the task's default (detect 0.4, segment 0.8, keypoints 0.1,
        caption 1.0).
    top_k: keep the k most likely tokens first (0 = off).
    temperature: logits are divided by it before top-k / top-p.
    rule: ``"pix2seq"`` (largest prefix with cumulative mass <= p, at least one token; the authors')
        or ``"standard"`` (smallest prefix with mass >= p; Holtzman / HF).
    greedy: argmax instead of sampling (then top_p / top_k / temperature are unused).
    seed: seeds a ``torch.Generator`` on the model's device for reproducible samples (``None`` uses
        torch's global RNG).
    sampling_backend / attention_backend: ``"auto"|"ref"|"cpp"|"cuda"|"triton"`` for the sampling
        and decode-attention ops.
    constrained: sample each token only among those the task's grammar allows at its position and
        compute the output layer only on them (``generation/constrained.py``); off by default (the
        authors' decoding). Detection scores stay the full-vocabulary ones.
    """

    top_p: float | None = None
    top_k: int = 0
    temperature: float = 1.0
    rule: str = "pix2seq"
    greedy: bool = False
    seed: int | None = None
    sampling_backend: str = "auto"
    attention_backend: str = "auto"
    constrained: bool = False

    def __post_init__(self):
        if self.top_p is not None and not 0.0 < float(self.top_p) <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if int(self.top_k) < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not float(self.temperature) > 0.0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {self.rule!r}")

    def sampling_config(self, default_top_p: float):
        """The engine's ``SamplingConfig`` with ``top_p`` falling back to ``default_top_p``."""
        from pix2seq_fast.generation import SamplingConfig  # noqa: PLC0415

        top_p = default_top_p if self.top_p is None else float(self.top_p)
        return SamplingConfig(top_p=top_p, top_k=int(self.top_k), temperature=float(self.temperature),
                              rule=self.rule, greedy=bool(self.greedy),
                              backend=self.sampling_backend)

    def generator(self, device) -> torch.Generator | None:
        if self.seed is None:
            return None
        return torch.Generator(device=device).manual_seed(int(self.seed))
