"""Checkpoints are atomic and resumable: a process killed while saving never corrupts the last good one."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from pix2seq_fast.training.checkpoint import (
    checkpoint_path, list_checkpoints, load_checkpoint_file, load_latest_checkpoint, model_from_checkpoint,
    rng_state, save_checkpoint, set_rng_state)
from pix2seq_fast.training.schedule import build_scheduler, warmup_linear_decay


def test_save_keeps_last_k_and_loads_newest(tmp_path):
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, step, {"value": torch.tensor(step)}, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000030.pt", "step_00000040.pt"]
    state = load_latest_checkpoint(tmp_path)
    assert state["step"] == 40 and int(state["value"]) == 40
    assert set(state["rng"]) >= {"torch", "numpy", "python"}


def test_unreadable_newest_checkpoint_is_skipped(tmp_path):
    save_checkpoint(tmp_path, 1, {"value": torch.tensor(1)})
    bad = save_checkpoint(tmp_path, 2, {"value": torch.tensor(2)})
    bad.write_bytes(bad.read_bytes()[:50])  # truncated by something other than our writer
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint"):
        state = load_latest_checkpoint(tmp_path)
    assert state["step"] == 1


class _Payload:
    """A pickle that runs code when loaded without weights_only: it would create ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_pickle_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"
    ckpt_dir = tmp_path / "checkpoints"
    good = save_checkpoint(ckpt_dir, 1, {"value": torch.tensor(1)})
    torch.save({"model": {}, "step": 2, "evil": _Payload(marker)}, checkpoint_path(ckpt_dir, 2))
    with pytest.raises(ValueError, match=r"step_00000002\.pt cannot be read safely"):
        load_checkpoint_file(checkpoint_path(ckpt_dir, 2))
    with pytest.raises(ValueError, match="cannot be read safely"):
        model_from_checkpoint(checkpoint_path(ckpt_dir, 2))
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint"):
        assert load_latest_checkpoint(ckpt_dir)["path"] == str(good)
    assert not marker.exists()


def test_rng_state_round_trips_and_old_numpy_states_load(tmp_path):
    import random

    import numpy as np
    save_checkpoint(tmp_path / "new", 1, {})  # records the RNG states of this moment
    draws = (torch.rand(3), np.random.rand(3), random.random())
    loaded = load_latest_checkpoint(tmp_path / "new")
    set_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(3), draws[0]) and np.array_equal(np.random.rand(3), draws[1])
    assert random.random() == draws[2]
    assert isinstance(rng_state()["numpy"], dict)  # no numpy array in new checkpoints
    (tmp_path / "old").mkdir()
    old = {"step": 3, "rng": {**loaded["rng"], "numpy": np.random.get_state()}}  # an earlier version's file
    torch.save(old, checkpoint_path(tmp_path / "old", 3))
    restored = load_latest_checkpoint(tmp_path / "old")
    set_rng_state(restored["rng"])
    expected = np.random.rand(2)
    np.random.set_state(old["rng"]["numpy"])
    assert np.array_equal(np.random.rand(2), expected)


def test_not_a_checkpoint_dict(tmp_path):
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="does not hold a checkpoint dict"):
        load_checkpoint_file(tmp_path / "list.pt")
    torch.save({"step": 1}, tmp_path / "nomodel.pt")
    with pytest.raises(ValueError, match="no model_config"):
        model_from_checkpoint(tmp_path / "nomodel.pt")


def test_no_checkpoint_gives_none(tmp_path):
    assert load_latest_checkpoint(tmp_path / "missing") is None


def test_killed_during_write_leaves_last_good_checkpoint(tmp_path):
    save_checkpoint(tmp_path, 5, {"value": torch.tensor(5)})
    # a child process starts writing a large checkpoint (~400 MB) and is killed mid-write
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import torch
        from pix2seq_fast.training.checkpoint import save_checkpoint
        big = torch.zeros(100_000_000)
        print("ready", flush=True)
        save_checkpoint({str(tmp_path)!r}, 6, {{"value": torch.tensor(6), "big": big}})
        print("finished", flush=True)
    """)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    deadline = time.time() + 30
    while time.time() < deadline and not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
        time.sleep(0.005)
    assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir()), "writer never started"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000005.pt"]
    assert load_latest_checkpoint(tmp_path)["step"] == 5
    save_checkpoint(tmp_path, 7, {"value": torch.tensor(7)})  # the next save clears the debris
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_warmup_then_linear_decay_to_end_factor():
    assert warmup_linear_decay(0, 10, 110) == pytest.approx(0.1)
    assert warmup_linear_decay(9, 10, 110) == pytest.approx(1.0)
    assert warmup_linear_decay(60, 10, 110) == pytest.approx(1 - 0.99 * 0.5)
    assert warmup_linear_decay(110, 10, 110) == pytest.approx(0.01)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        build_scheduler(opt, 20, 10)
