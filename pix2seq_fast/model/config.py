"""``ModelConfig``: every architecture number of a Pix2Seq model, with a JSON round trip."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from pix2seq_fast.vocab import Vocab

ENCODERS = ("vit", "resnet", "cnn")


def _image_size(value) -> int | tuple[int, int]:
    """``S`` or ``(H, W)`` (a JSON list too) -> ``S`` for a square, else ``(H, W)``."""
    from pix2seq_fast.preprocess import canvas_hw  # noqa: PLC0415  (the one canvas check)

    try:
        height, width = canvas_hw(value)
    except ValueError:
        raise ValueError(f"ModelConfig: image_size must be a positive int or an [H, W] pair of them, "
                         f"got {value!r}") from None
    return height if height == width else (height, width)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of an encoder + projection + autoregressive decoder.

    ``encoder="vit"``: ViT/``patch_size`` with fixed 2-D sin-cos positions (any resolution divisible by
    the patch size). ``encoder="resnet"``: the timm ``backbone`` (stride 32) + Linear + LN + sin-cos +
    ``enc_layers`` transformer blocks (the authors'). ``encoder="cnn"``: the same with the trunk tapped
    at ``feature_stride``, images normalised by ``pixel_mean`` / ``pixel_std`` first, ``fuse_strides``
    (coarser taps, e.g. ``(16,)`` with ``feature_stride=8``) upsampled bilinearly to the
    ``feature_stride`` grid and concatenated to its channels, ``enc_layers`` may be 0,
    ``freeze_backbone`` keeps the trunk fixed, and ``backbone_weights`` names where its
    pretrained weights come from (``""`` none, ``"timm"``, ``"file:PATH"``, ``"package:NAME"``;
    see ``model.pretrained``; loaded when a model is created for training). The projection MLP's
    hidden width is ``dec_dim * (enc_mlp // enc_dim)`` (the authors' rule). ``image_size`` is the
    canvas: one side ``S`` (a square) or ``(H, W)`` as the authors' configs may give it (equal sides
    become ``S``); ``canvas_hw`` is always ``(H, W)``. ``segment_crop``: segmentation was trained on
    crops around each instance, so the predictor segments on crops unless told otherwise.
    Dropout (after the MLP activation) and drop-path (per residual branch) act only in training.
    """

    encoder: str = "vit"
    image_size: int | tuple[int, int] = 640
    patch_size: int = 16
    backbone: str = "resnet50"
    feature_stride: int = 32
    fuse_strides: tuple = ()
    backbone_weights: str = ""
    freeze_backbone: bool = False
    pixel_mean: tuple = ()
    pixel_std: tuple = ()
    enc_layers: int = 12
    enc_dim: int = 768
    enc_mlp: int = 3072
    enc_heads: int = 12
    dec_layers: int = 6
    dec_dim: int = 512
    dec_mlp: int = 2048
    dec_heads: int = 16
    max_seq_len: int = 512
    dropout: float = 0.1
    drop_path: float = 0.1
    attn_dropout: float = 0.0
    segment_crop: bool = False
    vocab: Vocab = field(default_factory=Vocab)

    def __post_init__(self):
        if self.encoder not in ENCODERS:
            raise ValueError(f"ModelConfig: encoder must be one of {ENCODERS}, got {self.encoder!r}")
        for name in ("pixel_mean", "pixel_std"):  # JSON gives lists
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if not isinstance(self.fuse_strides, (tuple, list)):
            raise ValueError(f"ModelConfig: fuse_strides must be a tuple of strides, got {self.fuse_strides!r}")
        object.__setattr__(self, "fuse_strides", tuple(self.fuse_strides))
        self._check_backbone()
        if not isinstance(self.segment_crop, bool):
            raise ValueError(f"ModelConfig: segment_crop must be True or False, got {self.segment_crop!r}")
        if not isinstance(self.vocab, Vocab):
            raise ValueError(f"ModelConfig: vocab must be a Vocab, got {type(self.vocab).__name__}")
        object.__setattr__(self, "image_size", _image_size(self.image_size))
        for name in ("patch_size", "enc_dim", "enc_mlp", "enc_heads",
                     "dec_layers", "dec_dim", "dec_mlp", "dec_heads", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ModelConfig: {name} must be a positive int, got {value!r}")
        for name, dim, heads in (("enc", self.enc_dim, self.enc_heads), ("dec", self.dec_dim, self.dec_heads)):
            if dim % heads:
                raise ValueError(f"ModelConfig: {name}_dim {dim} is not divisible by {name}_heads {heads}")
            if dim % 4:
                raise ValueError(f"ModelConfig: {name}_dim must be divisible by 4 (2-D sin-cos), got {dim}")
        if self.enc_mlp < self.enc_dim:
            raise ValueError(f"ModelConfig: enc_mlp ({self.enc_mlp}) must be >= enc_dim ({self.enc_dim}); "
                             "the projection MLP width is dec_dim * (enc_mlp // enc_dim)")
        for name in ("dropout", "drop_path", "attn_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"ModelConfig: {name} must be in [0, 1), got {value}")

    def _check_backbone(self) -> None:
        from pix2seq_fast.model.pretrained import check_source  # noqa: PLC0415

        if not isinstance(self.enc_layers, int) or isinstance(self.enc_layers, bool) or \
                self.enc_layers < (0 if self.encoder == "cnn" else 1):
            raise ValueError(f"ModelConfig: enc_layers must be an int >= {0 if self.encoder == 'cnn' else 1} "
                             f"for encoder {self.encoder!r}, got {self.enc_layers!r}")
        if self.feature_stride not in (2, 4, 8, 16, 32):
            raise ValueError(f"ModelConfig: feature_stride must be 2, 4, 8, 16 or 32, got {self.feature_stride!r}")
        if self.fuse_strides and self.encoder != "cnn":
            raise ValueError(f"ModelConfig: fuse_strides applies to encoder 'cnn', not {self.encoder!r}")
        for stride in self.fuse_strides:
            if stride not in (4, 8, 16, 32) or isinstance(stride, bool) or stride <= self.feature_stride:
                raise ValueError(f"ModelConfig: fuse_strides must hold strides 4, 8, 16 or 32 coarser than "
                                 f"feature_stride {self.feature_stride}, got {self.fuse_strides!r}")
        if len(set(self.fuse_strides)) != len(self.fuse_strides):
            raise ValueError(f"ModelConfig: fuse_strides repeats a stride: {self.fuse_strides!r}")
        if self.encoder == "resnet" and self.feature_stride != 32:
            raise ValueError("ModelConfig: encoder 'resnet' (the authors') taps stride 32; use encoder 'cnn' "
                             f"for feature_stride {self.feature_stride}")
        if self.encoder != "cnn" and (self.backbone_weights or self.freeze_backbone or self.pixel_mean):
            raise ValueError("ModelConfig: backbone_weights, freeze_backbone and pixel_mean/std apply to "
                             f"encoder 'cnn', not {self.encoder!r}")
        check_source(self.backbone_weights)
        if len(self.pixel_mean) != len(self.pixel_std) or len(self.pixel_mean) not in (0, 3) or \
                any(s <= 0 for s in self.pixel_std):
            raise ValueError(f"ModelConfig: pixel_mean / pixel_std must both be empty or 3 values (std > 0), "
                             f"got {self.pixel_mean} / {self.pixel_std}")

    @property
    def canvas_hw(self) -> tuple[int, int]:
        """``(H, W)`` of the canvas."""
        size = self.image_size
        return (size, size) if isinstance(size, int) else size

    @property
    def vocab_size(self) -> int:
        return self.vocab.vocab_size

    @property
    def proj_mlp_hidden(self) -> int:
        return self.dec_dim * (self.enc_mlp // self.enc_dim)

    @property
    def stride(self) -> int:
        """Input pixels per image token along each side."""
        return {"vit": self.patch_size, "resnet": 32}.get(self.encoder, self.feature_stride)

    def replace(self, **overrides) -> "ModelConfig":
        unknown = set(overrides) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"ModelConfig: unknown field(s) {sorted(unknown)}")
        if isinstance(overrides.get("vocab"), dict):
            overrides["vocab"] = Vocab.from_dict(overrides["vocab"])
        return replace(self, **overrides)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        if not isinstance(d, dict):
            raise ValueError(f"ModelConfig.from_dict: expected a dict, got {type(d).__name__}")
        d = dict(d)
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"ModelConfig.from_dict: unknown field(s) {sorted(unknown)}")
        if "vocab" in d:
            try:
                d["vocab"] = Vocab.from_dict(d["vocab"])
            except TypeError as e:
                raise ValueError(f"ModelConfig.from_dict: bad vocab {d['vocab']!r}: {e}") from None
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"ModelConfig.from_json: not valid JSON ({e})") from None
        return cls.from_dict(d)

    def save(self, path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path) -> "ModelConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ModelConfig.load: no config file at {path}")
        return cls.from_json(path.read_text())
