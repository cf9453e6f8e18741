"""The autoregressive decoder: pre-LN blocks of causal self-attention -> cross-attention -> MLP,
learned positions, token embedding tied to the output layer plus an output bias, final LN."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pix2seq_fast.model.config import ModelConfig
from pix2seq_fast.model.layers import LayerNorm, MLPBlock, MultiHeadAttention, drop_path_or_identity


class DecoderLayer(nn.Module):
    """``x + SelfAttn(LN(x)) -> x + CrossAttn(LN(x), memory) -> MLP block``; ``memory`` is used as
    given (the authors do not normalise it again). ``[B, L, D], [B, S, D] -> [B, L, D]``."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.dec_dim
        self.self_norm = LayerNorm(d)
        self.self_attn = MultiHeadAttention(d, config.dec_heads, config.attn_dropout)
        self.cross_norm = LayerNorm(d)
        self.cross_attn = MultiHeadAttention(d, config.dec_heads, config.attn_dropout)
        self.mlp = MLPBlock(d, config.dec_mlp, config.dropout, config.drop_path)
        self.drop_path = drop_path_or_identity(config.drop_path)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        h = self.self_norm(x)
        x = x + self.drop_path(self.self_attn(h, h, causal=True))
        x = x + self.drop_path(self.cross_attn(self.cross_norm(x), memory))
        return self.mlp(x)


class Decoder(nn.Module):
    """``forward(tokens[B, L], memory[B, S, D]) -> logits[B, L, V]`` (teacher forcing; ``logits[:, t]``
    predicts token ``t + 1``). Positions start at 0 on the first prompt token."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        d, v = config.dec_dim, config.vocab_size
        self.max_seq_len = config.max_seq_len
        self.token_embedding = nn.Embedding(v, d)
        self.pos_embedding = nn.Parameter(torch.zeros(config.max_seq_len, d))
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.dec_layers))
        self.norm = LayerNorm(d)
        self.output_bias = nn.Parameter(torch.zeros(v))
        # Inference hook: a module computing the output layer instead of the tied fp32 embedding
        # (``model.quantize.quantize_decoder`` sets a low-precision copy here).
        self.output_projection: nn.Module | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.token_embedding.weight, std=0.02)
        nn.init.trunc_normal_(self.pos_embedding, std=0.02)
        nn.init.zeros_(self.output_bias)
        for module in self.layers.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def embed(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``tokens[B, L]``, ``positions[B, L]`` or ``[L]`` -> ``[B, L, D]``."""
        return self.token_embedding(tokens) + self.pos_embedding[positions]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[..., D] -> [..., V]``: final LN, tied embedding, output bias."""
        if self.output_projection is not None:
            return self.output_projection(self.norm(hidden))
        return F.linear(self.norm(hidden), self.token_embedding.weight, self.output_bias)

    def forward(self, tokens: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        if length > self.max_seq_len:
            raise ValueError(f"Decoder: tokens has length {length} > max_seq_len {self.max_seq_len}")
        x = self.embed(tokens, torch.arange(length, device=tokens.device))
        for layer in self.layers:
            x = layer(x, memory)
        return self.logits(x)
