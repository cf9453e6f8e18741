"""Test-wide setup. TRITON_INTERPRET must be set before any module decorates a @triton.jit kernel,
so that the Triton kernels run on CPU tensors (there is no GPU on the machines this is built on)."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("CUDA_HOME", "/usr/local/cuda")

import pytest  # noqa: E402
import torch  # noqa: E402

@pytest.fixture(scope="module")
def one_thread():
    """Small ops on a shared 2-core machine run far faster on one thread (no OpenMP barrier waits);
    modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                   reason="CUDA kernels need a GPU; this machine has none")


def _find_tf_parity():
    """The authors' golden files (shared/tf_parity): $PIX2SEQ_TF_PARITY, else the shared/ folder beside
    the repository (as on CI), else /work/shared."""
    from pathlib import Path  # noqa: PLC0415

    candidates = [os.environ.get("PIX2SEQ_TF_PARITY"),
                  Path(__file__).resolve().parents[2] / "shared" / "tf_parity",
                  "/work/shared/tf_parity"]
    for c in candidates:
        if c and (Path(c) / "tiny_a" / "outputs.npz").is_file():
            return Path(c)
    if os.environ.get("CI"):
        raise RuntimeError(f"tf_parity golden data not found in {candidates}; set PIX2SEQ_TF_PARITY")
    return None


#: ``shared/tf_parity``; on CI its absence is an error, elsewhere the parity tests skip and say why.
TF_PARITY = _find_tf_parity()
requires_tf_parity = pytest.mark.skipif(
    TF_PARITY is None, reason="the authors' golden files (shared/tf_parity) are not on this machine; "
                              "set PIX2SEQ_TF_PARITY to their folder")


def supported_cpu_isas() -> dict:
    """``{isa: bool}`` for the P2S_CPU_ISA values (the C++ kernels' vector paths) this CPU can run."""
    capability = torch.backends.cpu.get_cpu_capability()
    return {"baseline": True, "avx2": capability in ("AVX2", "AVX512"), "avx512": capability == "AVX512"}
