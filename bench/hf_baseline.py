"""The Hugging Face baseline every generation bench compares against: an mBART decoder with the vit-b
preset's decoder dims (6 x 512, 16 heads, MLP 2048, 35K vocabulary), random weights, no dropout."""
from __future__ import annotations

import torch


def mbart_like_vit_b():
    """``MBartForConditionalGeneration`` in eval mode, weights from ``torch.manual_seed(0)``."""
    from transformers import MBartConfig, MBartForConditionalGeneration

    config = MBartConfig(vocab_size=35000, d_model=512, encoder_layers=1, decoder_layers=6,
                         encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=2048,
                         decoder_ffn_dim=2048, max_position_embeddings=1024, activation_function="gelu",
                         dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, scale_embedding=False,
                         pad_token_id=0, bos_token_id=10, eos_token_id=None, decoder_start_token_id=10,
                         forced_eos_token_id=None)
    torch.manual_seed(0)
    return MBartForConditionalGeneration(config).eval()
