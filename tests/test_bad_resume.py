"""Trainer faults: a rejected ``--resume`` changes no file; ``--resume`` with only unreadable
checkpoints stops instead of training again from step 0; a run killed (SIGKILL) in the middle of an
evaluation, during training or at the end, resumes and finishes, losing at most one save interval."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from pix2seq_fast.training.checkpoint import list_checkpoints
from pix2seq_fast.training.run import main as train_main
from pix2seq_fast.training.run import run
from train_helpers import REPO, TINY_MODEL, losses_by_step, make_data, tiny_config, write_json_config

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
DETECT = dict(tasks=("detect",), task_weights={"detect": 1.0}, vis_images=0, eval_images=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("resume_data"))


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    """A finished 2-step detection run with a checkpoint per step."""
    out = tmp_path_factory.mktemp("finished") / "run"
    run(tiny_config(data, out, steps=2, ckpt_every=1, keep_last=3, **DETECT), progress=False)
    return out


def _snapshot(folder):
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _copy(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


def test_rejected_resume_changes_no_file(data, finished, tmp_path, capsys):
    out = _copy(finished, tmp_path / "run")
    before = _snapshot(out)
    other = dict(TINY_MODEL, dec_mlp=256)
    cfg = tiny_config(data, out, steps=4, ckpt_every=1, model_overrides=other, **DETECT)
    with pytest.raises(ValueError, match="different model config"):
        run(cfg, resume=True, progress=False)
    assert _snapshot(out) == before
    code = train_main(["--config", str(write_json_config(cfg, tmp_path / "other.json")), "--resume", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "different model config" in err
    assert _snapshot(out) == before


def test_resume_with_only_unreadable_checkpoints_stops(data, finished, tmp_path):
    out = _copy(finished, tmp_path / "run")
    for path in list_checkpoints(out / "checkpoints"):
        path.write_bytes(path.read_bytes()[:100])
    before = _snapshot(out)
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint"), \
            pytest.raises(ValueError, match=r"none of the 2 checkpoint\(s\) .* is readable"):
        run(tiny_config(data, out, steps=4, ckpt_every=1, **DETECT), resume=True, progress=False)
    assert _snapshot(out) == before


KILLER = textwrap.dedent("""
    import os, signal, sys
    from pix2seq_fast.training import evaluation
    from pix2seq_fast.training.run import main
    kill_at, calls, original = int(sys.argv[2]), [0], evaluation.evaluate
    def evaluate(*args, **kwargs):
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # in the middle of an evaluation
        return original(*args, **kwargs)
    evaluation.evaluate = evaluate
    sys.exit(main(["--config", sys.argv[1], "--quiet"] + sys.argv[3:]))
""")


@pytest.mark.parametrize("kill_at, resumed_from", [(1, 2), (2, 4)], ids=["mid-training-eval", "final-eval"])
def test_killed_mid_evaluation_resumes_and_finishes(data, tmp_path, kill_at, resumed_from):
    out = tmp_path / "run"
    cfg = tiny_config(data, out, steps=4, ckpt_every=2, eval_every=2, **DETECT)
    config = write_json_config(cfg, tmp_path / "cfg.json")
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    killed = subprocess.run([sys.executable, str(script), str(config), str(kill_at)], cwd=REPO, env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (out / "final_metrics.json").exists()
    resumed = subprocess.run([sys.executable, str(script), str(config), "0", "--resume"], cwd=REPO, env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert f"resumed from step {resumed_from}" in resumed.stdout
    assert sorted(losses_by_step(out)) == [1, 2, 3, 4]
    final = json.loads((out / "final_metrics.json").read_text())
    assert final["step"] == 4 and final["resumed_from"] == resumed_from and "box_AP" in final["summary"]
