"""Lower-precision decoder weights (model/quantize.py, csrc/cpu/lowp_linear.cpp).

- the ``lowp_linear`` kernel equals ``F.linear`` on the dequantised weight (shape grid incl. K tails,
  batches over the kernel's 4-row blocks, with and without bias, threads), and checks its arguments;
- the stated error of each precision, against the fp32 model: the max |logit difference|
  (teacher-forced), greedy-decode agreement (free-running tokens equal) and teacher-forced argmax
  agreement, on the authors' ``tf_parity/tiny_a`` checkpoint and on a vit-b-sized random decoder.
  The bounds below sit just above what was measured (README Benchmarks quotes the measured values);
- the bf16 encoder (``quantize_encoder``): the error of its features relative to their norm, and the
  same decode statistics for the fp32 decoder given those features instead of the fp32 ones.
"""
import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TF_PARITY, requires_tf_parity, supported_cpu_isas
from pix2seq_fast.generation import SamplingConfig, generate
from pix2seq_fast.model import create_model
from pix2seq_fast.model.quantize import (LowPrecisionEncoder, LowPrecisionLinear, is_quantized, quantize_decoder,
                                         quantize_encoder)

pytestmark = pytest.mark.usefixtures("one_thread")

# dtype: (max |logit diff|, min greedy agreement, min teacher-forced argmax agreement)
TINY_A_BOUNDS = {"bf16": (0.03, 1.0, 1.0), "int8": (0.1, 0.8, 0.9)}
VIT_B_BOUNDS = {"bf16": (0.03, 0.4, 0.95), "int8": (0.08, 0.4, 0.9)}
# bf16 encoder: (max feature error / feature norm, then as above for the fp32 decoder on its features)
ENCODER_BOUNDS = {"tiny_a": (0.006, (0.015, 1.0, 1.0)), "vit-b": (0.005, (0.02, 0.5, 0.9))}


def op():
    from pix2seq_fast._ext import load_extension

    assert load_extension() is not None, "the C++ extension is not built"
    return torch.ops.pix2seq_fast.lowp_linear


@pytest.mark.parametrize("dtype", ["int8", "bf16"])
@pytest.mark.parametrize("m,k,n", [(1, 512, 70), (2, 8, 5), (3, 13, 9), (4, 64, 1), (5, 40, 130),
                                   (9, 512, 64), (1, 2048, 512), (17, 33, 7)])
@pytest.mark.parametrize("bias", [True, False])
def test_kernel_equals_dequantised_linear(dtype, m, k, n, bias):
    g = torch.Generator().manual_seed(m * 1000 + k + n)
    w = torch.randn(n, k, generator=g) * 0.1
    b = torch.randn(n, generator=g) if bias else None
    layer = LowPrecisionLinear(w, b, dtype)
    x = torch.randn(m, k, generator=g)
    expected = F.linear(x.double(), layer.dequantized().double(), None if b is None else b.double())
    got = op()(x, layer.weight, layer.scale, layer.bias)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5 * k ** 0.5)
    from pix2seq_fast.model.quantize import native_bf16

    kernel_rows = (LowPrecisionLinear.KERNEL_MAX_ROWS_NATIVE_BF16 if dtype == "bf16" and native_bf16()
                   else LowPrecisionLinear.KERNEL_MAX_ROWS)
    if m <= kernel_rows:  # the layer runs the kernel (beyond: test_bf16_layer_beyond_the_kernel_rows)
        torch.testing.assert_close(layer(x[None]).double()[0], expected, rtol=1e-5, atol=1e-5 * k ** 0.5)


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
@pytest.mark.parametrize("dtype", ["int8", "bf16"])
def test_kernel_every_isa_path(isa, dtype, monkeypatch):
    """Each vector path of the kernel (forced with P2S_CPU_ISA) on rows 1-5 and K with tails; an ISA
    this CPU lacks is refused by name."""
    monkeypatch.setenv("P2S_CPU_ISA", isa)
    g = torch.Generator().manual_seed(7)
    layer = LowPrecisionLinear(torch.randn(37, 83, generator=g) * 0.1, torch.randn(37, generator=g), dtype)
    if not supported_cpu_isas()[isa]:
        with pytest.raises(RuntimeError, match="does not support"):
            op()(torch.randn(1, 83), layer.weight, layer.scale, layer.bias)
        return
    for m in (1, 2, 3, 4, 5):
        x = torch.randn(m, 83, generator=g)
        expected = F.linear(x.double(), layer.dequantized().double(), layer.bias.double())
        torch.testing.assert_close(op()(x, layer.weight, layer.scale, layer.bias).double(), expected,
                                   rtol=1e-5, atol=1e-4)


def test_kernel_threads_and_large_batch_fallback():
    g = torch.Generator().manual_seed(0)
    layer = LowPrecisionLinear(torch.randn(3000, 64, generator=g), torch.randn(3000, generator=g), "int8")
    x = torch.randn(3, 64, generator=g)
    one = op()(x, layer.weight, layer.scale, layer.bias)
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two = op()(x, layer.weight, layer.scale, layer.bias)
    finally:
        torch.set_num_threads(saved)
    torch.testing.assert_close(one, two, rtol=0, atol=0)
    big = torch.randn(LowPrecisionLinear.KERNEL_MAX_ROWS + 5, 64, generator=g)  # dequantised GEMM path
    torch.testing.assert_close(layer(big), F.linear(big, layer.dequantized(), layer.bias), rtol=1e-5, atol=1e-4)


def test_bf16_layer_beyond_the_kernel_rows():
    """Beyond the kernel's rows bf16 weights take a bf16 GEMM where the CPU has one (beyond
    ``KERNEL_MAX_ROWS_NATIVE_BF16``; activations rounded to bf16: relative error ~2^-8 per product) and
    the dequantised fp32 GEMM elsewhere (beyond ``KERNEL_MAX_ROWS``)."""
    from pix2seq_fast.model.quantize import native_bf16

    g = torch.Generator().manual_seed(5)
    layer = LowPrecisionLinear(torch.randn(300, 256, generator=g) * 0.05, torch.randn(300, generator=g), "bf16")
    for rows in (LowPrecisionLinear.KERNEL_MAX_ROWS_NATIVE_BF16 + 3, LowPrecisionLinear.KERNEL_MAX_ROWS + 7):
        x = torch.randn(rows, 256, generator=g)
        expected = F.linear(x.double(), layer.dequantized().double(), layer.bias.double())
        got = layer(x)
        assert got.dtype == torch.float32
        scale = (x.abs().double() @ layer.dequantized().abs().double().T).amax()  # sum of |products|
        tolerance = 2 ** -8 * float(scale) if native_bf16() else 1e-5 * float(scale)
        assert (got.double() - expected).abs().max().item() <= tolerance


def test_quantised_weight_error_per_element():
    w = torch.randn(50, 96, generator=torch.Generator().manual_seed(3))
    int8 = LowPrecisionLinear(w, None, "int8")
    assert int8.weight.dtype == torch.int8 and int8.scale.shape == (50,)
    assert bool(((int8.dequantized() - w).abs() <= int8.scale[:, None] / 2 + 1e-7).all())
    bf16 = LowPrecisionLinear(w, None, "bf16")
    assert bool(((bf16.dequantized() - w).abs() <= w.abs() * 2 ** -8).all())
    sub = int8.select_rows(torch.tensor([3, 7, 49]))
    torch.testing.assert_close(sub.dequantized(), int8.dequantized()[[3, 7, 49]], rtol=0, atol=0)


def test_kernel_argument_errors():
    x, w = torch.randn(2, 8), torch.zeros(4, 8, dtype=torch.int8)
    with pytest.raises(RuntimeError, match="needs its per-row scale"):
        op()(x, w, None, None)
    with pytest.raises(RuntimeError, match="x must be float32"):
        op()(x.double(), w, torch.ones(4), None)
    with pytest.raises(RuntimeError, match="weight must be int8 or bfloat16"):
        op()(x, w.float(), torch.ones(4), None)
    with pytest.raises(RuntimeError, match="columns"):
        op()(x, torch.zeros(4, 9, dtype=torch.int8), torch.ones(4), None)
    with pytest.raises(RuntimeError, match="scale must be"):
        op()(x, w, torch.ones(3), None)
    with pytest.raises(RuntimeError, match="bias must be"):
        op()(x, w, torch.ones(4), torch.ones(5))
    with pytest.raises(ValueError, match="dtype must be"):
        LowPrecisionLinear(torch.zeros(2, 2), None, "fp8")
    with pytest.raises(ValueError, match="dtype must be"):
        quantize_decoder(create_model("tiny", enc_layers=1), "int4")


@torch.no_grad()
def precision_stats(reference, quantized, memory, seq, prompts, steps, quantized_memory=None):
    """Max |logit diff| on ``seq`` (teacher forcing, low-precision weights), max |log-softmax diff| in
    the generation engine (which also keeps the image K/V in bf16) over the steps before the first
    differing token, greedy agreement over ``steps`` tokens, and teacher-forced argmax agreement along
    the reference's greedy decode. ``quantized`` decodes ``quantized_memory`` (default ``memory``)."""
    qmemory = memory if quantized_memory is None else quantized_memory
    l0, l1 = reference.decoder(seq, memory), quantized.decoder(seq, qmemory)
    batch = prompts.shape[0]
    vocab_size = reference.config.vocab_size
    rest = (prompts, torch.full((batch,), prompts.shape[1]), torch.arange(batch), steps, SamplingConfig(greedy=True))
    o0 = generate(reference, memory, *rest, record=(0, vocab_size))
    o1 = generate(quantized, qmemory, *rest, record=(0, vocab_size))
    same = (o0.tokens == o1.tokens).cumprod(1).bool()  # steps before the first divergence (and it)
    same = torch.cat([torch.ones_like(same[:, :1]), same[:, :-1]], 1)
    engine = (o0.recorded - o1.recorded).abs().amax(-1)[same].max().item()
    forced = torch.cat([prompts, o0.tokens[:, :-1]], 1)
    p = prompts.shape[1] - 1
    a0 = reference.decoder(forced, memory)[:, p:].argmax(-1)
    a1 = quantized.decoder(forced, qmemory)[:, p:].argmax(-1)
    return ((l0 - l1).abs().max().item(), engine, (o0.tokens == o1.tokens).float().mean().item(),
            (a0 == a1).float().mean().item())


def feature_error(model, quantized, images):
    """``(fp32 features, bf16-encoder features, max over tokens of max |difference| / fp32 feature norm)``."""
    with torch.no_grad():
        m0, m1 = model.encode(images), quantized.encode(images)
    assert m1.dtype == torch.float32 and m1.shape == m0.shape
    relative = ((m0 - m1).abs().amax(-1) / m0.norm(dim=-1).clamp_min(1e-12)).max().item()
    return m0, m1, relative


def check_bounds(stats, bounds, what):
    diff, engine, greedy, forced = stats
    max_diff, min_greedy, min_forced = bounds
    print(f"{what}: max logit diff {diff:.4f}, engine log-softmax diff {engine:.4f}, greedy agreement "
          f"{greedy:.3f}, teacher-forced argmax agreement {forced:.3f}")
    assert diff <= max_diff, f"{what}: max logit diff {diff:.4f} > {max_diff}"
    assert engine <= 2 * max_diff, f"{what}: engine log-softmax diff {engine:.4f} > {2 * max_diff}"
    assert greedy >= min_greedy, f"{what}: greedy agreement {greedy:.3f} < {min_greedy}"
    assert forced >= min_forced, f"{what}: teacher-forced argmax agreement {forced:.3f} < {min_forced}"


def tiny_a():
    """The authors' ``tf_parity/tiny_a`` checkpoint as our fp32 model, and its ``inputs.npz``."""
    from pix2seq_fast.convert.tf_mapping import map_tf_weights, tf_config_to_model_config
    from pix2seq_fast.model import Pix2Seq

    golden = TF_PARITY / "tiny_a"
    config = tf_config_to_model_config(json.loads((golden / "ckpt" / "config.json").read_text()))
    model = Pix2Seq(config).eval()
    model.load_state_dict(map_tf_weights(dict(np.load(golden / "weights_by_key.npz")), config))
    return model, dict(np.load(golden / "inputs.npz"))


@requires_tf_parity
@pytest.mark.parametrize("dtype", ["bf16", "int8"])
def test_error_on_tf_parity_tiny_a(dtype):
    model, inputs = tiny_a()
    with torch.no_grad():
        memory = model.encode(torch.from_numpy(inputs["images"]).permute(0, 3, 1, 2).contiguous())
    quantized = quantize_decoder(copy.deepcopy(model), dtype)
    assert is_quantized(quantized) and not is_quantized(model)
    seq = torch.from_numpy(inputs["seq"])
    for prompt in ("prompt_1", "prompt_6"):
        stats = precision_stats(model, quantized, memory, seq, torch.from_numpy(inputs[prompt]), 10)
        check_bounds(stats, TINY_A_BOUNDS[dtype], f"tiny_a {dtype} {prompt}")


@pytest.fixture(scope="module")
def vit_b():
    torch.manual_seed(0)
    model = create_model("vit-b", enc_layers=1).eval()  # vit-b's decoder and 35K vocabulary
    memory = torch.randn(2, 1600, 512, generator=torch.Generator().manual_seed(1))
    seq = torch.randint(1000, 2000, (2, 60), generator=torch.Generator().manual_seed(2))
    seq[:, 0] = 10
    return model, memory, seq


@pytest.mark.parametrize("dtype", ["bf16", "int8"])
def test_error_on_vit_b_sized_random_model(vit_b, dtype):
    model, memory, seq = vit_b
    quantized = quantize_decoder(copy.deepcopy(model), dtype)
    stats = precision_stats(model, quantized, memory, seq, torch.full((2, 1), 10), 40)
    check_bounds(stats, VIT_B_BOUNDS[dtype], f"vit-b random {dtype}")


@requires_tf_parity
def test_bf16_encoder_error_on_tf_parity_tiny_a():
    model, inputs = tiny_a()
    quantized = quantize_encoder(copy.deepcopy(model))
    assert isinstance(quantized.encoder, LowPrecisionEncoder)
    assert all(p.dtype == torch.bfloat16 for p in quantized.encoder.parameters())
    images = torch.from_numpy(inputs["images"]).permute(0, 3, 1, 2).contiguous()
    m0, m1, relative = feature_error(model, quantized, images)
    max_relative, bounds = ENCODER_BOUNDS["tiny_a"]
    print(f"tiny_a bf16 encoder: max feature error / feature norm {relative:.4f}")
    assert relative <= max_relative
    seq = torch.from_numpy(inputs["seq"])
    for prompt in ("prompt_1", "prompt_6"):
        stats = precision_stats(model, model, m0, seq, torch.from_numpy(inputs[prompt]), 10, quantized_memory=m1)
        check_bounds(stats, bounds, f"tiny_a bf16 encoder {prompt}")


def test_bf16_encoder_error_on_vit_b_encoder():
    """The full 12-layer ViT-B encoder (random weights) on a 320 px image, then vit-b's decoder."""
    torch.manual_seed(0)
    model = create_model("vit-b", dec_layers=2, image_size=320).eval()
    quantized = quantize_encoder(copy.deepcopy(model))
    images = torch.rand(1, 3, 320, 320, generator=torch.Generator().manual_seed(4))
    m0, m1, relative = feature_error(model, quantized, images)
    max_relative, bounds = ENCODER_BOUNDS["vit-b"]
    print(f"vit-b bf16 encoder: max feature error / feature norm {relative:.4f}")
    assert relative <= max_relative
    seq = torch.randint(1000, 2000, (1, 40), generator=torch.Generator().manual_seed(2))
    seq[:, 0] = 10
    stats = precision_stats(model, model, m0, seq, torch.full((1, 1), 10), 30, quantized_memory=m1)
    check_bounds(stats, bounds, "vit-b bf16 encoder")


def test_quantize_encoder_arguments():
    model = create_model("tiny", enc_layers=1)
    with pytest.raises(ValueError, match="dtype must be"):
        quantize_encoder(model, "int8")
    with pytest.raises(ValueError, match="fused_attention must be"):
        quantize_encoder(model, fused_attention="yes")
    quantize_encoder(model)
    with pytest.raises(ValueError, match="already in bf16"):
        quantize_encoder(model)
