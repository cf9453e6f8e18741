"""Converting the authors' TF2 checkpoint (tf_parity/tiny_a) end to end: bundle -> our checkpoint ->
``Pix2Seq.from_pretrained`` -> the authors' encoder output, teacher-forced logits and greedy decodes
through our generation engine, with the reference ops and the C++ CPU ops. Edited / corrupted
checkpoints fail with a message naming the key."""
import json
import runpy
import shutil
import sys

import numpy as np
import pytest
import torch

from conftest import TF_PARITY, requires_tf_parity
from pix2seq_fast.convert.convert import classify_key, convert_tf_checkpoint, load_tf_config, main
from pix2seq_fast.convert.tf_bundle import TensorBundle
from pix2seq_fast.generation import SamplingConfig, generate
from pix2seq_fast.model import Pix2Seq
from tf_bundle_writer import write_bundle

pytestmark = requires_tf_parity
GOLDEN = TF_PARITY / "tiny_a" if TF_PARITY is not None else None
SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
ATOL = RTOL = 1e-4


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(GOLDEN / "inputs.npz")), dict(np.load(GOLDEN / "outputs.npz"))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("converted") / "tiny_a"
    assert convert_tf_checkpoint(GOLDEN / "ckpt", out) == out
    return Pix2Seq.from_pretrained(out)


@pytest.fixture(scope="module")
def tiny_tensors():
    return TensorBundle(GOLDEN / "ckpt").read_all()


def images_nchw(inputs):
    return torch.from_numpy(inputs["images"]).permute(0, 3, 1, 2).contiguous()


def close(ours, theirs, name):
    assert tuple(ours.shape) == theirs.shape, name
    np.testing.assert_allclose(ours.detach().numpy(), theirs, atol=ATOL, rtol=RTOL, err_msg=name)


@torch.no_grad()
def test_converted_encoder_and_teacher_forced_logits(golden, converted):
    inputs, outputs = golden
    images = images_nchw(inputs)
    close(converted.encode(images), outputs["encoded"], "encoded")
    close(converted(images, torch.from_numpy(inputs["seq"])), outputs["logits"], "logits")


@torch.no_grad()
@pytest.mark.parametrize("backend", ["ref", "cpp"])
@pytest.mark.parametrize("prompt", ["1", "6"])
def test_converted_greedy_decodes_match_tf(golden, converted, backend, prompt):
    inputs, outputs = golden
    images = images_nchw(inputs)
    prompts = torch.from_numpy(inputs[f"prompt_{prompt}"])
    batch, width = prompts.shape
    out = generate(converted, converted.encode(images), prompts, torch.full((batch,), width), torch.arange(batch),
                   10, SamplingConfig(greedy=True), record=(0, converted.config.vocab_size),
                   attention_backend=backend, sampling_backend=backend)
    tf_tokens = outputs[f"infer_p{prompt}_pred_seq"]
    tf_logits = outputs[f"infer_p{prompt}_logits"]
    assert torch.equal(out.tokens, torch.from_numpy(tf_tokens).to(torch.int64))
    # the engine records log-softmax over the whole vocabulary at every step
    close(out.recorded, torch.log_softmax(torch.from_numpy(tf_logits), -1).numpy(), "recorded log-softmax")
    # raw step logits: TF's infer logits equal the teacher-forced logits on prompt + generated (README §5)
    sequence = torch.cat([prompts, out.tokens], dim=1)[:, :-1]
    logits = converted(images, sequence)[:, width - 1:]
    close(logits, tf_logits, f"infer_p{prompt}_logits")


def test_key_classification():
    assert classify_key("model/proj/kernel" + SUFFIX) == "model"
    for key in ("_CHECKPOINTABLE_OBJECT_GRAPH", "global_step" + SUFFIX, "save_counter" + SUFFIX,
                "optimizer/beta_1" + SUFFIX, "optimizer/_variables/3" + SUFFIX,
                "model/proj/kernel/.OPTIMIZER_SLOT/optimizer/m" + SUFFIX):
        assert classify_key(key) == "skip", key
    for key in ("model/proj/kernel", "ema/model/proj/kernel" + SUFFIX,
                "model/proj/.ATTRIBUTES/OBJECT_CONFIG_JSON", "model/x/.ATTRIBUTES/y" + SUFFIX):
        assert classify_key(key) == "unknown", key


def _edited_checkpoint(tmp_path, tensors, config=None):
    """Write ``tensors`` as a real bundle in ``tmp_path`` with tiny_a's config.json (or ``config``)."""
    write_bundle(tmp_path / "ckpt-0", tensors)
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "ckpt-0"\n')
    if config is None:
        shutil.copy(GOLDEN / "ckpt" / "config.json", tmp_path / "config.json")
    else:
        (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_missing_tensor_is_named(tmp_path, tiny_tensors):
    key = "model/decoder/decoder/dec_layers/1/cross_mha/_value_dense/kernel"
    tensors = {k: v for k, v in tiny_tensors.items() if k != key + SUFFIX}
    with pytest.raises(ValueError, match=f"missing checkpoint tensors.*{key}"):
        convert_tf_checkpoint(_edited_checkpoint(tmp_path, tensors), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_extra_model_tensor_is_named(tmp_path, tiny_tensors):
    tensors = dict(tiny_tensors, **{"model/encoder/cls_token" + SUFFIX: np.zeros((1, 64), np.float32)})
    with pytest.raises(ValueError, match="unmapped checkpoint tensors.*model/encoder/cls_token"):
        convert_tf_checkpoint(_edited_checkpoint(tmp_path, tensors), tmp_path / "out")


def test_unknown_non_model_tensor_is_named(tmp_path, tiny_tensors):
    tensors = dict(tiny_tensors, **{"ema_model/proj/kernel" + SUFFIX: np.zeros((64, 64), np.float32)})
    with pytest.raises(ValueError, match="neither model variables.*ema_model/proj/kernel"):
        convert_tf_checkpoint(_edited_checkpoint(tmp_path, tensors), tmp_path / "out")


def test_misshaped_tensor_is_named(tmp_path, tiny_tensors):
    key = "model/proj_mlp/mlp_layers/0/dense1/kernel"
    tensors = dict(tiny_tensors, **{key + SUFFIX: np.zeros((64, 256), np.float32)})
    with pytest.raises(ValueError, match=rf"{key}: checkpoint \(64, 256\) vs config \(64, 128\)"):
        convert_tf_checkpoint(_edited_checkpoint(tmp_path, tensors), tmp_path / "out")


def test_config_disagreeing_with_tensors(tmp_path, tiny_tensors):
    config = json.loads((GOLDEN / "ckpt" / "config.json").read_text())
    config["model"]["num_heads_dec"] = 8
    with pytest.raises(ValueError, match=r"self_mha/_query_dense/kernel: checkpoint \(64, 4, 16\) vs config "
                                         r"\(64, 8, 8\)"):
        convert_tf_checkpoint(_edited_checkpoint(tmp_path, tiny_tensors, config), tmp_path / "out")


def test_integer_model_tensor_is_refused(tmp_path, tiny_tensors):
    key = "model/decoder/ar_decoder.Soutp_bias" + SUFFIX
    tensors = dict(tiny_tensors, **{key: tiny_tensors[key].astype(np.int32)})
    with pytest.raises(ValueError, match="floating point.*Soutp_bias"):
        convert_tf_checkpoint(_edited_checkpoint(tmp_path, tensors), tmp_path / "out")


def test_corrupt_tensor_bytes_fail_the_conversion(tmp_path):
    for name in ("checkpoint", "config.json", "ckpt-0.index", "ckpt-0.data-00000-of-00001"):
        shutil.copy(GOLDEN / "ckpt" / name, tmp_path / name)
    entry = TensorBundle(tmp_path).entries["model/proj/bias" + SUFFIX]
    data = tmp_path / "ckpt-0.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[entry.offset] ^= 0x40
    data.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="model/proj/bias.*CRC-32C mismatch"):
        convert_tf_checkpoint(tmp_path, tmp_path / "out")


@torch.no_grad()
def test_scalar_image_size_and_separate_config(tmp_path, golden, tiny_tensors, converted):
    """2022 detection configs store ``image_size`` as one int (tf_parity README §9)."""
    config = json.loads((GOLDEN / "ckpt" / "config.json").read_text())
    config["model"]["image_size"] = 96
    (tmp_path / "old_config.json").write_text(json.dumps(config))
    assert load_tf_config(tmp_path, tmp_path / "old_config.json")["model"]["image_size"] == [96, 96]
    out = convert_tf_checkpoint(GOLDEN / "ckpt" / "ckpt-0", tmp_path / "out", tmp_path / "old_config.json")
    model = Pix2Seq.from_pretrained(out)
    assert model.config == converted.config
    images = images_nchw(golden[0])
    assert torch.equal(model.encode(images), converted.encode(images))


def test_missing_config_json(tmp_path):
    for name in ("checkpoint", "ckpt-0.index", "ckpt-0.data-00000-of-00001"):
        shutil.copy(GOLDEN / "ckpt" / name, tmp_path / name)
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        convert_tf_checkpoint(tmp_path, tmp_path / "out")


def test_command_line(tmp_path, monkeypatch, capsys):
    main([str(GOLDEN / "ckpt"), str(tmp_path / "cli"), "--no-verify"])
    assert (tmp_path / "cli" / "model.safetensors").is_file() and (tmp_path / "cli" / "config.json").is_file()
    with pytest.raises(SystemExit, match="config.json not found"):
        main([str(GOLDEN / "ckpt"), str(tmp_path / "x"), "--config", str(tmp_path / "none.json")])
    monkeypatch.setattr(sys, "argv", ["pix2seq_fast.convert", str(GOLDEN / "ckpt"), str(tmp_path / "module")])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("pix2seq_fast.convert", run_name="__main__")
    assert exit_info.value.code == 0
    assert "wrote" in capsys.readouterr().out
    assert (tmp_path / "module" / "model.safetensors").is_file()


@torch.no_grad()
def test_non_square_canvas_converted_and_predicted(tmp_path, tiny_tensors, monkeypatch):
    """The authors' ``image_size = [64, 96]`` stays 64x96 (a 4x6 patch grid), through
    ``save_pretrained`` and ``predict``; the converter used to keep only max(H, W) = 96."""
    from pix2seq_fast.predictor import engine

    config = json.loads((GOLDEN / "ckpt" / "config.json").read_text())
    config["model"]["image_size"] = [64, 96]
    (tmp_path / "ckpt").mkdir()
    out = convert_tf_checkpoint(_edited_checkpoint(tmp_path / "ckpt", tiny_tensors, config), tmp_path / "out")
    assert json.loads((out / "config.json").read_text())["image_size"] == [64, 96]
    model = Pix2Seq.from_pretrained(out)
    assert model.config.image_size == (64, 96) and model.config.canvas_hw == (64, 96)
    seen = []
    encode = engine.encode
    monkeypatch.setattr(engine, "encode", lambda m, pixels: seen.append(tuple(pixels.shape)) or encode(m, pixels))
    image = torch.rand(3, 40, 90, generator=torch.Generator().manual_seed(0))
    result = model.predict(image, "detect", max_objects=2, greedy=True)
    assert seen == [(1, 3, 64, 96)]
    assert model.encode(torch.rand(1, 3, 64, 96)).shape == (1, 4 * 6, 64)
    assert result.image_size == (40, 90)
    assert (result.boxes_xyxy[:, [0, 2]] <= 90).all() and (result.boxes_xyxy[:, [1, 3]] <= 40).all()
