"""Benchmark-wide setup. TRITON_INTERPRET must be set before any module decorates a @triton.jit kernel,
so that the Triton kernels run on CPU tensors (there is no GPU on the machines this is built on)."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("CUDA_HOME", "/usr/local/cuda")

import pytest  # noqa: E402
import torch  # noqa: E402

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                   reason="CUDA kernels need a GPU; this machine has none")

# P2S_BENCH_THREADS: torch threads for the op benches that ask for ``bench_threads`` (0 or unset: torch's
# default, all cores)
BENCH_THREADS = int(os.environ.get("P2S_BENCH_THREADS", "0"))


@pytest.fixture(scope="module")
def bench_threads():
    """Run the module at ``P2S_BENCH_THREADS`` torch threads, restoring the count afterwards."""
    before = torch.get_num_threads()
    if BENCH_THREADS:
        torch.set_num_threads(BENCH_THREADS)
    yield BENCH_THREADS or before
    torch.set_num_threads(before)
