"""A memo of a frozen backbone trunk's outputs while training, keyed by the exact image content.

A frozen trunk maps the same input pixels to the same features every time, so when the
augmentation repeats images (a recipe with no scale jitter: every image appears as itself or its
mirror image), each distinct input needs the trunk once per run; afterwards a training step costs
the trainable layers only. The key is a BLAKE2b digest of the image's bytes, so the cache can never
return features of a different input; with random continuous augmentation it simply misses.
"""
from __future__ import annotations

import hashlib
from typing import Callable

import torch


class TrunkFeatureCache:
    """``cache(trunk_fn, images[B, 3, H, W]) -> features[B, C, h, w]``: ``trunk_fn`` runs once, as
    one batch, on the images not seen before. Holds at most ``max_bytes`` of features (then stops
    adding). ``hits`` / ``misses`` count images."""

    def __init__(self, max_bytes: int = 4 << 30):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = self.misses = 0
        self._store: dict[bytes, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._store)

    @staticmethod
    def key(image: torch.Tensor) -> bytes:
        data = image.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
        shape = ",".join(map(str, image.shape)).encode()
        return hashlib.blake2b(shape + b"|" + data, digest_size=20).digest()

    def __call__(self, trunk_fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        keys = [self.key(img) for img in images]
        missing = [i for i, k in enumerate(keys) if k not in self._store]
        fresh = {}
        if missing:
            with torch.no_grad():
                computed = trunk_fn(images[missing]).detach()
            for row, i in enumerate(missing):
                fresh[keys[i]] = computed[row]
            for k, feat in fresh.items():
                size = feat.numel() * feat.element_size()
                if self.bytes + size <= self.max_bytes:
                    self._store[k] = feat.clone()
                    self.bytes += size
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        return torch.stack([fresh[k] if k in fresh else self._store[k] for k in keys]).to(images.device)
