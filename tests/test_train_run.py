"""Whole runs of the trainer in-process: the loss falls when overfitting a handful of images; a run
stopped at a checkpoint and resumed reproduces the uninterrupted run; the outputs load into the
predictor."""
import json

import pytest
import torch

from pix2seq_fast.model import Pix2Seq
from pix2seq_fast.predictor import predict
from pix2seq_fast.results import Caption, Detections
from pix2seq_fast.training.checkpoint import list_checkpoints, model_from_checkpoint
from pix2seq_fast.training.run import run
from train_helpers import losses_by_step, make_data, tiny_config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("run_data"))


def test_loss_falls_when_overfitting_a_handful_of_images(data, tmp_path):
    out = tmp_path / "overfit"
    cfg = tiny_config(data, out, steps=50, warmup_steps=4, lr=5e-3, ckpt_every=0, log_every=5,
                      model_overrides={**tiny_config(data, out).model_overrides, "dropout": 0.0, "drop_path": 0.0},
                      batch_size=4, vis_images=0, eval_images=4)
    result = run(cfg, progress=False)
    losses = losses_by_step(out)
    first, last = losses[5], losses[50]
    assert last < 0.55 * first, losses
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["s_per_step"] > 0 and r["lr"] > 0 for r in records if "loss" in r)
    for task in cfg.tasks:  # every task's own loss falls too
        per_task = [r[f"loss_{task}"] for r in records if f"loss_{task}" in r]
        assert per_task[-1] < 0.75 * per_task[0], (task, per_task)
    assert set(result["summary"]) == {"box_AP", "mask_AP", "keypoint_AP", "BLEU-4", "CIDEr", "mask_AP_given_boxes",
                                      "keypoint_AP_given_boxes"}
    final = json.loads((out / "final_metrics.json").read_text())
    assert final["summary"] == result["summary"] and final["step"] == 50


def test_resumed_run_reproduces_the_uninterrupted_run(data, tmp_path):
    whole = tmp_path / "whole"
    run(tiny_config(data, whole, steps=6, ckpt_every=3, vis_images=0), progress=False)
    parted = tmp_path / "parted"
    first = run(tiny_config(data, parted, steps=6, ckpt_every=3, stop_at=3), progress=False)
    assert first["step"] == 3 and not (parted / "final").exists()
    assert [p.name for p in list_checkpoints(parted / "checkpoints")] == ["step_00000003.pt"]
    with pytest.raises(ValueError, match="already holds checkpoints: pass --resume"):
        run(tiny_config(data, parted, steps=6, ckpt_every=3), progress=False)
    second = run(tiny_config(data, parted, steps=6, ckpt_every=3, vis_images=0), resume=True, progress=False)
    assert second["resumed_from"] == 3 and second["step"] == 6
    expected, got = losses_by_step(whole), losses_by_step(parted)
    assert sorted(got) == sorted(expected) == [1, 2, 3, 4, 5, 6]
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), (step, got, expected)
    a = Pix2Seq.from_pretrained(whole / "final").state_dict()
    b = Pix2Seq.from_pretrained(parted / "final").state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    # the final checkpoint and the exported model load into the predictor
    image = str(sorted((data / "images" / "val").iterdir())[0])
    from_ckpt = model_from_checkpoint(parted / "checkpoints")
    assert isinstance(predict(from_ckpt, image, "detect", max_objects=3, seed=0), Detections)
    caption = predict(Pix2Seq.from_pretrained(parted / "final"), image, "caption", max_length=8, seed=0)
    assert isinstance(caption, Caption) and isinstance(caption.text, str)
    for name, value in from_ckpt.state_dict().items():
        torch.testing.assert_close(value, b[name], msg=name)


def test_data_mixing_and_a_single_task_run(data, tmp_path):
    out = tmp_path / "mixed"
    with pytest.warns(UserWarning, match="not evaluating 'keypoints': no annotation in the first 1 val images"):
        result = run(tiny_config(data, out, mixing="data", batch_size=4, steps=3, ckpt_every=0, vis_images=0,
                                 eval_images=1), progress=False)
    assert result["step"] == 3 and sorted(losses_by_step(out)) == [1, 2, 3]
    assert "keypoint_AP" not in result["summary"] and "box_AP" in result["summary"]
    out = tmp_path / "detect_only"
    result = run(tiny_config(data, out, tasks=("detect",), task_weights={"detect": 1.0}, steps=2, ckpt_every=0,
                             repeat_augment=2, accum_steps=2), progress=False)
    assert set(result["summary"]) == {"box_AP"} and (out / "predictions_detect.png").is_file()
    assert not (out / "tokenizer.model").exists()  # no caption task, no tokenizer


def test_frozen_encoder_steps_leave_the_encoder_untouched(data, tmp_path):
    from pix2seq_fast.text import Tokenizer
    from pix2seq_fast.training.model_setup import build_model

    cfg = tiny_config(data, tmp_path / "frozen", steps=4, freeze_encoder_steps=2, stop_at=2, ckpt_every=0)
    model = run(cfg, progress=False)["model"]
    torch.manual_seed(cfg.seed)
    initial = build_model(cfg, Tokenizer.from_file(tmp_path / "frozen" / "tokenizer.model")).state_dict()
    trained = model.state_dict()
    for name, value in trained.items():
        assert torch.equal(value, initial[name]) == name.startswith("encoder."), name
