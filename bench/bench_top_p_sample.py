"""Top-p sampling on the CPU: ours (the sort-free C++ kernel through ``top_p_sample``, rule
"standard", p 0.8) against

- ``sort``: the sort-based recipe of Hugging Face's ``TopPLogitsWarper`` followed by sampling — sort,
  softmax, cumsum, mask, scatter back, softmax, ``torch.multinomial``;
- ``softmax``: one ``torch.softmax`` over the same logits, the floor any sampler pays.

Each shape runs at one thread and at all cores (``P2S_BENCH_THREADS=n``: only n). The last test prints
the ratio table measured in this run (``pytest bench/bench_top_p_sample.py -s``); the goal is ours
>= 30x the sort recipe at every shape.
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
GOAL = 30.0  # sort / ours
RESULTS: dict = {}  # (threads, batch, vocab, impl) -> seconds


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
def test_top_p_sample_cpu(benchmark, bench_threads, batch, vocab, impl):
    logits = torch.randn(batch, vocab, generator=torch.Generator().manual_seed(0)) * 3
    fn = make_fn(impl, logits)
    if impl != "softmax":
        ids = fn()
        one = torch.ones(batch)
        kept = kept_mask_reference(logits, one * (TOP_P + 1e-5), torch.zeros(batch, dtype=torch.int64),
                                   "standard")
        assert bool(kept.gather(1, ids.view(-1, 1)).all())
    benchmark.group = f"B{batch} V{vocab}, {bench_threads} threads"
    benchmark.pedantic(fn, rounds=rounds_for(fn), iterations=1, warmup_rounds=1)
    RESULTS[(bench_threads, batch, vocab, impl)] = benchmark.stats.stats.min  # best of rounds: robust to a shared machine


def test_zz_print_ratio_table(capsys):
    """Speed-up of ours over the sort recipe, and ours relative to one softmax, from this run."""
    assert RESULTS, "run the whole file: the table uses the benchmarks above"
    lines = []
    for threads in sorted({key[0] for key in RESULTS}):
        lines += [f"top-p sampling (p {TOP_P}), CPU, {threads} threads; best-of-rounds ms; goal sort/ours >= {GOAL}x",
                  f"{'shape':14s} {'ours':>9s} {'sort':>9s} {'softmax':>9s} {'sort/ours':>10s} {'ours/softmax':>13s}"
                  "  goal"]
        for batch in BATCHES:
            for vocab in VOCABS:
                ms = {impl: RESULTS.get((threads, batch, vocab, impl), float("nan")) * 1e3 for impl in IMPLS}
                ratio = ms["sort"] / ms["ours"]
                lines.append(f"{f'B{batch} V{vocab}':14s} " + " ".join(f"{ms[i]:9.3f}" for i in IMPLS) +
                             f" {ratio:9.1f}x {ms['ours'] / ms['softmax']:12.2f}x  "
                             f"{'met' if ratio >= GOAL else 'NOT met'}")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
