"""top_p_sample: every backend against the sort-based reference, and the reference against the rules'
sources (the authors' top_logits, Hugging Face's TopPLogitsWarper).

Boundary decisions and CDF steps can flip within float rounding between implementations, so "the
same token" comparisons leave out draws whose uniform lies within 1e-5 of a CDF step and use a kept
set computed with p +/- 1e-5; everything else must match exactly.
"""
import math

import pytest
import torch

from pix2seq_fast._ext import load_extension
from pix2seq_fast.ops import top_p_sample
from pix2seq_fast.ops.sampling import _check_generator, kept_mask_reference, tempered_logits
from pix2seq_fast.ops.sampling import RULES, top_p_sample_reference
from tests.conftest import requires_cuda, supported_cpu_isas

EPS = 1e-5

load_extension()


def kernel(backend):
    """The raw kernel of a backend: (logits, p[B], k[B], t[B], u[B], rule, want_lp) -> (ids, lp)."""
    if backend == "ref":
        return lambda x, p, k, t, u, rule, want: top_p_sample_reference(x, p, k, t, u, rule)
    if backend == "triton":
        from pix2seq_fast.ops.triton_sampling import top_p_sample_triton
        return top_p_sample_triton
    return torch.ops.pix2seq_fast.top_p_sample


def loose_kept(logits, p, k, t, rule):
    """Kept set with p widened by EPS (p >= 1 stays 'no top-p')."""
    widened = torch.where(p < 1, torch.clamp(p + EPS, max=1 - 1e-7), p)
    return kept_mask_reference(tempered_logits(logits, p, t), widened, k, rule)


def strict_kept(logits, p, k, t, rule):
    narrowed = torch.where(p < 1, p - EPS, p)
    return kept_mask_reference(tempered_logits(logits, p, t), narrowed, k, rule)


def unambiguous(logits, p, k, t, u, rule, cdf_eps=EPS):
    """[B] bool: rows whose kept set is stable under p +/- EPS and whose uniform is not within
    ``cdf_eps`` of a step of the kept set's CDF."""
    stable = (loose_kept(logits, p, k, t, rule) == strict_kept(logits, p, k, t, rule)).all(-1)
    scaled = tempered_logits(logits, p, t)
    kept = kept_mask_reference(scaled, p, k, rule)
    w = torch.exp((scaled - scaled.max(-1, keepdim=True).values).double()) * kept
    cdf = w.cumsum(-1) / w.sum(-1, keepdim=True)
    far = ((cdf - u.double().view(-1, 1)).abs() > cdf_eps).all(-1)
    return stable & far


def random_case(batch, vocab, seed, ties=True, per_row=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, vocab, generator=g) * 2.5
    if ties:
        x = (x * 2).round() / 2  # many exactly tied logits
    if per_row:
        p = torch.rand(batch, generator=g) * 1.1 - 0.05  # some <= 0 (greedy), some 1 (clamped below)
        p = p.clamp(max=1.0)
        k = torch.randint(0, 12, (batch,), generator=g)
        t = torch.rand(batch, generator=g) + 0.4
    else:
        p = torch.full((batch,), 0.6)
        k = torch.zeros(batch, dtype=torch.int64)
        t = torch.ones(batch)
    u = torch.rand(batch, generator=g)
    return x, p, k, t, u


CPU_BACKENDS = ["ref", "cpp", "triton"]


def grid(backend):
    """(batch, vocab, seeds) small enough for the Triton interpreter."""
    return (2, 37, range(2)) if backend == "triton" else (64, 111, range(4))


# ---------------------------------------------------------------------------------------------
# the reference against the rules' sources
# ---------------------------------------------------------------------------------------------
def authors_top_logits_mask(logits, p):
    """google-research/pix2seq top_logits (p part), transcribed: sort, softmax, inclusive cumsum,
    the smallest logit with cumsum <= p (at least the top one), keep logits >= it."""
    sorted_logits = torch.sort(logits, dim=-1, descending=True).values
    cum_probs = torch.cumsum(torch.softmax(sorted_logits, -1), -1)
    min_logits = -torch.where(cum_probs <= p.view(-1, 1), -sorted_logits,
                              torch.full_like(sorted_logits, -1e10)).max(-1, keepdim=True).values
    min_logits = torch.minimum(min_logits, sorted_logits[:, :1])
    return logits >= min_logits


@pytest.mark.parametrize("ties", [False, True])
def test_pix2seq_rule_matches_authors_code(ties):
    x, p, k, t, u = random_case(200, 50, seed=1, ties=ties)
    p = p.clamp(0.01, 0.99)
    x = x.double()
    ours = kept_mask_reference(x.float(), p, torch.zeros_like(k), "pix2seq")
    theirs = authors_top_logits_mask(x, p.double())
    stable = (loose_kept(x.float(), p, torch.zeros_like(k), torch.ones_like(p), "pix2seq")
              == strict_kept(x.float(), p, torch.zeros_like(k), torch.ones_like(p), "pix2seq")).all(-1)
    assert stable.sum() > 150
    assert torch.equal(ours[stable], theirs[stable])


def test_standard_rule_matches_hugging_face():
    transformers = pytest.importorskip("transformers")  # installed in this project's venv
    x, p, k, t, u = random_case(40, 50, seed=2, ties=False)
    for row in range(x.shape[0]):
        pr = float(p[row].clamp(0.01, 0.99))
        warper = transformers.TopPLogitsWarper(top_p=pr)
        theirs = torch.isfinite(warper(None, x[row:row + 1].double()))[0]
        pp = torch.tensor([pr])
        ours = kept_mask_reference(x[row:row + 1], pp, torch.zeros(1, dtype=torch.int64), "standard")[0]
        loose = loose_kept(x[row:row + 1], pp, torch.zeros(1, dtype=torch.int64), torch.ones(1), "standard")[0]
        strict = strict_kept(x[row:row + 1], pp, torch.zeros(1, dtype=torch.int64), torch.ones(1), "standard")[0]
        if torch.equal(loose, strict):
            assert torch.equal(ours, theirs), row


def test_tie_rule_hand_computed():
    probs = torch.tensor([[0.3, 0.2, 0.2, 0.2, 0.1]])
    x = probs.log()
    k0 = torch.zeros(1, dtype=torch.int64)

    def kept(p, rule):
        return kept_mask_reference(x, torch.tensor([p]), k0, rule)[0].tolist()

    # pix2seq: the tied 0.2s have G = 0.3, G + 0.2 = 0.5 <= 0.55 -> all three kept
    assert kept(0.55, "pix2seq") == [True, True, True, True, False]
    assert kept(0.45, "pix2seq") == [True, False, False, False, False]
    assert kept(0.1, "pix2seq") == [True, False, False, False, False]  # never fewer than one
    # standard: kept iff G < p
    assert kept(0.55, "standard") == [True, True, True, True, False]
    assert kept(0.25, "standard") == [True, False, False, False, False]
    assert kept(0.31, "standard") == [True, True, True, True, False]
    assert kept(0.95, "standard") == [True, True, True, True, True]
    # top-k keeps ties at the k-th value
    assert kept_mask_reference(x, torch.tensor([1.0]), torch.tensor([2]), "pix2seq")[0].tolist() == \
        [True, True, True, True, False]


# ---------------------------------------------------------------------------------------------
# every backend: kept set, same token as the reference, frequencies
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_drawn_tokens_lie_in_kept_set(backend, rule):
    batch, vocab, seeds = grid(backend)
    run = kernel(backend)
    for seed in seeds:
        x, p, k, t, u = random_case(batch, vocab, seed)
        ids, _ = run(x, p, k, t, u, rule, False)
        greedy = (p <= 0) | (t <= 0)
        allowed = loose_kept(x, p, k, t, rule)
        assert bool(allowed[~greedy].gather(1, ids[~greedy].view(-1, 1)).all())
        assert torch.equal(ids[greedy], x[greedy].argmax(-1))


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_same_uniforms_same_token_as_reference(backend, rule):
    batch, vocab, seeds = grid(backend)
    run = kernel(backend)
    compared = 0
    for seed in seeds:
        x, p, k, t, u = random_case(batch, vocab, seed + 10)
        ids, _ = run(x, p, k, t, u, rule, False)
        ref, _ = top_p_sample_reference(x, p, k, t, u, rule)
        ok = unambiguous(x, p, k, t, u, rule)
        assert torch.equal(ids[ok], ref[ok])
        compared += int(ok.sum())
    assert compared >= 0.8 * batch * len(seeds)


def chi_square_threshold(dof, z=3.719):  # z of the 0.9999 quantile, Wilson-Hilferty
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("backend", ["ref", "cpp"])
def test_frequencies_match_renormalised_distribution(backend, rule):
    draws, vocab = 20000, 111
    g = torch.Generator().manual_seed(7)
    row = torch.randn(vocab, generator=g) * 1.5
    x = row.expand(draws, vocab).contiguous()
    ids = top_p_sample(x, top_p=0.8, top_k=40, temperature=0.9, rule=rule, backend=backend,
                       generator=torch.Generator().manual_seed(3))
    one = torch.ones(1)
    kept = kept_mask_reference(tempered_logits(row.view(1, -1), one * 0.8, one * 0.9), one * 0.8,
                               torch.tensor([40]), rule)[0]
    probs = torch.softmax(row.double() / 0.9, -1) * kept
    probs /= probs.sum()
    counts = torch.bincount(ids, minlength=vocab).double()
    assert counts[~kept].sum() == 0
    expected = probs[kept] * draws
    stat = float(((counts[kept] - expected) ** 2 / expected).sum())
    dof = int(kept.sum()) - 1
    assert dof > 10
    assert stat < chi_square_threshold(dof), (stat, dof)


def test_triton_frequencies_stratified():
    """Few interpreter programs, so the uniforms are a stratified grid (i + 0.5) / N: each kept token
    must then be drawn N * q times up to one, and dropped tokens never."""
    from pix2seq_fast.ops.triton_sampling import top_p_sample_triton
    draws = 24
    row = torch.tensor([2.0, 1.5, 1.0, 0.25, -0.5, -3.0])
    x = row.expand(draws, 6).contiguous()
    p = torch.full((draws,), 0.9)
    u = (torch.arange(draws, dtype=torch.float32) + 0.5) / draws
    ids, _ = top_p_sample_triton(x, p, torch.zeros(draws, dtype=torch.int64), torch.ones(draws), u,
                                 "standard", False)
    kept = kept_mask_reference(row.view(1, -1), p[:1], torch.zeros(1, dtype=torch.int64), "standard")[0]
    assert kept.tolist() == [True, True, True, True, False, False]
    probs = torch.softmax(row.double(), -1) * kept
    probs /= probs.sum()
    counts = torch.bincount(ids, minlength=6).double()
    assert ((counts - probs * draws).abs() <= 1).all(), (counts, probs * draws)


# ---------------------------------------------------------------------------------------------
# special settings
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_tiny_p_and_zero_temperature_are_argmax(backend):
    batch = 2 if backend == "triton" else 32
    x = torch.randn(batch, 111, generator=torch.Generator().manual_seed(4))
    argmax = x.argmax(-1)
    for kwargs in (dict(top_p=0.0), dict(top_p=1e-9), dict(top_p=-1.0), dict(temperature=0.0),
                   dict(top_p=1e-9, rule="standard")):
        assert torch.equal(top_p_sample(x, backend=backend, **kwargs), argmax), kwargs


@pytest.mark.parametrize("backend", ["ref", "cpp", "triton"])
def test_p_one_is_plain_sampling(backend):
    batch = 3 if backend == "triton" else 64
    x, _, _, _, u = random_case(batch, 111, seed=8, ties=False)
    ones = torch.ones(batch)
    ids, _ = kernel(backend)(x, ones, torch.zeros(batch, dtype=torch.int64), ones, u, "pix2seq", False)
    cdf = torch.softmax(x.double(), -1).cumsum(-1)
    plain = torch.searchsorted(cdf, u.double().view(-1, 1) * cdf[:, -1:], right=True).view(-1)
    far = ((cdf - u.double().view(-1, 1)).abs() > EPS).all(-1)
    assert far.sum() >= 0.8 * batch
    assert torch.equal(ids[far], plain[far])


@pytest.mark.parametrize("vocab", [1, 2, 37, 111, 1000, 4097])
@pytest.mark.parametrize("rule", RULES)
def test_vocab_sizes_cpp(vocab, rule):
    x, p, k, t, u = random_case(16 if vocab < 4000 else 6, vocab, seed=vocab)
    ids, _ = kernel("cpp")(x, p, k, t, u, rule, False)
    ref, _ = top_p_sample_reference(x, p, k, t, u, rule)
    ok = unambiguous(x, p, k, t, u, rule)
    assert torch.equal(ids[ok], ref[ok])
    assert ((ids >= 0) & (ids < vocab)).all()


@pytest.mark.parametrize("vocab,block", [(1, 16), (37, 16), (111, 64)])
def test_vocab_sizes_triton(vocab, block):
    from pix2seq_fast.ops.triton_sampling import top_p_sample_triton
    x, p, k, t, u = random_case(2, vocab, seed=vocab)
    ids, _ = top_p_sample_triton(x, p, k, t, u, "pix2seq", False, block=block)
    ref, _ = top_p_sample_reference(x, p, k, t, u, "pix2seq")
    ok = unambiguous(x, p, k, t, u, "pix2seq")
    assert torch.equal(ids[ok], ref[ok])


def test_large_vocab_spread_cpp():
    """Logits spanning more than the 28-nat massless gap, top-k in the tail, and a row of equal logits."""
    x = torch.randn(8, 20000, generator=torch.Generator().manual_seed(9)) * 8
    x[3] = 1.25
    p = torch.tensor([0.4, 0.9, 0.99, 0.5, 1.0, 0.7, 0.2, 0.999])
    k = torch.tensor([0, 0, 12000, 0, 19000, 5, 0, 0])
    t = torch.tensor([1.0, 0.7, 2.0, 1.0, 1.0, 0.5, 1.5, 3.0])
    u = torch.rand(8, generator=torch.Generator().manual_seed(10))
    for rule in RULES:
        ids, _ = kernel("cpp")(x, p, k, t, u, rule, False)
        ref, _ = top_p_sample_reference(x, p, k, t, u, rule)
        ok = unambiguous(x, p, k, t, u, rule, cdf_eps=1e-6)  # 35000 steps: a finer margin
        assert ok.sum() >= 6
        assert torch.equal(ids[ok], ref[ok])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_half_precision_logits(backend, dtype):
    batch, vocab, _ = grid(backend)
    x, p, k, t, u = random_case(batch, vocab, seed=11)
    x = x.to(dtype)
    ids, lp = kernel(backend)(x, p, k, t, u, "pix2seq", True)
    ref, ref_lp = top_p_sample_reference(x, p, k, t, u, "pix2seq")
    ok = unambiguous(x.float(), p, k, t, u, "pix2seq")
    assert torch.equal(ids[ok], ref[ok])
    expected = torch.log_softmax(x.double(), -1).gather(1, ids.view(-1, 1)).view(-1)
    torch.testing.assert_close(lp.double(), expected, atol=2e-5, rtol=0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_masked_entries_never_drawn(backend):
    batch = 3 if backend == "triton" else 32
    x = torch.randn(batch, 111, generator=torch.Generator().manual_seed(12))
    x[:, ::3] = float("-inf")
    x[0, :] = float("-inf")
    x[0, 5] = -3.0  # the only finite token
    for rule in RULES:
        for p in (0.5, 1.0):
            ids = top_p_sample(x, top_p=p, rule=rule, backend=backend,
                               generator=torch.Generator().manual_seed(1))
            assert torch.isfinite(x.gather(1, ids.view(-1, 1))).all()
            assert ids[0] == 5
    ids = top_p_sample(x, top_k=200, backend=backend)  # k beyond the finite tokens
    assert torch.isfinite(x.gather(1, ids.view(-1, 1))).all()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_logprobs_are_full_untempered_log_softmax(backend):
    batch = 3 if backend == "triton" else 32
    x, p, k, t, u = random_case(batch, 111, seed=13)
    ids, lp = top_p_sample(x, top_p=p, top_k=k, temperature=t, backend=backend, return_logprobs=True)
    expected = torch.log_softmax(x.double(), -1).gather(1, ids.view(-1, 1)).view(-1)
    torch.testing.assert_close(lp.double(), expected, atol=2e-5, rtol=0)
    assert lp.dtype == torch.float32


def test_generator_reproducible_and_auto_is_cpp():
    x = torch.randn(64, 300, generator=torch.Generator().manual_seed(14))
    a = top_p_sample(x, top_p=0.9, generator=torch.Generator().manual_seed(1))
    b = top_p_sample(x, top_p=0.9, generator=torch.Generator().manual_seed(1), backend="cpp")
    c = top_p_sample(x, top_p=0.9, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert top_p_sample(x[:0]).shape == (0,)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
BAD_CALLS = [
    (dict(logits=torch.randn(5)), "2-D"),
    (dict(logits=torch.randn(2, 3, 4)), "2-D"),
    (dict(logits=torch.randn(2, 0)), "at least one token"),
    (dict(logits=torch.randn(2, 5).double()), "dtype"),
    (dict(logits=torch.randint(0, 5, (2, 5))), "dtype"),
    (dict(logits=[[1.0, 2.0]]), "torch.Tensor"),
    (dict(top_p=1.5), "top_p"),
    (dict(top_p=float("nan")), "top_p"),
    (dict(top_p=torch.tensor([0.5, 1.2])), "top_p"),
    (dict(top_p=torch.tensor([0.5, 0.5, 0.5])), "top_p"),
    (dict(top_p="0.5"), "top_p"),
    (dict(top_k=-1), "top_k"),
    (dict(top_k=2.5), "top_k"),
    (dict(top_k=True), "top_k"),
    (dict(top_k=torch.tensor([1, -2])), "top_k"),
    (dict(top_k=torch.tensor([1.0, 2.0])), "top_k"),
    (dict(top_k=torch.tensor([1])), "top_k"),
    (dict(temperature=-0.5), "temperature"),
    (dict(temperature=float("inf")), "temperature"),
    (dict(temperature=torch.tensor([1.0, -1.0])), "temperature"),
    (dict(temperature=torch.ones(2, 1)), "temperature"),
    (dict(rule="nucleus"), "rule"),
    (dict(backend="gpu"), "backend"),
    (dict(backend="cuda"), "cuda"),
    (dict(generator=123), "generator"),
]


@pytest.mark.parametrize("kwargs,message", BAD_CALLS)
def test_bad_arguments_raise_value_error(kwargs, message):
    kwargs = dict(kwargs)
    logits = kwargs.pop("logits", torch.randn(2, 5))
    with pytest.raises(ValueError, match=message):
        top_p_sample(logits, **kwargs)


def test_generator_on_another_device_is_rejected():
    with pytest.raises(ValueError, match="generator"):
        _check_generator(torch.Generator(), torch.device("cuda", 0))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("value,message", [(float("nan"), "NaN"), (float("inf"), r"\+inf"),
                                           ("all-inf", "-inf")])
def test_bad_logits_raise(backend, value, message):
    x = torch.randn(2, 5)
    if value == "all-inf":
        x[1] = float("-inf")
    else:
        x[1, 2] = value
    with pytest.raises((ValueError, RuntimeError), match=message):
        top_p_sample(x, top_p=0.5, backend=backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_temperature_overflow_raises(backend):
    x = torch.tensor([[3e38, 0.0, -1.0], [1.0, 2.0, 3.0]])
    with pytest.raises((ValueError, RuntimeError), match="overflows"):
        top_p_sample(x, temperature=1e-3, backend=backend)
    assert top_p_sample(x, temperature=0.0, backend=backend).tolist() == [0, 2]  # greedy: no division


def test_kernels_mark_temperature_overflow_rows():
    from pix2seq_fast.ops.triton_sampling import top_p_sample_triton
    x = torch.tensor([[3e38, 0.0, -1.0], [1.0, 2.0, 3.0]])
    t = torch.tensor([1e-3, 1.0])
    p = torch.full((2,), 0.9)
    k = torch.zeros(2, dtype=torch.int64)
    u = torch.full((2,), 0.5)
    for run in (top_p_sample_triton, lambda *a: top_p_sample_reference(*a[:6])):
        ids, _ = run(x, p, k, t, u, "pix2seq", False)
        assert ids[0] == -1 and ids[1] >= 0


def _op_args(**over):
    batch = 2
    args = dict(logits=torch.randn(batch, 5), top_p=torch.full((batch,), 0.5),
                top_k=torch.zeros(batch, dtype=torch.int64), temperature=torch.ones(batch),
                uniforms=torch.full((batch,), 0.3), rule="pix2seq", return_logprobs=False)
    args.update(over)
    return args


@pytest.mark.parametrize("over,message", [
    (dict(logits=torch.tensor([[0.0, float("nan")], [1.0, 2.0]])), "NaN"),
    (dict(logits=torch.full((2, 3), float("-inf"))), "-inf"),
    (dict(logits=torch.randn(2, 5).double()), "float32"),
    (dict(logits=torch.randn(5, 2).t()), "contiguous"),
    (dict(logits=torch.randn(10)), "2-D"),
    (dict(top_p=torch.full((2,), 0.5).double()), "top_p"),
    (dict(top_p=torch.full((3,), 0.5)), "top_p"),
    (dict(top_p=torch.tensor([0.5, 1.5])), "top_p"),
    (dict(top_k=torch.tensor([0, -1])), "top_k"),
    (dict(top_k=torch.zeros(2, dtype=torch.int32)), "top_k"),
    (dict(temperature=torch.tensor([1.0, -1.0])), "temperature"),
    (dict(uniforms=torch.tensor([0.5, 1.0])), "uniforms"),
    (dict(rule="nucleus"), "rule"),
])
def test_cpp_kernel_checks(over, message):
    with pytest.raises(RuntimeError, match=message):
        torch.ops.pix2seq_fast.top_p_sample(**_op_args(**over))


@pytest.mark.parametrize("batch", [1, 5, 40])
@pytest.mark.parametrize("seeded", [True, False])
def test_direct_cpu_entry_draws_torch_rand_uniforms(batch, seeded):
    """``_C.top_p_sample_cpu`` draws its uniforms in C++: the same values as ``torch.rand(B)`` from the
    same generator (the dispatcher op given those uniforms returns the same tokens) and the generator
    (or the global one) ends in the same state."""
    from pix2seq_fast import _C
    x = torch.randn(batch, 500, generator=torch.Generator().manual_seed(20)) * 2
    for trial in range(5):
        make = (lambda: torch.Generator().manual_seed(30 + trial)) if seeded else None
        if seeded:
            gen_entry, gen_rand = make(), make()
        else:
            torch.manual_seed(30 + trial)
            gen_entry = gen_rand = None
        ids, lp = _C.top_p_sample_cpu(x, 0.9, 0, 1.0, gen_entry, "pix2seq", True)
        state_entry = (gen_entry or torch.default_generator).get_state()
        if not seeded:
            torch.manual_seed(30 + trial)
        uniforms = torch.rand(batch, generator=gen_rand)
        state_rand = (gen_rand or torch.default_generator).get_state()
        expected, expected_lp = torch.ops.pix2seq_fast.top_p_sample(
            x, torch.full((batch,), 0.9), torch.zeros(batch, dtype=torch.int64), torch.ones(batch), uniforms,
            "pix2seq", True)
        assert torch.equal(ids, expected)
        assert torch.equal(lp, expected_lp)
        assert torch.equal(state_entry, state_rand)


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
def test_cpp_every_isa_same_tokens(isa, monkeypatch):
    """The weight pass's paths (P2S_CPU_ISA; AVX-512 converts to int64 directly, the others in two
    exact halves) give the same tokens and log-probabilities as the reference."""
    monkeypatch.setenv("P2S_CPU_ISA", isa)
    x = torch.randn(6, 3000, generator=torch.Generator().manual_seed(22)) * 3
    if not supported_cpu_isas()[isa]:
        with pytest.raises(ValueError, match="does not support"):
            top_p_sample(x, top_p=0.8)
        return
    for rule in RULES:
        got = top_p_sample(x, top_p=0.8, temperature=0.9, rule=rule, generator=torch.Generator().manual_seed(3),
                           return_logprobs=True)
        want = top_p_sample(x, top_p=0.8, temperature=0.9, rule=rule, generator=torch.Generator().manual_seed(3),
                            backend="ref", return_logprobs=True)
        assert torch.equal(got[0], want[0])
        torch.testing.assert_close(got[1], want[1], atol=2e-5, rtol=0)


def heavy_path_rows(kind, batch, vocab, g):
    """Rows for each way the C++ kernel's top-p path (top-k off) finds its candidate tokens."""
    if kind == "peaked":  # the few tokens within 5 nats of the maximum hold more than p
        return torch.randn(batch, vocab, generator=g) * 4
    if kind == "heavy-tail":  # they do not, and most of the row is needed: one token at 10, the rest
        x = 5 + (torch.rand(batch, vocab, generator=g) * 8).round() / 16  # near 5 (tied in pairs)
        x[:, 7] = 10.0
        return x
    if kind == "three-level":  # they do not (for p > ~0.7), a fifth of the row does: one token at 10,
        x = torch.full((batch, vocab), -2.0)  # 200 near 4 (some tied), the rest at -2
        x[:, 100:300] = 4 + (torch.rand(batch, 200, generator=g) * 8).round() / 16
        x[:, 500] = 10.0
        return x
    if kind == "masked":  # -inf entries and a flat top (most of the row within 5 nats)
        x = (torch.randn(batch, vocab, generator=g) * 0.3).round(decimals=1)
        x[:, ::3] = float("-inf")
        return x
    return torch.full((batch, vocab), 2.0)  # "all-tied"


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
@pytest.mark.parametrize("kind", ["peaked", "heavy-tail", "three-level", "masked", "all-tied"])
def test_cpp_top_p_candidates_same_tokens_as_reference(kind, isa, monkeypatch):
    """Top-p without top-k searches only the most probable tokens when they are few; on rows where
    that set is a few tokens, a fifth of the row, most of it or all of it, every ISA's path draws the
    reference's tokens; an ISA this CPU lacks is refused by name."""
    monkeypatch.setenv("P2S_CPU_ISA", isa)
    g = torch.Generator().manual_seed(31)
    batch, vocab = 48, 1000
    x = heavy_path_rows(kind, batch, vocab, g)
    p = torch.rand(batch, generator=g) * 0.98 + 0.01
    k = torch.zeros(batch, dtype=torch.int64)
    t = torch.where(torch.arange(batch) % 2 == 0, torch.ones(batch), torch.rand(batch, generator=g) + 0.5)
    if not supported_cpu_isas()[isa]:
        with pytest.raises(RuntimeError, match="does not support"):
            torch.ops.pix2seq_fast.top_p_sample(x, p, k, t, torch.rand(batch, generator=g), "pix2seq", True)
        return
    compared = 0
    for rule in RULES:
        for _ in range(3):
            u = torch.rand(batch, generator=g)
            ids, lp = torch.ops.pix2seq_fast.top_p_sample(x, p, k, t, u, rule, True)
            ref, ref_lp = top_p_sample_reference(x, p, k, t, u, rule)
            ok = unambiguous(x, p, k, t, u, rule)
            assert torch.equal(ids[ok], ref[ok])
            torch.testing.assert_close(lp[ok], ref_lp[ok], atol=2e-5, rtol=0)
            compared += int(ok.sum())
    assert compared >= 0.5 * batch * 6


def test_direct_cpu_entry_settings_and_errors():
    from pix2seq_fast import _C
    x = torch.randn(3, 50, generator=torch.Generator().manual_seed(21))
    rows = (torch.tensor([0.0, 0.5, 0.9]), torch.tensor([0, 3, 0]), torch.tensor([1.0, 0.7, 0.0]))
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    ids, lp = _C.top_p_sample_cpu(x, *rows, gen(), "standard", False)
    assert lp is None and ids.dtype == torch.int64
    assert torch.equal(ids, top_p_sample(x, *rows, rule="standard", generator=gen(), backend="ref"))
    assert ids[0] == x[0].argmax() and ids[2] == x[2].argmax()  # top_p 0 and temperature 0: greedy
    for bad, message in [(dict(top_p=torch.tensor([0.5, 1.5, 0.5])), "top_p"),
                         (dict(top_p=torch.full((2,), 0.5)), "top_p"),
                         (dict(top_p=torch.full((3,), 0.5).double()), "top_p"),
                         (dict(top_k=-1), "top_k"), (dict(top_k=torch.zeros(3, dtype=torch.int32)), "top_k"),
                         (dict(temperature=float("inf")), "temperature"), (dict(rule="nucleus"), "rule"),
                         (dict(logits=torch.randn(50)), "2-D"), (dict(logits=torch.randn(3, 50).double()), "float32"),
                         (dict(logits=torch.randn(3, 0)), "at least one token")]:
        args = dict(logits=x, top_p=0.5, top_k=0, temperature=1.0, generator=None, rule="pix2seq",
                    return_logprobs=False)
        args.update(bad)
        with pytest.raises(ValueError, match=message):
            _C.top_p_sample_cpu(**args)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_top_k_beyond_int64_disables_top_k(backend):
    x = torch.randn(3, 40, generator=torch.Generator().manual_seed(23))
    gen = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    assert torch.equal(top_p_sample(x, 0.9, 2 ** 70, generator=gen(), backend=backend),
                       top_p_sample(x, 0.9, 0, generator=gen(), backend=backend))


def test_direct_cpu_entry_takes_strided_logits():
    from pix2seq_fast import _C
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(22)).t()
    gen = lambda: torch.Generator().manual_seed(6)  # noqa: E731
    ids, _ = _C.top_p_sample_cpu(x, 0.7, 0, 1.0, gen(), "pix2seq", False)
    assert torch.equal(ids, _C.top_p_sample_cpu(x.contiguous(), 0.7, 0, 1.0, gen(), "pix2seq", False)[0])


def test_reference_marks_invalid_rows():
    x = torch.randn(3, 6)
    x[1, 0] = float("nan")
    x[2] = float("-inf")
    ones = torch.ones(3)
    ids, lp = top_p_sample_reference(x, ones * 0.5, torch.zeros(3, dtype=torch.int64), ones, ones * 0.5)
    assert ids.tolist()[1:] == [-1, -1] and ids[0] >= 0
    assert torch.isnan(lp[1:]).all()


def test_triton_marks_invalid_rows():
    from pix2seq_fast.ops.triton_sampling import top_p_sample_triton
    x = torch.randn(3, 6)
    x[1, 0] = float("inf")
    x[2] = float("-inf")
    ones = torch.ones(3)
    ids, lp = top_p_sample_triton(x, ones * 0.5, torch.zeros(3, dtype=torch.int64), ones, ones * 0.5,
                                  "pix2seq", True)
    assert ids.tolist()[1:] == [-1, -1] and ids[0] >= 0
    assert torch.isnan(lp[1:]).all()


# ---------------------------------------------------------------------------------------------
# CUDA (skipped without a GPU)
# ---------------------------------------------------------------------------------------------
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_cuda_same_token_as_reference(backend, rule, dtype):
    for vocab in (111, 4097, 35000):
        x, p, k, t, u = random_case(64, vocab, seed=vocab)
        x = x.to(dtype)
        ref, ref_lp = top_p_sample_reference(x, p, k, t, u, rule)
        dev = [v.cuda() for v in (x, p, k, t, u)]
        ids, lp = kernel(backend)(*dev, rule, True)
        ok = unambiguous(x.float(), p, k, t, u, rule)
        assert torch.equal(ids.cpu()[ok], ref[ok])
        torch.testing.assert_close(lp.cpu(), ref_lp, atol=2e-5, rtol=0)
        allowed = loose_kept(x.float(), p, k, t, rule)
        greedy = (p <= 0) | (t <= 0)
        assert bool(allowed[~greedy].gather(1, ids.cpu()[~greedy].view(-1, 1)).all())


@requires_cuda
def test_cuda_invalid_rows_and_frequencies():
    x = torch.randn(3, 6, device="cuda")
    x[1, 0] = float("nan")
    x[2] = float("-inf")
    ones = torch.ones(3, device="cuda")
    ids, _ = torch.ops.pix2seq_fast.top_p_sample(x, ones * 0.5, torch.zeros(3, dtype=torch.int64, device="cuda"),
                                                 ones, ones * 0.5, "pix2seq", False)
    assert ids.tolist()[1:] == [-1, -1]
    row = torch.randn(111, generator=torch.Generator().manual_seed(7)) * 1.5
    draws = 40000
    ids = top_p_sample(row.cuda().expand(draws, 111).contiguous(), top_p=0.8, backend="cuda",
                       generator=torch.Generator(device="cuda").manual_seed(3)).cpu()
    one = torch.ones(1)
    kept = kept_mask_reference(row.view(1, -1), one * 0.8, torch.zeros(1, dtype=torch.int64), "pix2seq")[0]
    probs = torch.softmax(row.double(), -1) * kept
    probs /= probs.sum()
    counts = torch.bincount(ids, minlength=111).double()
    assert counts[~kept].sum() == 0
    expected = probs[kept] * draws
    stat = float(((counts[kept] - expected) ** 2 / expected).sum())
    assert stat < chi_square_threshold(int(kept.sum()) - 1)
