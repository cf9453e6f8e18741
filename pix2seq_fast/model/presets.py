"""Registry of named model presets (SPEC §3). ``get_config(name, **overrides)``, ``list_presets()``.

| preset      | encoder                              | decoder (layers/dim/MLP/heads) | vocab | params |
|-------------|--------------------------------------|--------------------------------|-------|--------|
| vit-b       | ViT-B/16 12 x 768, MLP 3072, 12 heads | 6 / 512 / 2048 / 16            | 35K   | 132M   |
| vit-b-det   | same                                 | same                           | 3K    | 115M   |
| vit-l       | ViT-L/16 24 x 1024, MLP 4096, 16 heads| 8 / 512 / 2048 / 16            | 3K    | 341M   |
| r50         | ResNet-50 + 6 x 256 (MLP 1024, 8 h)   | 6 / 256 / 1024 / 8             | 3K    | 37M    |
| tiny        | ViT/16 4 x 128, MLP 512, 4 heads     | 2 / 128 / 512 / 4              | 3.5K  | ~2.5M  |
| tiny-lite0  | EfficientNet-Lite0 (ImageNet, frozen) to stride 16 | 2 / 128 / 512 / 4  | 3.5K  | ~1.9M (0.7M trainable) |
| tiny-resnet | ResNet-18 + 2 x 128                  | 2 / 128 / 512 / 4              | 3.5K  | ~12M   |

Decoder head dim is 32 everywhere. The tiny presets train on two CPU cores in minutes at 160 px.
"""
from __future__ import annotations

from pix2seq_fast.model.config import ModelConfig
from pix2seq_fast.model.pretrained import IMAGENET_MEAN, IMAGENET_STD
from pix2seq_fast.vocab import Vocab

DETECTION_VOCAB = Vocab(text_vocab_size=0)      # 3000 tokens: the authors' detection checkpoints
MULTITASK_VOCAB = Vocab(text_vocab_size=32000)  # 35000 tokens: v2 multi-task with the 32K SentencePiece
TINY_VOCAB = Vocab(text_vocab_size=512)         # 3512 tokens

_VIT_B = dict(encoder="vit", patch_size=16, enc_layers=12, enc_dim=768, enc_mlp=3072, enc_heads=12,
              dec_layers=6, dec_dim=512, dec_mlp=2048, dec_heads=16, max_seq_len=512, image_size=640)
_TINY_DECODER = dict(dec_layers=2, dec_dim=128, dec_mlp=512, dec_heads=4, max_seq_len=512, image_size=160)

_PRESETS: dict[str, dict] = {
    "vit-b": dict(_VIT_B, vocab=MULTITASK_VOCAB),
    "vit-b-det": dict(_VIT_B, vocab=DETECTION_VOCAB),
    "vit-l": dict(_VIT_B, enc_layers=24, enc_dim=1024, enc_mlp=4096, enc_heads=16, dec_layers=8,
                  vocab=DETECTION_VOCAB),
    "r50": dict(encoder="resnet", backbone="resnet50", enc_layers=6, enc_dim=256, enc_mlp=1024, enc_heads=8,
                dec_layers=6, dec_dim=256, dec_mlp=1024, dec_heads=8, max_seq_len=512, image_size=640,
                vocab=DETECTION_VOCAB),
    "tiny": dict(_TINY_DECODER, encoder="vit", patch_size=16, enc_layers=4, enc_dim=128, enc_mlp=512,
                 enc_heads=4, vocab=TINY_VOCAB),
    "tiny-lite0": dict(_TINY_DECODER, encoder="cnn", backbone="tf_efficientnet_lite0", feature_stride=16,
                       backbone_weights="package:efficientnet-lite0", freeze_backbone=True,
                       pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD, enc_layers=0, enc_dim=128,
                       enc_mlp=512, enc_heads=4, vocab=TINY_VOCAB),
    "tiny-resnet": dict(_TINY_DECODER, encoder="resnet", backbone="resnet18", enc_layers=2, enc_dim=128,
                        enc_mlp=512, enc_heads=4, vocab=TINY_VOCAB),
}

# SPEC §3 parameter counts (the registry test checks them within 2%).
REFERENCE_PARAMS = {"vit-b": 132e6, "vit-b-det": 115e6, "vit-l": 341e6, "r50": 37e6}
TINY_PRESETS = ("tiny", "tiny-lite0", "tiny-resnet")


def list_presets() -> list[str]:
    return list(_PRESETS)


def get_config(name: str, **overrides) -> ModelConfig:
    """The preset ``name`` with any ``ModelConfig`` field overridden (``vocab`` may be a dict)."""
    if name not in _PRESETS:
        raise ValueError(f"get_config: unknown preset {name!r}; choose from {list_presets()}")
    return ModelConfig(**_PRESETS[name]).replace(**overrides)
