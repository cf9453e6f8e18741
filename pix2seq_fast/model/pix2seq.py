"""``Pix2Seq``: image encoder + projection + autoregressive decoder (SPEC §3, tf_parity README §6)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pix2seq_fast.model import checkpoint
from pix2seq_fast.model.config import ModelConfig
from pix2seq_fast.model.decoder import Decoder
from pix2seq_fast.model.encoder import build_encoder
from pix2seq_fast.model.projection import Projection


def _image_grid(config: ModelConfig, height: int, width: int) -> tuple[int, int]:
    if config.encoder == "vit":
        return height // config.patch_size, width // config.patch_size
    return -(-height // config.stride), -(-width // config.stride)


class Pix2Seq(nn.Module):
    """One encoder-decoder for detection, segmentation, keypoints and captioning.

    - ``encode(images[B, 3, H, W] in [0, 1]) -> memory[B, N, dec_dim]`` (what the decoder attends to);
    - ``decode(memory[N_img, N, dec_dim], tokens[B, L], image_index[B] | None) -> logits[B, L, V]``;
    - ``forward(images, tokens) -> logits[B, L, V]`` (teacher forcing; ``logits[:, t]`` predicts t + 1).

    ``tokenizer`` (optional, a ``pix2seq_fast.text.Tokenizer``) travels with ``save_pretrained``.
    """

    def __init__(self, config: ModelConfig, tokenizer=None):
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise ValueError(f"Pix2Seq: config must be a ModelConfig, got {type(config).__name__}")
        self.config = config
        self.tokenizer = tokenizer
        self.encoder = build_encoder(config)
        self.projection = Projection(config)
        self.decoder = Decoder(config)

    @property
    def vocab(self):
        return self.config.vocab

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def check_images(self, images) -> None:
        if not isinstance(images, torch.Tensor):
            raise ValueError(f"Pix2Seq: images must be a torch.Tensor [B, 3, H, W], got {type(images).__name__}"
                             " (use pix2seq_fast.preprocess to load files / arrays / PIL images)")
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"Pix2Seq: images must have shape [B, 3, H, W], got {tuple(images.shape)}")
        if images.shape[0] == 0:
            raise ValueError("Pix2Seq: images is an empty batch")
        if not images.is_floating_point():
            raise ValueError(f"Pix2Seq: images must be float in [0, 1], got dtype {images.dtype}")
        stride = self.config.stride
        h, w = images.shape[-2:]
        if self.config.encoder == "vit" and (h % stride or w % stride):
            raise ValueError(f"Pix2Seq: images height and width must be multiples of the patch size "
                             f"{stride}, got {h}x{w}")
        if h < stride or w < stride:
            raise ValueError(f"Pix2Seq: images must be at least {stride}x{stride}, got {h}x{w}")

    def check_tokens(self, tokens, batch: int | None = None) -> None:
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
            raise ValueError(f"Pix2Seq: tokens must be a [B, L] tensor, got "
                             f"{tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__}")
        if tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"Pix2Seq: tokens must be int64 or int32, got {tokens.dtype}")
        if tokens.shape[1] == 0 or tokens.shape[1] > self.config.max_seq_len:
            raise ValueError(f"Pix2Seq: tokens length must be in [1, max_seq_len={self.config.max_seq_len}], "
                             f"got {tokens.shape[1]}")
        if batch is not None and tokens.shape[0] != batch:
            raise ValueError(f"Pix2Seq: tokens has batch {tokens.shape[0]} but images has {batch}")
        # Value check on the host only: on CUDA it would sync every training step.
        if tokens.device.type == "cpu" and tokens.numel() and (
                int(tokens.min()) < 0 or int(tokens.max()) >= self.config.vocab_size):
            raise ValueError(f"Pix2Seq: tokens must lie in [0, vocab_size={self.config.vocab_size})")

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``images[B, 3, H, W]`` in [0, 1] -> ``memory[B, N, dec_dim]``."""
        self.check_images(images)
        rows, cols = _image_grid(self.config, images.shape[-2], images.shape[-1])
        return self.projection(self.encoder(images), rows, cols)

    def decode(self, memory: torch.Tensor, tokens: torch.Tensor,
               image_index: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced (uncached) decoding. ``memory[N_img, N, D]``, ``tokens[B, L]``,
        ``image_index[B]`` (row b attends to image ``image_index[b]``; default: b) -> ``[B, L, V]``."""
        self.check_tokens(tokens)
        if image_index is not None:
            memory = memory[image_index]
        elif memory.shape[0] != tokens.shape[0]:
            raise ValueError(f"Pix2Seq.decode: memory has {memory.shape[0]} images but tokens has "
                             f"{tokens.shape[0]} rows; pass image_index")
        return self.decoder(tokens, memory)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``images[B, 3, H, W]``, ``tokens[B, L]`` -> ``logits[B, L, V]``."""
        self.check_images(images)
        self.check_tokens(tokens, batch=images.shape[0])
        return self.decoder(tokens, self.encode(images))

    # ---- checkpoints -------------------------------------------------------------------------
    def save_pretrained(self, directory) -> None:
        """Write ``model.safetensors``, ``config.json`` (+ ``tokenizer.model``) into ``directory``."""
        checkpoint.save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory, map_location="cpu") -> "Pix2Seq":
        """The model ``save_pretrained`` wrote into ``directory`` (in eval mode); ``ValueError``
        names every key that disagrees with its ``config.json``."""
        config, state, tokenizer = checkpoint.read_pretrained(directory, map_location)
        with torch.device("meta"):
            model = cls(config, tokenizer=tokenizer)
        checkpoint.check_state_dict(model, state, source=str(Path(directory) / checkpoint.WEIGHTS_NAME))
        model.load_state_dict(state, assign=True)
        return model.eval()

    # ---- inference ---------------------------------------------------------------------------
    def predict(self, images, task: str = "detect", **kwargs):
        """Run a task end to end; see ``pix2seq_fast.predictor.predict``."""
        from pix2seq_fast.predictor import predict
        return predict(self, images, task, **kwargs)
