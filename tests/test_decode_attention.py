"""decode_attention / kv_append: every backend against the reference, the reference against a naive
masked softmax, and bad input rejected by the Python layer and by the C++ TORCH_CHECKs."""
import math

import pytest
import torch

from pix2seq_fast._ext import load_extension
from pix2seq_fast.ops import decode_attention, kv_append
from pix2seq_fast.ops.decode_attention import decode_attention_ref, kv_append_ref
from tests.conftest import requires_cuda, supported_cpu_isas

TOLERANCE = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
DTYPES = list(TOLERANCE)


def native():
    assert load_extension() is not None, "the extension pix2seq_fast._C is not built"
    return torch.ops.pix2seq_fast


def naive_attention(q, k, v, lengths, kv_index, causal, scale):
    """Loop over sequences and queries; softmax over exactly the visible keys, in float64."""
    batch, heads, num_queries, _ = q.shape
    out = torch.empty(q.shape, dtype=torch.float64)
    for b in range(batch):
        row = b if kv_index is None else int(kv_index[b])
        for t in range(num_queries):
            visible = int(lengths[b]) - num_queries + t + 1 if causal else int(lengths[b])
            keys = k[row, :, :visible].double()  # [H, visible, D]
            scores = torch.einsum("hd,hjd->hj", q[b, :, t].double(), keys) * scale
            out[b, :, t] = torch.einsum("hj,hjd->hd", scores.softmax(-1), v[row, :, :visible].double())
    return out


def make_case(batch, heads, num_queries, head_dim, rows, max_keys, lengths, kv_index, dtype,
              seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, num_queries, head_dim, generator=gen).to(dtype)
    k = torch.randn(rows, heads, max_keys, head_dim, generator=gen).to(dtype)
    v = torch.randn(rows, heads, max_keys, head_dim, generator=gen).to(dtype)
    lengths = torch.as_tensor(lengths, dtype=torch.int64)
    kv_index = None if kv_index is None else torch.as_tensor(kv_index, dtype=torch.int64)
    return q, k, v, lengths, kv_index


# (B, H, Tq, D, N, L, lengths, kv_index, causal): what each case exercises is in its id
CASES = {
    "length1": (2, 2, 1, 32, 2, 9, [1, 1], None, True),
    "odd_sizes_d64": (3, 3, 1, 64, 3, 67, [67, 5, 33], None, True),
    "prefill_tq3": (3, 2, 3, 32, 3, 40, [3, 17, 40], None, True),
    "ragged_cross": (4, 2, 1, 32, 4, 131, [131, 1, 64, 65], None, False),
    "shared_row_grouped": (20, 2, 1, 32, 1, 150, [150] * 10 + list(range(5, 150, 15)), [0] * 20, False),
    "shared_row_tq3": (9, 2, 3, 64, 2, 90, list(range(10, 91, 10)), [0, 1] * 4 + [1], True),
    "shared_row_few": (5, 2, 1, 32, 1, 70, [70, 3, 50, 1, 69], [0] * 5, False),
    "split_kv": (1, 1, 3, 32, 1, 1000, [997], None, True),
    "split_kv_short": (2, 1, 1, 64, 1, 900, [6, 900], [0, 0], False),
    "shared_row_split_kv": (16, 1, 1, 32, 1, 600, list(range(1, 600, 38)), [0] * 16, False),
    "head_dim_48": (3, 2, 2, 48, 2, 33, [2, 33, 20], [1, 0, 1], True),
}
TRITON_CASES = ["length1", "odd_sizes_d64", "prefill_tq3", "shared_row_tq3", "split_kv"]


def run_case(name, dtype, backend):
    batch, heads, nq, dim, rows, max_keys, lengths, kv_index, causal = CASES[name]
    q, k, v, lengths, kv_index = make_case(batch, heads, nq, dim, rows, max_keys, lengths, kv_index,
                                           dtype)
    expected = decode_attention(q, k, v, lengths, kv_index, causal, backend="ref")
    got = decode_attention(q, k, v, lengths, kv_index, causal, backend=backend)
    assert got.dtype == dtype and got.shape == q.shape
    torch.testing.assert_close(got.float(), expected.float(), atol=TOLERANCE[dtype],
                               rtol=TOLERANCE[dtype])


@pytest.mark.parametrize("name", list(CASES))
def test_reference_matches_naive_softmax(name):
    batch, heads, nq, dim, rows, max_keys, lengths, kv_index, causal = CASES[name]
    q, k, v, lengths, kv_index = make_case(batch, heads, nq, dim, rows, max_keys, lengths, kv_index,
                                           torch.float32)
    got = decode_attention_ref(q, k, v, lengths, kv_index, causal, None)
    expected = naive_attention(q, k, v, lengths, kv_index, causal, 1 / math.sqrt(dim))
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(CASES))
def test_cpp_matches_reference(name, dtype):
    run_case(name, dtype, "cpp")


ISA_CASES = ["prefill_tq3", "shared_row_grouped", "shared_row_split_kv", "head_dim_48"]


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
def test_cpp_every_isa_matches_reference(isa, monkeypatch):
    monkeypatch.setenv("P2S_CPU_ISA", isa)
    if not supported_cpu_isas()[isa]:
        with pytest.raises(RuntimeError, match="does not support"):
            run_case("prefill_tq3", torch.float32, "cpp")
        return
    for name in ISA_CASES:
        for dtype in DTYPES:
            run_case(name, dtype, "cpp")


def test_cpp_rejects_unknown_isa(monkeypatch):
    monkeypatch.setenv("P2S_CPU_ISA", "sse9")
    with pytest.raises(RuntimeError, match="P2S_CPU_ISA"):
        run_case("prefill_tq3", torch.float32, "cpp")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", TRITON_CASES)
def test_triton_matches_reference(name, dtype):
    run_case(name, dtype, "triton")


@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_cuda_matches_reference(name, dtype, backend):
    batch, heads, nq, dim, rows, max_keys, lengths, kv_index, causal = CASES[name]
    q, k, v, lengths, kv_index = (None if t is None else t.cuda() for t in make_case(
        batch, heads, nq, dim, rows, max_keys, lengths, kv_index, dtype))
    expected = decode_attention(q, k, v, lengths, kv_index, causal, backend="ref")
    got = decode_attention(q, k, v, lengths, kv_index, causal, backend=backend)
    torch.testing.assert_close(got.float(), expected.float(), atol=TOLERANCE[dtype],
                               rtol=TOLERANCE[dtype])


@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_triton_and_cpp_forced_splits_merge_partial_states(backend):
    """Ragged lengths with several key chunks: chunks past a sequence's end hold empty states."""
    from pix2seq_fast.ops.triton_decode_attention import decode_attention_triton

    q, k, v, lengths, kv_index = make_case(3, 1, 2, 32, 2, 600, [2, 300, 600], [1, 0, 1],
                                           torch.float32, seed=3)
    expected = decode_attention_ref(q, k, v, lengths, kv_index, True, 0.3)
    if backend == "triton":
        got = decode_attention_triton(q, k, v, lengths, kv_index, True, 0.3, num_splits=3)
    else:  # 3 x 1 items on 2 threads: the CPU kernel splits keys
        got = decode_attention(q, k, v, lengths, kv_index, True, scale=0.3, backend="cpp")
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_strided_views_and_custom_scale(backend):
    """q/k/v as transposed views of [B, T, H, D] projections (unit stride only in D)."""
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(4, 3, 2, 32, generator=gen).transpose(1, 2)  # [B=4, H=2, Tq=3, D]
    k = torch.randn(2, 50, 2, 32, generator=gen).transpose(1, 2)  # [N=2, H=2, L=50, D]
    v = torch.randn(2, 50, 2, 32, generator=gen).transpose(1, 2)
    lengths = torch.tensor([50, 3, 20, 44], dtype=torch.int32)
    kv_index = torch.tensor([1, 0, 0, 1], dtype=torch.int32)
    expected = naive_attention(q, k, v, lengths, kv_index, True, 0.7)
    got = decode_attention(q, k, v, lengths, kv_index, True, scale=0.7, backend=backend)
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=2e-5)


def test_auto_backend_on_cpu_is_the_cpp_kernel():
    q, k, v, lengths, kv_index = make_case(16, 2, 1, 32, 1, 80, [80] * 16, [0] * 16, torch.float32)
    auto = decode_attention(q, k, v, lengths, kv_index, False)
    cpp = decode_attention(q, k, v, lengths, kv_index, False, backend="cpp")
    assert torch.equal(auto, cpp)


def test_grouped_and_single_paths_agree_on_shared_rows():
    """The same rows read by 8+ sequences (grouped lanes) or by one (single path) give one answer."""
    q, k, v, lengths, _ = make_case(12, 2, 1, 64, 1, 200, [200, 7] * 6, None, torch.float32)
    grouped = decode_attention(q, k, v, lengths, torch.zeros(12, dtype=torch.int64), False,
                               backend="cpp")
    single = decode_attention(q, k.expand(12, -1, -1, -1), v.expand(12, -1, -1, -1), lengths, None,
                              False, backend="cpp")
    torch.testing.assert_close(grouped, single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_half_outputs_round_like_torch_down_to_subnormals(backend):
    """Uniform weights (q = 0) average tiny and large fp16 values: the float->fp16 rounding of the
    shared header must match torch's, including subnormal results."""
    gen = torch.Generator().manual_seed(5)
    q = torch.zeros(2, 1, 1, 32, dtype=torch.float16)
    magnitudes = torch.tensor([1e-7, 3e-6, 6e-5, 1.0, 1e4]).repeat_interleave(7)[:32]
    v = (torch.randn(2, 1, 16, 32, generator=gen) * magnitudes).to(torch.float16)
    k = torch.randn(2, 1, 16, 32, generator=gen).to(torch.float16)
    lengths = torch.tensor([16, 5])
    got = decode_attention(q, k, v, lengths, None, False, backend=backend)
    expected = decode_attention(q, k, v, lengths, None, False, backend="ref")
    assert torch.isfinite(got.float()).all()
    assert (got.abs() < torch.finfo(torch.float16).smallest_normal).sum() >= 8  # subnormal results
    torch.testing.assert_close(got.float(), expected.float(), atol=0.0, rtol=1e-3)


# ---- kv_append ---------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["ref", "cpp", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("steps", [1, 3])
def test_kv_append_writes_only_the_new_positions(backend, dtype, steps):
    gen = torch.Generator().manual_seed(2)
    k_cache = torch.randn(3, 2, 10, 32, generator=gen).to(dtype)
    v_cache = torch.randn(3, 2, 10, 32, generator=gen).to(dtype)
    k_new = torch.randn(3, steps, 2, 32, generator=gen).to(dtype).transpose(1, 2)  # strided view
    v_new = torch.randn(3, 2, steps, 32, generator=gen).to(dtype)
    start = torch.tensor([0, 4, 10 - steps], dtype=torch.int32)
    k_expected, v_expected = k_cache.clone(), v_cache.clone()
    for b in range(3):
        s = int(start[b])
        k_expected[b, :, s:s + steps] = k_new[b]
        v_expected[b, :, s:s + steps] = v_new[b]
    kv_append(k_cache, v_cache, k_new, v_new, start, backend=backend)
    assert torch.equal(k_cache, k_expected) and torch.equal(v_cache, v_expected)


def test_append_then_attend_equals_attention_over_concatenation():
    """A decode step: append this step's k/v at position lengths[b], then attend to lengths + 1."""
    gen = torch.Generator().manual_seed(4)
    k_cache = torch.zeros(2, 2, 12, 32)
    v_cache = torch.zeros(2, 2, 12, 32)
    past_k, past_v = torch.randn(2, 2, 5, 32, generator=gen), torch.randn(2, 2, 5, 32, generator=gen)
    kv_append(k_cache, v_cache, past_k, past_v, torch.tensor([0, 0]))
    new_k, new_v = torch.randn(2, 2, 1, 32, generator=gen), torch.randn(2, 2, 1, 32, generator=gen)
    q = torch.randn(2, 2, 1, 32, generator=gen)
    kv_append(k_cache, v_cache, new_k, new_v, torch.tensor([5, 5]))
    got = decode_attention(q, k_cache, v_cache, torch.tensor([6, 6]))
    full_k, full_v = torch.cat([past_k, new_k], 2), torch.cat([past_v, new_v], 2)
    expected = torch.nn.functional.scaled_dot_product_attention(q, full_k, full_v)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@requires_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_kv_append_cuda(backend):
    k_cache, v_cache = torch.zeros(2, 2, 8, 64, device="cuda"), torch.zeros(2, 2, 8, 64, device="cuda")
    k_new, v_new = torch.randn(2, 2, 2, 64, device="cuda"), torch.randn(2, 2, 2, 64, device="cuda")
    start = torch.tensor([1, 6], device="cuda")
    kv_append(k_cache, v_cache, k_new, v_new, start, backend=backend)
    k_ref, v_ref = torch.zeros_like(k_cache), torch.zeros_like(v_cache)
    kv_append_ref(k_ref, v_ref, k_new, v_new, start)
    assert torch.equal(k_cache, k_ref) and torch.equal(v_cache, v_ref)


# ---- bad input ---------------------------------------------------------------------------------
def good_args():
    q, k, v, lengths, kv_index = make_case(3, 2, 1, 32, 2, 10, [10, 1, 5], [0, 1, 1], torch.float32)
    return dict(q=q, k=k, v=v, lengths=lengths, kv_index=kv_index, causal=True)


def with_change(**change):
    args = good_args()
    args.update(change)
    return args


BAD_ATTENTION = {
    "k_heads_mismatch": (lambda a: with_change(k=a["k"][:, :1], v=a["v"][:, :1]), "k"),
    "v_shape_mismatch": (lambda a: with_change(v=a["v"][:, :, :5]), "v"),
    "head_dim_mismatch": (lambda a: with_change(q=torch.randn(3, 2, 1, 16)), "k"),
    "q_not_4d": (lambda a: with_change(q=a["q"][0]), "q"),
    "lengths_above_L": (lambda a: with_change(lengths=torch.tensor([11, 1, 5])), "lengths"),
    "lengths_zero": (lambda a: with_change(lengths=torch.tensor([10, 0, 5])), "lengths"),
    "causal_lengths_below_tq": (lambda a: with_change(q=torch.randn(3, 2, 3, 32),
                                                      lengths=torch.tensor([10, 2, 5])), "lengths"),
    "lengths_wrong_shape": (lambda a: with_change(lengths=torch.tensor([10, 1])), "lengths"),
    "lengths_float": (lambda a: with_change(lengths=torch.tensor([10.0, 1.0, 5.0])), "lengths"),
    "q_int_dtype": (lambda a: with_change(q=a["q"].to(torch.int32)), "q"),
    "kv_dtype_mismatch": (lambda a: with_change(k=a["k"].half(), v=a["v"].half()), "dtype"),
    "kv_index_too_large": (lambda a: with_change(kv_index=torch.tensor([0, 2, 1])), "kv_index"),
    "kv_index_negative": (lambda a: with_change(kv_index=torch.tensor([0, -1, 1])), "kv_index"),
    "no_kv_index_rows_differ": (lambda a: with_change(kv_index=None), "kv_index"),
    "k_last_dim_strided": (lambda a: with_change(k=torch.randn(2, 2, 10, 64)[..., ::2]), "k"),
}


@pytest.mark.parametrize("case", list(BAD_ATTENTION))
@pytest.mark.parametrize("backend", ["auto", "cpp", "triton"])
def test_python_layer_rejects_bad_input(case, backend):
    make, name = BAD_ATTENTION[case]
    args = make(good_args())
    with pytest.raises(ValueError, match=name):
        decode_attention(**args, backend=backend)


@pytest.mark.parametrize("case", list(BAD_ATTENTION))
def test_cpp_layer_rejects_bad_input(case):
    make, name = BAD_ATTENTION[case]
    args = make(good_args())
    with pytest.raises(RuntimeError, match=name):
        native().decode_attention(args["q"], args["k"], args["v"], args["lengths"],
                                  args["kv_index"], args["causal"], 0.5)


def test_wrong_device_and_backend_are_rejected():
    args = good_args()
    with pytest.raises(ValueError, match="k is on meta"):
        decode_attention(**with_change(k=args["k"].to("meta")))
    with pytest.raises(ValueError, match="backend"):
        decode_attention(**args, backend="fast")
    with pytest.raises(ValueError, match="cuda"):
        decode_attention(**args, backend="cuda")
    with pytest.raises(ValueError, match="q must be a torch.Tensor"):
        decode_attention(**with_change(q=[1.0]))


def append_args(**change):
    args = dict(k_cache=torch.zeros(2, 2, 6, 32), v_cache=torch.zeros(2, 2, 6, 32),
                k_new=torch.ones(2, 2, 2, 32), v_new=torch.ones(2, 2, 2, 32),
                start=torch.tensor([0, 4]))
    args.update(change)
    return args


BAD_APPEND = {
    "start_past_end": (dict(start=torch.tensor([0, 5])), "start"),
    "start_negative": (dict(start=torch.tensor([-1, 0])), "start"),
    "start_wrong_shape": (dict(start=torch.tensor([0])), "start"),
    "start_float": (dict(start=torch.tensor([0.0, 1.0])), "start"),
    "new_heads_mismatch": (dict(k_new=torch.ones(2, 1, 2, 32), v_new=torch.ones(2, 1, 2, 32)), "k_new"),
    "v_new_shape": (dict(v_new=torch.ones(2, 2, 1, 32)), "v_new"),
    "v_cache_shape": (dict(v_cache=torch.zeros(2, 2, 5, 32)), "v_cache"),
    "dtype_mismatch": (dict(k_new=torch.ones(2, 2, 2, 32, dtype=torch.float16)), "dtype"),
    "cache_last_dim_strided": (dict(k_cache=torch.zeros(2, 2, 6, 64)[..., ::2]), "k_cache"),
}


@pytest.mark.parametrize("case", list(BAD_APPEND))
def test_kv_append_rejects_bad_input_in_python_and_cpp(case):
    change, name = BAD_APPEND[case]
    args = append_args(**change)
    if case != "cache_last_dim_strided":  # the reference accepts any strides
        with pytest.raises(ValueError, match=name):
            kv_append(**args, backend="ref")
    with pytest.raises(ValueError, match=name):
        kv_append(**args, backend="cpp")
    with pytest.raises(RuntimeError, match=name):
        native().kv_append(*append_args(**change).values())
    untouched = append_args()
    assert torch.count_nonzero(untouched["k_cache"]) == 0
