"""Trainer configuration: paper recipes load, overrides parse, bad keys and values raise clear errors."""
import json

import pytest

from pix2seq_fast.training.config import TrainConfig, load_config
from pix2seq_fast.training.model_setup import check_fits, model_config
from pix2seq_fast.training.run import main
from train_helpers import REPO, tiny_config

CONFIG_DIR = REPO / "train" / "configs"
ALL_CONFIGS = sorted(p.stem for p in CONFIG_DIR.glob("*.py"))


def test_every_config_in_the_repo_loads_and_builds_its_model_config():
    assert {"tiny_multitask", "tiny_detect", "vitb_multitask_640", "vitb_multitask_1024", "v1_det_scratch_r50",
            "v1_det_finetune"} <= set(ALL_CONFIGS)
    for name in ALL_CONFIGS:
        cfg = load_config(name, CONFIG_DIR)
        mc = model_config(cfg)
        assert mc.image_size == (cfg.image_size or mc.image_size)
        for task in cfg.tasks:  # every codec config is valid and its sequences fit the model
            assert cfg.codec_config(task).seq_len <= mc.max_seq_len


def test_partial_vocab_override_is_merged_into_the_preset_vocab():
    cfg = load_config("v1_det_scratch_r50", CONFIG_DIR)
    vocab = model_config(cfg).vocab
    assert (vocab.bins, vocab.text_vocab_size) == (2000, 0)
    assert (vocab.coord_offset, vocab.class_offset, vocab.num_classes) == (1000, 100, 900)  # preset's


def test_override_parses_literals_strings_and_nested_dicts(tmp_path):
    cfg = tiny_config(tmp_path, tmp_path).override(
        ["steps=9", "lr=3e-3", "out_dir=/tmp/x y", "task_configs.detect.max_objects=5", "augment.detect.flip_prob=0.0",
         "tasks=('detect',)", "task_weights={'detect': 2.0}"])
    assert (cfg.steps, cfg.lr, cfg.out_dir, cfg.tasks) == (9, 3e-3, "/tmp/x y", ("detect",))
    assert cfg.task_configs["detect"] == {"max_objects": 5}
    assert cfg.codec_config("detect").max_objects == 5
    assert cfg.augment == {"detect": {"flip_prob": 0.0}}


@pytest.mark.parametrize("assignment, message", [
    ("stepz=3", "unknown config key 'stepz'"),
    ("steps", "is not key=value"),
    ("steps=0", "steps must be an int >= 1"),
    ("steps=2.5", "steps must be an int >= 1"),
    ("lr=-1", "lr must be a finite number > 0"),
    ("feature_cache_gb=-1", "feature_cache_gb must be a finite number >= 0"),
    ("mixing=random", "mixing must be 'batch' or 'data'"),
    ("amp=fp16", "amp must be"),
    ("tasks=('detect', 'track')", "tasks must be a non-empty subset"),
    ("task_weights={'detect': 1.0}", "task_weights has no weight for task(s) ['segment'"),
    ("task_weights.detect=-1", "task_weights['detect'] must be a finite number >= 0"),
    ("task_configs.detect.max_boxes=3", "task_configs['detect'] has unknown key(s) ['max_boxes']"),
    ("task_configs.detect.max_objects=0", "max_objects must be >= 1"),
    ("task_configs.tracking={}", "task_configs names unknown task 'tracking'"),
    ("augment.segment.scale=(0.5, 1.0)", "augment['segment'] has unknown key(s) ['scale']"),
    ("model_overrides.enc_depth=3", "model_overrides has unknown key(s) ['enc_depth']"),
    ("model_overrides.vocab.num_bins=3", "model_overrides['vocab'] has unknown key(s) ['num_bins']"),
    ("warmup_steps=100", "warmup_steps (100) must be <= steps"),
    ("steps.x=1", "config key 'steps' is not a dict"),
    ("task_batch_sizes={'track': 2}", "task_batch_sizes names 'track'"),
    ("synthetic={'num_images': 3}", "synthetic has unknown key(s) ['num_images']"),
])
def test_bad_override_raises_a_clear_error(tmp_path, assignment, message):
    with pytest.raises(ValueError) as err:
        tiny_config(tmp_path, tmp_path).override([assignment])
    assert message in str(err.value)


def test_unknown_keys_in_a_json_config_are_named(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"steps": 3, "learning_rate": 0.1}))
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['learning_rate'\]"):
        load_config(str(path))
    with pytest.raises(FileNotFoundError, match="available: .*tiny_multitask"):
        load_config("no_such_config", CONFIG_DIR)


def test_sequences_that_do_not_fit_the_model_are_rejected(tmp_path):
    cfg = tiny_config(tmp_path, tmp_path, task_configs={"detect": {"max_objects": 100}})
    with pytest.raises(ValueError, match="task 'detect' trains on 500-token sequences but the model's max_seq_len is 64"):
        check_fits(model_config(cfg), cfg, tokenizer=None)


def test_main_reports_config_errors_with_exit_code_2(tmp_path, capsys):
    assert main(["--config", "tiny_multitask", "--set", "steps=5", "batch_size=0"], config_dir=CONFIG_DIR) == 2
    assert "batch_size must be an int >= 1, got 0" in capsys.readouterr().err
    assert main(["--config", "tiny_multitask", "--set", "data_dir=" + str(tmp_path / "none"), "--set", "synthetic={}",
                 "--out", str(tmp_path / "out")], config_dir=CONFIG_DIR) == 2
    assert "has no annotations" in capsys.readouterr().err


def test_round_trip_through_dict():
    cfg = TrainConfig(steps=7, warmup_steps=2, task_configs={"detect": {"max_objects": 4}},
                      augment={"detect": {"scale_range": (0.5, 1.5)}})
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_evaluation_options_follow_the_trained_formats_and_apply_per_task(tmp_path):
    from pix2seq_fast.training.evaluation import predictor_options

    cfg = tiny_config(tmp_path, tmp_path, eval_options={"num_samples": 3, "top_k": 5, "caption": {"greedy": True}})
    assert predictor_options(cfg, "detect") == ({"seed": 0, "top_k": 5}, {"max_objects": 3})
    assert predictor_options(cfg, "segment")[1] == {"max_objects": 3, "max_points": 8, "num_samples": 3}
    assert predictor_options(cfg, "caption") == ({"seed": 0, "top_k": 5, "greedy": True}, {"max_length": 24})
    with pytest.raises(ValueError, match="eval_options has unknown option 'beams'"):
        predictor_options(tiny_config(tmp_path, tmp_path, eval_options={"beams": 4}), "detect")


def test_encoder_parameter_groups_are_frozen_then_scaled():
    import torch

    from pix2seq_fast.training.schedule import build_optimizer, build_scheduler, warmup_linear_decay

    model = torch.nn.ModuleDict({"encoder": torch.nn.Linear(2, 2), "decoder": torch.nn.Linear(2, 2)})
    optimizer = build_optimizer(model, 1.0)
    assert sorted((g["frozen_start"], g["weight_decay"], len(g["params"])) for g in optimizer.param_groups) == [
        (False, 0.0, 1), (False, 0.05, 1), (True, 0.0, 1), (True, 0.05, 1)]
    scheduler = build_scheduler(optimizer, 2, 10, 0.01, freeze_steps=3, frozen_lr_factor=0.1)
    for step in range(10):
        want = warmup_linear_decay(step, 2, 10, 0.01)
        for group in optimizer.param_groups:
            expected = (0.0 if step < 3 else 0.1 * want) if group["frozen_start"] else want
            assert group["lr"] == pytest.approx(expected), (step, group["frozen_start"])
        optimizer.step()
        scheduler.step()
    with pytest.raises(ValueError, match="freeze_steps must be in"):
        build_scheduler(optimizer, 2, 10, freeze_steps=11)


def test_training_refuses_a_non_square_canvas(tmp_path):
    cfg = tiny_config(tmp_path, tmp_path / "out", tasks=("detect",))
    with pytest.raises(ValueError, match=r"training needs a square canvas .*\(64, 96\)"):
        check_fits(model_config(cfg).replace(image_size=(64, 96)), cfg, None)
