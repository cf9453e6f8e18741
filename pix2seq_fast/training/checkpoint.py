"""Atomic, resumable training checkpoints.

A checkpoint is one file ``step_{step:08d}.pt`` holding model, optimizer, scheduler, step, RNG states
and the run config. It is written to a temporary file in the same directory, flushed and fsynced,
then renamed over the final name, so a process killed while saving never leaves a half-written
checkpoint under a final name: the last good one stays the newest valid file.

Every file is read with ``torch.load(weights_only=True)``: a crafted pickle cannot run code. RNG
states are stored as tensors and plain numbers for that reason (checkpoints of earlier versions,
which hold numpy's state as an array, still load: only numpy's array reconstruction is allowed in
addition).
"""
from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

_NAME = re.compile(r"^step_(\d{8})\.pt$")


def checkpoint_path(directory: str | os.PathLike, step: int) -> Path:
    return Path(directory) / f"step_{step:08d}.pt"


def rng_state() -> dict:
    """RNG states in a form ``torch.load(weights_only=True)`` reads (tensors, ints, floats, tuples)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    return {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        numpy_state = (numpy_state["name"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                       numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    np.random.set_state(numpy_state)
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temp file beside ``path``, fsync, then ``os.replace`` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Final-named checkpoints in ``directory``, oldest step first (temp files are ignored)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(directory, step: int, state: dict, keep_last: int = 3) -> Path:
    """Write ``state`` (plus RNG states) as the checkpoint of ``step``; keep the newest ``keep_last``."""
    path = atomic_torch_save({**state, "step": step, "rng": rng_state()}, checkpoint_path(directory, step))
    for stale in Path(directory).glob(".step_*.pt.*.tmp"):  # left by a writer that was killed
        stale.unlink(missing_ok=True)
    if keep_last > 0:
        for old in list_checkpoints(directory)[:-keep_last]:
            old.unlink(missing_ok=True)
    return path


def _numpy_globals() -> list:
    """What an earlier checkpoint's numpy RNG array needs beyond the weights-only defaults."""
    core = getattr(np, "_core", None) or np.core
    found = [core.multiarray._reconstruct, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None and hasattr(dtypes, "UInt32DType"):
        found.append(dtypes.UInt32DType)
    return found


def load_checkpoint_file(path, map_location="cpu") -> dict:
    """``torch.load(path, weights_only=True)`` of one checkpoint; ``ValueError`` naming the file when
    it is not a readable checkpoint (truncated, not a torch file, or a pickle that would run code)."""
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"checkpoint {path} cannot be read safely ({type(err).__name__}: {first[:300]})") from None
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} does not hold a checkpoint dict (got {type(state).__name__})")
    return state


def load_latest_checkpoint(directory, map_location="cpu") -> dict | None:
    """The newest checkpoint that loads; unreadable ones (e.g. truncated by a crash) are skipped
    with a warning. ``None`` when there is none."""
    import warnings  # noqa: PLC0415

    for path in reversed(list_checkpoints(directory)):
        try:
            state = load_checkpoint_file(path, map_location=map_location)
        except ValueError as err:  # a corrupt file must not stop the resume
            warnings.warn(f"skipping unreadable checkpoint: {err}", stacklevel=2)
            continue
        state["path"] = str(path)
        return state
    return None


def model_from_checkpoint(path, map_location="cpu"):
    """A ``Pix2Seq`` (with its tokenizer) from a training checkpoint file, or from the newest readable
    one in a checkpoints directory, in eval mode — ready for ``pix2seq_fast.predictor.predict``."""
    from pix2seq_fast.model import ModelConfig, Pix2Seq  # noqa: PLC0415
    from pix2seq_fast.text import Tokenizer  # noqa: PLC0415

    path = Path(path)
    if path.is_dir():
        state = load_latest_checkpoint(path, map_location=map_location)
        if state is None:
            raise FileNotFoundError(f"no readable checkpoint in {path}")
    elif path.is_file():
        state = load_checkpoint_file(path, map_location=map_location)
    else:
        raise FileNotFoundError(f"no checkpoint file or directory at {path}")
    if not isinstance(state.get("model_config"), dict) or not isinstance(state.get("model"), dict):
        raise ValueError(f"checkpoint {path} holds no model_config / model state")
    tokenizer = Tokenizer.from_bytes(state["tokenizer"]) if state.get("tokenizer") else None
    model = Pix2Seq(ModelConfig.from_dict(state["model_config"]), tokenizer=tokenizer)
    model.load_state_dict(state["model"])
    return model.eval()
