"""Top-p sampling on the CPU: ours (the sort-free C++ kernel through ``top_p_sample``, rule
"standard", p 0.8) against

- ``sort``: the sort-based recipe of Hugging Face's ``TopPLogitsWarper`` followed by sampling — sort,
  softmax, cumsum, mask, scatter back, softmax, ``torch.multinomial``;
- ``softmax``: one ``torch.softmax`` over the same logits, the floor any sampler pays.

The last test prints the ratio table measured in this run (``pytest bench/bench_top_p_sample.py -s``;
``P2S_BENCH_THREADS=1`` for a single thread).
"""
import time

import pytest
import torch

from pix2seq_fast.ops import top_p_sample
from pix2seq_fast.ops.sampling import kept_mask_reference

TOP_P = 0.8
BATCHES = (1, 8, 80, 256)
VOCABS = (3000, 35000)
IMPLS = ["ours", "sort", "softmax"]
pytestmark = pytest.mark.usefixtures("bench_threads")
RESULTS: dict = {}


def sort_recipe(logits, top_p=TOP_P):
    """Hugging Face's TopPLogitsWarper, then multinomial sampling."""
    sorted_logits, sorted_index = torch.sort(logits, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - top_p)
    remove_sorted[..., -1:] = False
    remove = remove_sorted.scatter(1, sorted_index, remove_sorted)
    filtered = logits.masked_fill(remove, float("-inf"))
    return torch.multinomial(filtered.softmax(dim=-1), 1).squeeze(1)


def make_fn(impl, logits):
    if impl == "ours":
        return lambda: top_p_sample(logits, top_p=TOP_P, rule="standard", backend="cpp")
    if impl == "sort":
        return lambda: sort_recipe(logits)
    return lambda: torch.softmax(logits, dim=-1)


def rounds_for(fn, budget_s=0.5):
    fn()
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    return max(3, min(200, int(budget_s / max(once, 1e-6))))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("vocab", VOCABS)
@pytest.mark.parametrize("batch", BATCHES)
def test_top_p_sample_cpu(benchmark, batch, vocab, impl):
    logits = torch.randn(batch, vocab, generator=torch.Generator().manual_seed(0)) * 3
    fn = make_fn(impl, logits)
    if impl != "softmax":
        ids = fn()
        one = torch.ones(batch)
        kept = kept_mask_reference(logits, one * (TOP_P + 1e-5), torch.zeros(batch, dtype=torch.int64),
                                   "standard")
        assert bool(kept.gather(1, ids.view(-1, 1)).all())
    benchmark.group = f"B{batch} V{vocab}"
    benchmark.pedantic(fn, rounds=rounds_for(fn), iterations=1, warmup_rounds=1)
    RESULTS[(batch, vocab, impl)] = benchmark.stats.stats.min  # best of rounds: robust to a shared machine


def test_zz_print_ratio_table(capsys):
    """Speed-up of ours over the sort recipe, and ours relative to one softmax, from this run."""
    assert RESULTS, "run the whole file: the table uses the benchmarks above"
    lines = [f"top-p sampling (p {TOP_P}), CPU, {torch.get_num_threads()} threads; best-of-rounds ms",
             f"{'shape':14s} {'ours':>9s} {'sort':>9s} {'softmax':>9s} {'sort/ours':>10s} {'ours/softmax':>13s}"]
    for batch in BATCHES:
        for vocab in VOCABS:
            ms = {impl: RESULTS.get((batch, vocab, impl), float("nan")) * 1e3 for impl in IMPLS}
            lines.append(f"{f'B{batch} V{vocab}':14s} " + " ".join(f"{ms[i]:9.3f}" for i in IMPLS) +
                         f" {ms['sort'] / ms['ours']:9.1f}x {ms['ours'] / ms['softmax']:12.2f}x")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
