"""The model a run trains: the preset with ``model_overrides`` (a partial ``vocab`` dict is merged
into the preset's vocabulary) and ``image_size``, or the ``init_from`` checkpoint; checked against
the tokenizer and the task sequence lengths."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from pix2seq_fast.training.config import TrainConfig


def model_config(cfg: TrainConfig):
    """``ModelConfig`` of the preset with the run's overrides; ``segment_crop`` records whether
    segmentation trains on instance crops (``augment["segment"]["person_crop"]``), so the saved
    model's predictor segments the same way."""
    from pix2seq_fast.model import get_config  # noqa: PLC0415

    base = get_config(cfg.preset)
    overrides = dict(cfg.model_overrides)
    if isinstance(overrides.get("vocab"), dict):
        overrides["vocab"] = {**dataclasses.asdict(base.vocab), **overrides["vocab"]}
    if cfg.image_size:
        overrides["image_size"] = cfg.image_size
    if "segment" in cfg.tasks:
        overrides["segment_crop"] = bool((cfg.augment.get("segment") or {}).get("person_crop", False))
    return base.replace(**overrides)


def check_fits(config, cfg: TrainConfig, tokenizer) -> None:
    """Every task's training sequence fits ``max_seq_len``; the tokenizer fits the text vocabulary;
    the canvas suits the encoder."""
    for task in cfg.tasks:
        length = cfg.codec_config(task).seq_len
        if length > config.max_seq_len:
            raise ValueError(f"task {task!r} trains on {length}-token sequences but the model's max_seq_len is "
                             f"{config.max_seq_len}; shrink task_configs[{task!r}] or raise model_overrides.max_seq_len")
    if "caption" in cfg.tasks:
        if tokenizer is None:
            raise ValueError("the caption task needs a tokenizer")
        if tokenizer.vocab_size > config.vocab.text_vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.vocab_size} pieces but the model's vocab.text_vocab_size "
                             f"is {config.vocab.text_vocab_size}; lower text_vocab_size or raise the model's")
    if not isinstance(config.image_size, int):
        raise ValueError(f"training needs a square canvas (one int image_size), got {config.image_size}; "
                         "non-square [H, W] canvases are for converted checkpoints and inference")
    if config.encoder == "vit" and config.image_size % config.patch_size:
        raise ValueError(f"image_size {config.image_size} must be a multiple of the patch size {config.patch_size}")


def build_model(cfg: TrainConfig, tokenizer=None):
    """A fresh ``Pix2Seq`` (weights from the global torch RNG; a CNN trunk's from its
    ``backbone_weights`` source), or the ``init_from`` weights loaded
    into the configured architecture (their shapes must match; the model keeps ``tokenizer``)."""
    from pix2seq_fast.model import Pix2Seq  # noqa: PLC0415
    from pix2seq_fast.model.checkpoint import check_state_dict  # noqa: PLC0415

    config = model_config(cfg)
    check_fits(config, cfg, tokenizer)
    model = Pix2Seq(config, tokenizer=tokenizer)
    if config.backbone_weights and not cfg.init_from:
        from pix2seq_fast.model.pretrained import load_backbone_weights  # noqa: PLC0415

        load_backbone_weights(model)
    if cfg.init_from:
        if not Path(cfg.init_from).is_dir():
            raise FileNotFoundError(f"init_from {cfg.init_from!r} is not a save_pretrained() directory")
        source = Pix2Seq.from_pretrained(cfg.init_from)
        state = source.state_dict()
        check_state_dict(model, state, source=f"init_from {cfg.init_from}")
        model.load_state_dict(state)
    return model


def init_tokenizer(cfg: TrainConfig):
    """The tokenizer stored with the ``init_from`` checkpoint (``None`` if none)."""
    if not cfg.init_from:
        return None
    path = Path(cfg.init_from) / "tokenizer.model"
    if not path.is_file():
        return None
    from pix2seq_fast.text import Tokenizer  # noqa: PLC0415

    return Tokenizer.from_file(path)
