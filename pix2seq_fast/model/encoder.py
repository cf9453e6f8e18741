"""Image encoders built from timm: ViT with fixed 2-D sin-cos positions, and a CNN trunk (ResNet,
EfficientNet, ... optionally pretrained and frozen) + transformer blocks.

Both map ``images[B, 3, H, W]`` in [0, 1] to ``[B, N, enc_dim]`` after a final LayerNorm, with tokens
in row-major order (``row * n_cols + col``). Only ``encoder="cnn"`` normalises by mean/std.
"""
from __future__ import annotations

from functools import partial

import timm
import torch
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn
from torch.nn import functional as F

from pix2seq_fast.model.config import ModelConfig
from pix2seq_fast.model.layers import LayerNorm, SinCos2DCache, drop_path_or_identity, feed_forward


def _encoder_blocks_drop_path(blocks: nn.Sequential, rate: float) -> None:
    """The authors use one constant drop-path rate in every block (timm would ramp it linearly)."""
    for block in blocks:
        block.drop_path1 = drop_path_or_identity(rate)
        block.drop_path2 = drop_path_or_identity(rate)


class ViTEncoder(VisionTransformer):
    """timm ViT in the authors' order: patch conv -> flatten row-major -> stem LN -> + 2-D sin-cos ->
    blocks -> final LN. No class token, no learned positions; any size divisible by the patch works.

    ``forward(images[B,3,H,W]) -> [B, (H/p)*(W/p), enc_dim]``.
    """

    def __init__(self, config: ModelConfig):
        super().__init__(
            img_size=config.image_size, patch_size=config.patch_size, num_classes=0, global_pool="",
            embed_dim=config.enc_dim, depth=config.enc_layers, num_heads=config.enc_heads,
            mlp_ratio=config.enc_mlp / config.enc_dim, qkv_bias=True, class_token=False,
            pos_embed="none", dynamic_img_size=True, embed_norm_layer=LayerNorm, norm_layer=LayerNorm,
            act_layer=nn.GELU, attn_drop_rate=config.attn_dropout, proj_drop_rate=0.0,
            mlp_layer=partial(feed_forward, unit_dropout=config.dropout))
        _encoder_blocks_drop_path(self.blocks, config.drop_path)
        self.sincos = SinCos2DCache(config.enc_dim)

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, rows, cols, D]`` (after the stem LN) ``-> [B, rows*cols, D]`` plus the sin-cos code."""
        b, rows, cols, d = x.shape
        return x.reshape(b, rows * cols, d) + self.sincos(rows, cols, x.device, x.dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_features(images)


class BackboneEncoder(nn.Module):
    """A timm CNN trunk tapped at ``feature_stride`` -> flatten row-major -> dropout -> Linear -> LN ->
    + 2-D sin-cos -> ``enc_layers`` transformer blocks -> final LN.

    ``encoder="resnet"`` is the authors' ``ResNetTransformer`` (stride 32, images in [0, 1] as they
    are); ``encoder="cnn"`` taps any stride and first normalises the images with ``pixel_mean`` /
    ``pixel_std`` (what pretrained weights expect). With ``freeze_backbone`` the trunk's weights
    never change and its BatchNorms stay in eval mode; ``trunk_cache`` (set by the trainer, see
    ``training.feature_cache``) may then memoise its outputs while training.

    ``forward(images[B,3,H,W]) -> [B, ceil(H/s)*ceil(W/s), enc_dim]`` for stride ``s``.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.trunk = timm.create_model(config.backbone, pretrained=False)
        strides = [int(f["reduction"]) for f in self.trunk.feature_info]
        wanted = [config.stride, *sorted(config.fuse_strides)]
        missing = [s for s in wanted if s not in strides]
        if missing:
            raise ValueError(f"ModelConfig: backbone {config.backbone!r} has feature strides {strides}, "
                             f"not {', '.join(map(str, missing))}")
        self.taps = [strides.index(s) for s in wanted]
        self.trunk.prune_intermediate_layers(indices=self.taps, prune_head=True)
        # oneDNN's (depthwise) convolutions are faster on the CPU in NHWC: bench/bench_trunk.py
        self.trunk.to(memory_format=torch.channels_last)
        channels = sum(int(self.trunk.feature_info[t]["num_chs"]) for t in self.taps)
        self.frozen = bool(config.freeze_backbone)
        if self.frozen:
            self.trunk.requires_grad_(False)
        mean, std = config.pixel_mean or (0.0, 0.0, 0.0), config.pixel_std or (1.0, 1.0, 1.0)
        self.normalize = bool(config.pixel_mean)
        self.register_buffer("pixel_mean", torch.tensor(mean).reshape(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(std).reshape(1, 3, 1, 1))
        self.trunk_cache = None
        self.dropout = nn.Dropout(config.dropout)
        self.stem_projection = nn.Linear(channels, config.enc_dim)
        self.stem_norm = LayerNorm(config.enc_dim)
        self.sincos = SinCos2DCache(config.enc_dim)
        self.blocks = nn.Sequential(*[
            Block(config.enc_dim, config.enc_heads, mlp_ratio=config.enc_mlp / config.enc_dim, qkv_bias=True,
                  attn_drop=config.attn_dropout, drop_path=config.drop_path, norm_layer=LayerNorm,
                  act_layer=nn.GELU, mlp_layer=partial(feed_forward, unit_dropout=config.dropout))
            for _ in range(config.enc_layers)])
        self.norm = LayerNorm(config.enc_dim)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.trunk.eval()
        return self

    def trunk_features(self, images: torch.Tensor) -> torch.Tensor:
        """``images[B, 3, H, W]`` in [0, 1] -> trunk features ``[B, C, rows, cols]`` at ``feature_stride``
        (``C`` sums the channels of the tap and of each ``fuse_strides`` tap)."""
        if self.normalize:
            images = (images - self.pixel_mean) / self.pixel_std
        images = images.contiguous(memory_format=torch.channels_last)
        fine, *coarse = self.trunk.forward_intermediates(images, indices=self.taps, intermediates_only=True)
        if not coarse:
            return fine
        upsampled = [F.interpolate(c, size=fine.shape[-2:], mode="bilinear", align_corners=False) for c in coarse]
        return torch.cat([fine, *upsampled], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.trunk_cache is not None and self.training and self.frozen:
            features = self.trunk_cache(self.trunk_features, images)
        else:
            features = self.trunk_features(images)
        tokens = features.flatten(2).transpose(1, 2)
        tokens = self.stem_norm(self.stem_projection(self.dropout(tokens)))
        tokens = tokens + self.sincos(features.shape[2], features.shape[3], tokens.device, tokens.dtype)
        return self.norm(self.blocks(tokens))


def build_encoder(config: ModelConfig) -> nn.Module:
    if config.encoder == "vit":
        return ViTEncoder(config)
    return BackboneEncoder(config)
