"""encoder_attention: the C++ kernel (its AVX512-BF16 path and its scalar path) against fp32 SDPA on
shape grids and edge cases, the bf16 encoder that uses it against the one that does not, and bad
input rejected by name."""
import copy

import pytest
import torch

from pix2seq_fast._ext import load_extension
from pix2seq_fast.model import create_model
from pix2seq_fast.model.quantize import FusedSelfAttention, quantize_encoder
from pix2seq_fast.ops.encoder_attention import encoder_attention, encoder_attention_ref
from tests.conftest import supported_cpu_isas

AVX512_BF16 = torch.cpu._is_avx512_bf16_supported()
requires_avx512_bf16 = pytest.mark.skipif(
    not AVX512_BF16, reason="the kernel's vdpbf16ps path needs an AVX512-BF16 CPU; this one has none")


def native():
    assert load_extension() is not None, "the extension pix2seq_fast._C is not built"
    return torch.ops.pix2seq_fast.encoder_attention


def make_qkv(batch, tokens, heads, head_dim, seed=0, q_gain=1.0):
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch, tokens, 3, heads * head_dim, generator=g)
    qkv[:, :, 0] *= q_gain
    return qkv.reshape(batch, tokens, 3 * heads * head_dim).bfloat16()


def assert_close_to_fp32(out, qkv, heads, scale=None):
    """The kernel rounds P to bf16 before P V and its output to bf16: within ~2^-8 of the values'
    scale of an fp32 SDPA on the same bf16 inputs."""
    expected = encoder_attention_ref(qkv.float(), heads, scale)
    v_scale = float(qkv.float().abs().max())
    assert out.dtype == torch.bfloat16 and out.shape == expected.shape
    torch.testing.assert_close(out.float(), expected, rtol=8e-3, atol=4e-3 * v_scale)


# (B, N, H, D): tokens around the 32-key tiles and 8-query blocks, every fast head size, others
SHAPES = [(1, 1, 1, 64), (2, 5, 3, 64), (1, 31, 2, 32), (1, 32, 2, 16), (3, 33, 1, 128), (1, 100, 4, 64),
          (2, 257, 2, 32), (1, 41, 2, 48), (1, 9, 3, 2)]


@pytest.mark.parametrize("isa", ["baseline", "avx512"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_kernel_matches_fp32_sdpa(shape, isa, monkeypatch):
    """Both paths (P2S_CPU_ISA=avx512 takes vdpbf16ps on an AVX512-BF16 CPU for D in 16/32/64/128, the
    scalar path otherwise; baseline always the scalar path)."""
    monkeypatch.setenv("P2S_CPU_ISA", isa)
    batch, tokens, heads, head_dim = shape
    qkv = make_qkv(batch, tokens, heads, head_dim)
    if not supported_cpu_isas()[isa]:
        with pytest.raises(RuntimeError, match="does not support"):
            native()(qkv, heads, head_dim ** -0.5)
        return
    assert_close_to_fp32(native()(qkv, heads, head_dim ** -0.5), qkv, heads)


@requires_avx512_bf16
def test_vector_path_agrees_with_scalar_path(monkeypatch):
    qkv = make_qkv(2, 77, 3, 64, seed=3)
    fast = native()(qkv, 3, 0.125)
    monkeypatch.setenv("P2S_CPU_ISA", "baseline")
    scalar = native()(qkv, 3, 0.125)
    torch.testing.assert_close(fast.float(), scalar.float(), rtol=8e-3, atol=2e-2)


@pytest.mark.parametrize("q_gain", [0.0, 30.0], ids=["uniform", "peaked"])
def test_extreme_softmax(q_gain):
    """q = 0 makes every key equally likely (the output is V's mean); a large q puts (almost) all the
    mass on one key (no overflow: scores are shifted by their row maximum)."""
    qkv = make_qkv(1, 70, 2, 64, seed=5, q_gain=q_gain)
    out = encoder_attention(qkv, 2)
    assert torch.isfinite(out.float()).all()
    assert_close_to_fp32(out, qkv, 2)
    if q_gain == 0.0:
        v = qkv.float().reshape(1, 70, 3, 128)[:, :, 2]
        torch.testing.assert_close(out.float(), v.mean(1, keepdim=True).expand_as(v), rtol=0, atol=2e-2)


@pytest.mark.parametrize("isa", ["baseline", "avx512"])
@pytest.mark.parametrize("part, value", [("q", "nan"), ("k", "nan"), ("v", "nan"), ("k", "inf"), ("v", "inf")])
def test_non_finite_rows_as_sdpa(part, value, isa, monkeypatch):
    """A NaN or inf in one token's q, k or v makes exactly the rows non-finite that fp32 SDPA does."""
    monkeypatch.setenv("P2S_CPU_ISA", isa)
    qkv = make_qkv(1, 40, 1, 64, seed=6)
    qkv[0, 5, {"q": 0, "k": 64, "v": 128}[part] + 3] = float(value)
    if not supported_cpu_isas()[isa]:
        with pytest.raises(RuntimeError, match="does not support"):
            native()(qkv, 1, 0.125)
        return
    out = native()(qkv, 1, 0.125).float()
    expected = encoder_attention_ref(qkv.float(), 1, 0.125)
    bad = ~torch.isfinite(expected).all(-1)
    assert bad.any() and torch.equal(~torch.isfinite(out).all(-1), bad)
    finite = ~bad
    torch.testing.assert_close(out[finite], expected[finite], rtol=8e-3, atol=3e-2)


def test_custom_scale_and_ref_backend():
    qkv = make_qkv(1, 40, 2, 32, seed=1)
    out = encoder_attention(qkv, 2, scale=0.3)
    assert_close_to_fp32(out, qkv, 2, scale=0.3)
    ref = encoder_attention(qkv, 2, scale=0.3, backend="ref")
    assert ref.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), rtol=2e-2, atol=3e-2)
    # fp32 input: the reference (no kernel for it), in fp32
    out32 = encoder_attention(qkv.float(), 2, scale=0.3)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32, encoder_attention_ref(qkv.float(), 2, 0.3))


def test_empty_batch():
    assert native()(torch.zeros(0, 4, 3 * 64, dtype=torch.bfloat16), 1, 0.125).shape == (0, 4, 64)


@pytest.mark.parametrize("kwargs, message", [
    (dict(qkv=torch.zeros(2, 3 * 64, dtype=torch.bfloat16), num_heads=1), "qkv must be 3-D"),
    (dict(qkv=torch.zeros(1, 2, 3 * 64, dtype=torch.int32), num_heads=1), "qkv must have dtype"),
    (dict(qkv=torch.zeros(1, 2, 100, dtype=torch.bfloat16), num_heads=1), "must be 3 \\* num_heads"),
    (dict(qkv=torch.zeros(1, 2, 192, dtype=torch.bfloat16), num_heads=0), "num_heads must be a positive int"),
    (dict(qkv=torch.zeros(1, 2, 192, dtype=torch.bfloat16), num_heads=1, scale=-1.0), "scale must be"),
    (dict(qkv=torch.zeros(1, 2, 192, dtype=torch.bfloat16), num_heads=1, scale=float("nan")), "scale must be"),
    (dict(qkv=torch.zeros(1, 2, 192, dtype=torch.bfloat16), num_heads=1, backend="cuda"), "backend must be"),
    (dict(qkv=torch.zeros(1, 2, 192), num_heads=1, backend="cpp"), "needs a bfloat16 CPU qkv"),
])
def test_bad_input_names_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        encoder_attention(**kwargs)


def test_cpp_checks():
    op = native()
    with pytest.raises(RuntimeError, match="qkv must be bfloat16"):
        op(torch.zeros(1, 2, 192), 1, 0.125)
    with pytest.raises(RuntimeError, match="contiguous"):
        op(torch.zeros(1, 192, 2, dtype=torch.bfloat16).transpose(1, 2), 1, 0.125)
    with pytest.raises(RuntimeError, match="head_dim must be even"):
        op(torch.zeros(1, 2, 9, dtype=torch.bfloat16), 1, 0.125)
    with pytest.raises(RuntimeError, match="scale must be"):
        op(torch.zeros(1, 2, 192, dtype=torch.bfloat16), 1, 0.0)


def test_bf16_encoder_with_fused_attention():
    """Every ViT block's attention is swapped, the features match the SDPA bf16 encoder's within bf16
    error, and training mode (or gradients) falls back to the wrapped module."""
    torch.manual_seed(0)
    model = create_model("vit-b", enc_layers=2, dec_layers=1, image_size=160).eval()
    sdpa = quantize_encoder(copy.deepcopy(model), fused_attention=False)
    fused = quantize_encoder(copy.deepcopy(model), fused_attention=True)
    swapped = [m for m in fused.encoder.modules() if isinstance(m, FusedSelfAttention)]
    assert len(swapped) == 2 and not any(isinstance(m, FusedSelfAttention) for m in sdpa.encoder.modules())
    images = torch.rand(2, 3, 160, 160, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        f0, f1, f32 = sdpa.encode(images), fused.encode(images), model.encode(images)
    scale = f32.norm(dim=-1, keepdim=True)
    err_sdpa, err_fused = ((f0 - f32).abs() / scale).max(), ((f1 - f32).abs() / scale).max()
    assert err_fused <= 2 * err_sdpa + 1e-3, (err_fused, err_sdpa)
    fused.encoder.train()
    sdpa.encoder.train()
    with torch.inference_mode():  # the same random draws (dropout, drop path) on both: the same output
        torch.manual_seed(2)
        f_train = fused.encoder(images)
        torch.manual_seed(2)
        f_sdpa_train = sdpa.encoder(images)
    torch.testing.assert_close(f_train, f_sdpa_train, rtol=0, atol=0)
