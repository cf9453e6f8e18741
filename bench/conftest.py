"""Benchmark-wide setup. TRITON_INTERPRET must be set before any module decorates a @triton.jit kernel,
so that the Triton kernels run on CPU tensors (there is no GPU on the machines this is built on)."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("CUDA_HOME", "/usr/local/cuda")

import pytest  # noqa: E402
import torch  # noqa: E402

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                   reason="CUDA kernels need a GPU; this machine has none")

# P2S_BENCH_THREADS: the torch thread count of the op benches that take ``bench_threads`` (unset or 0:
# each such bench runs twice, at one thread and at all cores, in the same pytest run)
BENCH_THREADS = int(os.environ.get("P2S_BENCH_THREADS", "0"))
ALL_CORES = torch.get_num_threads()


def bench_thread_counts() -> list:
    return [BENCH_THREADS] if BENCH_THREADS else sorted({1, ALL_CORES})


@pytest.fixture(params=bench_thread_counts(), ids=lambda n: f"{n}thr")
def bench_threads(request):
    """Run the test at each of :func:`bench_thread_counts` torch threads, restoring the count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)
