"""The ``pix2seq-fast`` command: predict (COCO JSON + PNGs), info, errors, argument plumbing."""
import json
import runpy
import sys

import cv2
import numpy as np
import pytest
import torch

from pix2seq_fast.cli import _image_ids, format_metrics, main
from pix2seq_fast.model import create_model


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("tiny", image_size=64, enc_layers=1, dec_layers=1)
    v = model.config.vocab
    with torch.no_grad():  # favour coordinate tokens so the random model emits well-formed boxes
        model.decoder.output_bias[v.coord_offset:v.coord_offset + v.bins] += 12.0
    path = tmp_path_factory.mktemp("ckpt")
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    cv2.imwrite(str(path / "000000000139.png"), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    cv2.imwrite(str(path / "000000000285.jpg"), rng.integers(0, 256, (70, 40, 3), dtype=np.uint8))
    return path


@pytest.mark.parametrize("task, extra", [
    ("detect", ["--max-objects", "3"]),
    ("segment", ["--max-objects", "2", "--num-samples", "2", "--max-points", "6"]),
])
def test_predict_writes_coco_json_and_pngs(checkpoint, image_dir, tmp_path, task, extra, capsys):
    out = tmp_path / "out"
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"1": "person"}))
    code = main(["predict", str(image_dir), "--checkpoint", str(checkpoint), "--task", task,
                 "--out", str(out), "--seed", "0", "--quiet", "--category-names", str(names), *extra])
    assert code == 0
    preds = json.loads((out / "predictions.json").read_text())
    ids = json.loads((out / "image_ids.json").read_text())
    assert sorted(ids.values()) == [139, 285]
    assert {p["image_id"] for p in preds} <= {139, 285}
    if task == "detect":
        assert len(preds) >= 2 and all(len(p["bbox"]) == 4 for p in preds)
    if task == "segment":
        assert preds and all(isinstance(p["segmentation"]["counts"], str) for p in preds)
    for stem, shape in (("000000000139", (48, 64)), ("000000000285", (70, 40))):
        png = cv2.imread(str(out / f"{stem}.png"))
        assert png is not None and png.shape == (*shape, 3)
    assert "result(s)" in capsys.readouterr().out


def test_predict_keypoints_of_detected_category(checkpoint, image_dir, tmp_path):
    image = str(image_dir / "000000000139.png")
    common = ["--checkpoint", str(checkpoint), "--max-objects", "3", "--greedy", "--quiet"]
    assert main(["predict", image, "--out", str(tmp_path / "det"), "--no-draw", *common]) == 0
    dets = json.loads((tmp_path / "det" / "predictions.json").read_text())
    person = dets[0]["category_id"]
    assert main(["predict", image, "--task", "keypoints", "--out", str(tmp_path / "kp"),
                 "--person-category", str(person), *common]) == 0
    kps = json.loads((tmp_path / "kp" / "predictions.json").read_text())
    assert len(kps) == sum(d["category_id"] == person for d in dets)
    assert all(len(k["keypoints"]) == 51 and k["category_id"] == person for k in kps)
    assert not (tmp_path / "det" / "000000000139.png").exists()
    assert (tmp_path / "kp" / "000000000139.png").exists()


def test_predict_caption_without_tokenizer_fails_cleanly(checkpoint, image_dir, tmp_path, capsys):
    code = main(["predict", str(image_dir / "000000000139.png"), "--checkpoint", str(checkpoint),
                 "--task", "caption", "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 2
    assert "tokenizer" in capsys.readouterr().err


def test_predict_missing_checkpoint(image_dir, tmp_path, capsys):
    code = main(["predict", str(image_dir), "--checkpoint", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "o")])
    assert code == 2
    assert str(tmp_path / "nope") in capsys.readouterr().err


def test_predict_missing_image(checkpoint, tmp_path, capsys):
    code = main(["predict", str(tmp_path / "missing.png"), "--checkpoint", str(checkpoint),
                 "--out", str(tmp_path / "o")])
    assert code == 2
    assert "missing.png" in capsys.readouterr().err


def test_unknown_task_is_an_argparse_error(tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["predict", "x.png", "--checkpoint", "c", "--out", "o", "--task", "classify"])
    assert e.value.code == 2


def test_info_through_python_m(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["pix2seq_fast", "info"])
    with pytest.raises(SystemExit) as e:
        runpy.run_module("pix2seq_fast", run_name="__main__")
    assert e.value.code == 0
    info = json.loads(capsys.readouterr().out)
    assert info["torch"] == torch.__version__ and "extension" in info


def test_image_ids_and_metrics_table(tmp_path):
    from pathlib import Path

    assert _image_ids([Path("000000000139.jpg"), Path("7.png")]) == [139, 7]
    assert _image_ids([Path("a.jpg"), Path("7.png")]) == [1, 2]
    assert _image_ids([Path("7.jpg"), Path("007.png")]) == [1, 2]
    table = format_metrics({"detect": {"AP": 0.4321, "AP50": 0.6},
                            "caption": {"BLEU-4": 0.25, "num_images": 3}})
    lines = table.splitlines()
    assert lines[0].split() == ["task", "metric", "value"]
    assert any(line.split() == ["detect", "AP", "0.4321"] for line in lines)
    assert any(line.split() == ["caption", "BLEU-4", "0.2500"] for line in lines)
    assert any(line.split() == ["caption", "num_images", "3"] for line in lines)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    assert main(["make-synthetic", "--out", str(root), "--num-train", "0", "--num-val", "2",
                 "--image-size", "64", "--seed", "2"]) == 0  # seed 2: both images hold a person
    return root


def test_eval_on_synthetic_split(checkpoint, synthetic, capsys):
    capsys.readouterr()
    code = main(["eval", "--checkpoint", str(checkpoint), "--data", str(synthetic), "--split", "val",
                 "--tasks", "detect", "segment", "keypoints", "--max-objects", "2", "--max-images",
                 "2", "--quiet"])
    assert code == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    by_task = {}
    for task, metric, value in rows:
        by_task.setdefault(task, {})[metric] = float(value)
    assert set(by_task) == {"detect", "segment", "keypoints"}
    assert set(by_task["detect"]) >= {"AP", "AP50", "AR100"} and "AP" in by_task["keypoints"]
    assert all(-1.0 <= v <= 1.0 for m in by_task.values() for v in m.values())


def test_eval_subset_and_layout(synthetic, tmp_path):
    from pix2seq_fast.predictor.coco_run import annotation_file, find_image_dir, subset

    data = json.loads(annotation_file(synthetic, "detect", "val").read_text())
    first = sorted(im["id"] for im in data["images"])[:1]
    small = subset(data, first)
    assert [im["id"] for im in small["images"]] == first
    assert small["annotations"] and all(a["image_id"] == first[0] for a in small["annotations"])
    assert find_image_dir(synthetic, "val") == synthetic / "images" / "val"
    with pytest.raises(FileNotFoundError, match="no image directory"):
        find_image_dir(tmp_path, "val")


def test_eval_errors(checkpoint, synthetic, tmp_path, capsys):
    code = main(["eval", "--checkpoint", str(checkpoint), "--data", str(tmp_path), "--quiet"])
    assert code == 2 and "no annotation files" in capsys.readouterr().err
    code = main(["eval", "--checkpoint", str(checkpoint), "--data", str(synthetic), "--tasks",
                 "caption", "--quiet"])
    assert code == 2 and "tokenizer" in capsys.readouterr().err


def test_convert_tf_forwards_options(tmp_path):
    from pix2seq_fast.model import Pix2Seq

    ckpt = "/work/shared/tf_parity/tiny_a/ckpt"
    assert main(["convert-tf", ckpt, str(tmp_path / "conv"), "--no-verify"]) == 0
    model = Pix2Seq.from_pretrained(tmp_path / "conv")
    assert model.config.image_size == 96 and model.config.dec_layers == 2
    with pytest.raises(SystemExit):
        main(["convert-tf", str(tmp_path / "missing"), str(tmp_path / "conv2")])
    with pytest.raises(SystemExit):  # an option nobody takes is still an error
        main(["info", "--bogus"])


# ---- bad files and options: one line (file, field, what is wrong), exit 2, no traceback ------------
def _one_line_error(capsys, code, *words):
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


@pytest.fixture(scope="module")
def broken_checkpoints(checkpoint, tmp_path_factory):
    import shutil
    root = tmp_path_factory.mktemp("broken_ckpts")
    out = {}
    for name, (file, content) in {"config_not_json": ("config.json", b"{"),
                                  "weights_garbage": ("model.safetensors", b"\x00" * 64),
                                  "config_wrong_field": ("config.json", b'{"dec_dim": "wide"}')}.items():
        shutil.copytree(checkpoint, root / name)
        target = root / name / file
        if not target.exists():
            target = next((root / name).glob("*.safetensors"))
        target.write_bytes(content)
        out[name] = root / name
    return out


@pytest.mark.parametrize("name", ["config_not_json", "weights_garbage", "config_wrong_field"])
def test_predict_and_eval_with_a_broken_checkpoint(broken_checkpoints, image_dir, synthetic, tmp_path, capsys,
                                                    name):
    path = broken_checkpoints[name]
    code = main(["predict", str(image_dir), "--checkpoint", str(path), "--out", str(tmp_path / "o"), "--quiet"])
    _one_line_error(capsys, code, f"--checkpoint {path}", "cannot load the model")
    code = main(["eval", "--checkpoint", str(path), "--data", str(synthetic), "--tasks", "detect", "--quiet"])
    _one_line_error(capsys, code, f"--checkpoint {path}")


@pytest.mark.parametrize("content, words", [
    (None, "file not found"), ("{oops", "not valid JSON"), ("[1, 2]", "got a JSON list"),
    ('{"categories": [{"id": "1", "name": "a"}]}', "categories[0]"), ('{"categories": 5}', "'categories'"),
    ('{"one": "a"}', "entry 'one'"), ('{"1": 5}', "entry '1'"), ("[" * 50000 + "]" * 50000, "nested too deeply")])
def test_predict_with_bad_category_names(checkpoint, image_dir, tmp_path, capsys, content, words):
    path = tmp_path / "names.json"
    if content is not None:
        path.write_text(content)
    code = main(["predict", str(image_dir), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"),
                 "--category-names", str(path), "--quiet"])
    _one_line_error(capsys, code, f"--category-names {path}", words)


def test_predict_with_a_bad_image_or_option(checkpoint, image_dir, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    code = main(["predict", str(bad), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"), "--quiet"])
    _one_line_error(capsys, code, str(bad), "cannot be decoded")
    for option, words in ((["--batch-size", "0"], "batch_size"), (["--threshold", "nan"], "score_threshold"),
                          (["--person-category", "5000", "--task", "keypoints"], "person_category"),
                          (["--top-p", "7"], "top_p")):
        code = main(["predict", str(image_dir), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"),
                     "--quiet", *option])
        _one_line_error(capsys, code, words)


def test_eval_with_bad_data(checkpoint, synthetic, tmp_path, capsys):
    import shutil
    data = shutil.copytree(synthetic, tmp_path / "data")
    path = data / "annotations" / "instances_val.json"
    coco = json.loads(path.read_text())
    coco["annotations"][0]["bbox"][2] = float("nan")
    path.write_text(json.dumps(coco))
    code = main(["eval", "--checkpoint", str(checkpoint), "--data", str(data), "--tasks", "detect", "--quiet"])
    _one_line_error(capsys, code, str(path), f"annotation id {coco['annotations'][0]['id']}", "field 'bbox'")
    coco["annotations"][0]["bbox"][2] = 3.0
    coco["images"][0]["file_name"] = "../../../../etc/passwd"
    path.write_text(json.dumps(coco))
    code = main(["eval", "--checkpoint", str(checkpoint), "--data", str(data), "--tasks", "detect", "--quiet"])
    _one_line_error(capsys, code, "field 'file_name'", "'..' is refused")
    original = json.loads((synthetic / "annotations" / "instances_val.json").read_text())["images"][0]["file_name"]
    coco["images"][0]["file_name"] = str(data / "images" / "val" / original)
    path.write_text(json.dumps(coco))
    code = main(["eval", "--checkpoint", str(checkpoint), "--data", str(data), "--tasks", "detect", "--quiet"])
    _one_line_error(capsys, code, "field 'file_name'", "absolute path")
    assert main(["eval", "--checkpoint", str(checkpoint), "--data", str(data), "--tasks", "detect", "--max-images",
                 "1", "--max-objects", "2", "--allow-absolute-paths", "--quiet"]) == 0
    capsys.readouterr()
    code = main(["eval", "--checkpoint", str(checkpoint), "--data", str(tmp_path / "nowhere"), "--quiet"])
    _one_line_error(capsys, code, "--data", "no such directory")
    code = main(["eval", "--checkpoint", str(checkpoint), "--data", str(synthetic), "--tasks", "detect",
                 "--max-images", "-1", "--quiet"])
    _one_line_error(capsys, code, "max_images must be >= 1")


def _run_cli(args, tmp_path):
    import os
    import subprocess
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=env)


def test_make_synthetic_convert_tf_and_train_answer_one_line(tmp_path):
    from pathlib import Path
    main_py = str(Path(__file__).resolve().parents[1] / "train" / "main.py")
    (tmp_path / "bad.json").write_text("{bad")
    (tmp_path / "syntax.py").write_text("CONFIG = (")
    (tmp_path / "boom.py").write_text("raise RuntimeError('boom')")
    (tmp_path / "tf").mkdir()
    (tmp_path / "tf" / "checkpoint").write_text("junk")
    cases = [
        (["-m", "pix2seq_fast.cli", "make-synthetic", "--out", "s", "--num-train", "-1"], 2, "num_train"),
        (["-m", "pix2seq_fast.cli", "make-synthetic", "--out", "s", "--image-size", "0"], 2, "image_size"),
        (["-m", "pix2seq_fast.cli", "convert-tf", "tf", "out"], 1, "config.json not found"),
        ([main_py, "--config", "bad.json"], 2, "--config bad.json: cannot be loaded"),
        ([main_py, "--config", "syntax.py"], 2, "SyntaxError"),
        ([main_py, "--config", "boom.py"], 2, "RuntimeError: boom"),
        ([main_py, "--config", "nothing.json"], 2, "no config file"),
        ([main_py, "--config", "tiny_detect", "--set", "steps=abc"], 2, "steps"),
    ]
    for args, code, words in cases:
        proc = _run_cli(args, tmp_path)
        assert proc.returncode == code and proc.stderr.count("\n") == 1, (args, proc.stderr)
        assert words in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)


def test_one_line_of_an_error():
    from pix2seq_fast.cli import one_line
    worker = ValueError("Caught ValueError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                        "last):\n  File \"x.py\", line 1, in f\nValueError: a.json: annotation id 3: field 'bbox': bad\n")
    assert one_line(worker) == "ValueError: a.json: annotation id 3: field 'bbox': bad"
    assert one_line(FileNotFoundError("no such file: x")) == "no such file: x"
    assert one_line(RuntimeError("boom\nmore")) == "RuntimeError: boom"
