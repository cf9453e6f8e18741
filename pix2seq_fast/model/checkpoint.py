"""Our checkpoint format: ``model.safetensors`` + ``config.json`` (+ ``tokenizer.model``).

Reading and writing files only; building the model is ``Pix2Seq.from_pretrained``'s job, so this
module never imports the model class. :func:`state_problems` is the one check of a state dict
against what a config expects (used here and by the TF converter).
"""
from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pix2seq_fast.model.config import ModelConfig

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
TOKENIZER_NAME = "tokenizer.model"


def save_pretrained(model, directory) -> None:
    """Write ``model.state_dict()`` / ``model.config`` / ``model.tokenizer`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    model.config.save(directory / CONFIG_NAME)
    if model.tokenizer is not None:
        model.tokenizer.save(str(directory / TOKENIZER_NAME))


def state_problems(expected: dict, found: dict, *, missing: str = "missing keys",
                   unexpected: str = "unexpected keys", against: str = "model") -> list[str]:
    """What is wrong with ``found`` against ``expected`` (both ``{key: shape}``): one entry per kind
    (keys absent from ``found``, keys ``expected`` lacks, shape mismatches), named by the labels
    ``missing`` / ``unexpected`` and ``"checkpoint (shape) vs {against} (shape)"``; empty if none."""
    absent = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    misshaped = [f"{k}: checkpoint {tuple(found[k])} vs {against} {tuple(expected[k])}"
                 for k in sorted(set(expected) & set(found)) if tuple(found[k]) != tuple(expected[k])]
    problems = []
    if absent:
        problems.append(f"{missing} {absent}")
    if extra:
        problems.append(f"{unexpected} {extra}")
    if misshaped:
        problems.append(f"shape mismatches {misshaped}")
    return problems


def check_state_dict(model, state: dict, source: str = "state_dict") -> None:
    """Raise ``ValueError`` naming every missing, unexpected or misshaped key of ``state``."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = state_problems(expected, {k: tuple(v.shape) for k, v in state.items()})
    if problems:
        raise ValueError(f"{source} does not match the model config: " + "; ".join(problems))


def read_pretrained(directory, map_location="cpu"):
    """``directory`` written by :func:`save_pretrained` -> ``(ModelConfig, state dict, tokenizer or
    None)``. Raises ``FileNotFoundError`` for a missing file, ``ValueError`` for an unreadable one."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"from_pretrained: checkpoint directory {directory} does not exist")
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"from_pretrained: {directory} has no {name}")
    config = ModelConfig.load(directory / CONFIG_NAME)
    try:
        state = load_file(str(directory / WEIGHTS_NAME), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"from_pretrained: {directory / WEIGHTS_NAME} is not a readable safetensors "
                         f"file ({e})") from None
    tokenizer = None
    if (directory / TOKENIZER_NAME).is_file():
        from pix2seq_fast.text import Tokenizer  # noqa: PLC0415  (sentencepiece only when needed)
        tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_NAME))
    return config, state, tokenizer
