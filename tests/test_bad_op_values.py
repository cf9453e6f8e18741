"""Non-finite values in decode attention: one rule for the reference and the C++ kernel (every ISA,
dtype, the single / grouped / split-KV paths): a query row that sees a NaN or +-inf score or
value comes out all NaN, every other row is what finite inputs give; keys and values a row does
not see never matter."""
import itertools

import pytest
import torch

from pix2seq_fast.ops import decode_attention
from pix2seq_fast.ops.decode_attention import decode_attention_ref, visible_limits

NONFINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}
# (batch, kv rows, keys, head dim, threads): single path, grouped path (24 queries share one row),
# split-KV (few items, many keys, 2 threads), a head dim off the 32 / 64 fast paths.
SHAPES = {"single": (3, 3, 70, 32, 1), "grouped": (24, 1, 70, 64, 1), "split": (2, 2, 600, 32, 2),
          "grouped_split": (4, 1, 600, 32, 2), "head_dim_40": (3, 3, 70, 40, 1)}


def cpu_isas():
    capability = torch.backends.cpu.get_cpu_capability()
    return [isa for isa, ok in (("baseline", True), ("avx2", capability in ("AVX2", "AVX512")),
                                ("avx512", capability == "AVX512")) if ok]


def _inputs(shape, dtype, seed=0):
    batch, rows, keys, dim, _ = shape
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, 2, 3, dim, generator=g).to(dtype)
    k = torch.randn(rows, 2, keys, dim, generator=g).to(dtype)
    v = torch.randn(rows, 2, keys, dim, generator=g).to(dtype)
    lengths = torch.randint(keys // 2, keys, (batch,), generator=g)
    lengths[0] = keys - 5  # row 0 never sees the last 5 keys
    kv_index = None if rows == batch else torch.zeros(batch, dtype=torch.int64)
    return q, k, v, lengths, kv_index


def _place(q, k, v, lengths, where, value):
    """Put ``value`` where a given query row of sequence 0 sees it (or where nobody does)."""
    if where == "q":
        q[0, 1, 2, 3] = value
    elif where == "k_seen":
        k[0, 1, 4, 2] = value
    elif where == "v_seen":
        v[0, 0, 1, 5] = value
    elif where == "k_unseen":  # past every length: garbage in a cache is never read
        k[:, :, -1] = value
    elif where == "v_unseen":
        v[:, :, -1] = value
    elif where == "v_later":  # seen by the last query of sequence 0 only (causal)
        v[0, 0, int(lengths[0]) - 1, 0] = value


def _expected_nan_rows(q, k, v, lengths, kv_index, causal):
    """``[B, H, Tq]`` bool: the rows the rule makes NaN, from the inputs alone."""
    kk = k if kv_index is None else k.index_select(0, kv_index)
    vv = v if kv_index is None else v.index_select(0, kv_index)
    limit = visible_limits(lengths, q.shape[2], causal)
    seen = torch.arange(k.shape[2]).view(1, 1, -1) < limit.unsqueeze(-1)  # [B, Tq, L]
    bad_q = ~torch.isfinite(q.float()).all(-1)
    bad_kv = ~torch.isfinite(kk.float()).all(-1) | ~torch.isfinite(vv.float()).all(-1)  # [B, H, L]
    return bad_q | (seen.unsqueeze(1) & bad_kv.unsqueeze(2)).any(-1)


@pytest.mark.parametrize("isa", cpu_isas())
@pytest.mark.parametrize("shape_name", sorted(SHAPES))
def test_cpp_kernel_follows_the_nan_rule(isa, shape_name, monkeypatch):
    monkeypatch.setenv("P2S_CPU_ISA", isa)
    shape = SHAPES[shape_name]
    saved = torch.get_num_threads()
    torch.set_num_threads(shape[4])
    try:
        checked = 0
        dtypes = (torch.float32, torch.float16, torch.bfloat16) if shape_name == "single" else (torch.float32,)
        for dtype, where, (name, value), causal in itertools.product(
                dtypes, ("q", "k_seen", "v_seen", "k_unseen", "v_unseen", "v_later"),
                NONFINITE.items(), (True, False)):
            q, k, v, lengths, kv_index = _inputs(shape, dtype)
            _place(q, k, v, lengths, where, value)
            want_nan = _expected_nan_rows(q, k, v, lengths, kv_index, causal)
            ref = decode_attention_ref(q, k, v, lengths, kv_index, causal)
            out = decode_attention(q, k, v, lengths, kv_index, causal, backend="cpp")
            label = f"{dtype} {where}={name} causal={causal}"
            assert torch.equal(torch.isnan(ref).all(-1), want_nan), label
            assert torch.equal(torch.isnan(out).all(-1), want_nan), label
            assert not torch.isnan(out[~want_nan]).any() and torch.isfinite(out[~want_nan]).all(), label
            torch.testing.assert_close(out[~want_nan].float(), ref[~want_nan].float(), atol=2e-2, rtol=2e-2,
                                       msg=label)
            checked += int(want_nan.any())
        assert checked > 0  # the corpus did hit rows
    finally:
        torch.set_num_threads(saved)


def test_rule_on_a_row_by_hand():
    q = torch.ones(1, 1, 1, 2)
    k = torch.tensor([[[[1.0, 0.0], [0.0, 1.0], [float("nan"), 0.0]]]])
    v = torch.tensor([[[[1.0, 2.0], [3.0, 4.0], [float("inf"), 0.0]]]])
    for backend in ("ref", "cpp"):
        seen_two = decode_attention(q, k, v, torch.tensor([2]), causal=False, backend=backend)
        torch.testing.assert_close(seen_two, torch.tensor([[[[2.0, 3.0]]]]))  # equal scores: the mean
        seen_three = decode_attention(q, k, v, torch.tensor([3]), causal=False, backend=backend)
        assert torch.isnan(seen_three).all()
