#!/usr/bin/env bash
# One-command GPU check, for the first machine with an NVIDIA GPU (README "What is verified how"):
#   bench/gpu_check.sh            (PY=/path/to/python to choose the interpreter)
# 1. builds the extension with CUDA (WITH_CUDA=ON, for the GPU's own architecture),
# 2. runs every CUDA and Triton test on the GPU (tests/*: the test_*cuda* tests, Triton compiled for
#    the GPU: TRITON_INTERPRET=0) and fails if any of them is skipped,
# 3. runs the benchmarks' GPU rows (bench/gpu_check.py) and prints one table: op, backend, max error
#    against the reference, time, speed-up over the PyTorch baseline.
# Any build error, test failure, skipped CUDA test, error over tolerance or step over its time limit
# stops the script with "GPU CHECK FAILED" and a non-zero status. Budget: < 8 minutes on one GPU
# (limits: build 150 s, tests 150 s, table 150 s).
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
fail() { echo; echo "GPU CHECK FAILED: $*" >&2; exit 1; }
step() { echo; echo "=== $* ($(( $(date +%s) - T0 )) s)"; }

if [ -z "${PY:-}" ]; then
  for c in .venv/bin/python /work/venv/bin/python python3 python; do
    if [ -x "$c" ] || command -v "$c" >/dev/null 2>&1; then PY=$c; break; fi
  done
fi
[ -n "${PY:-}" ] || fail "no python found (set PY)"
export PY
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
[ -d "$CUDA_HOME/bin" ] && export PATH="$CUDA_HOME/bin:$PATH"
export TRITON_INTERPRET=0   # Triton kernels compiled for the GPU, not interpreted on the CPU
unset CUDA_VISIBLE_DEVICES_FORCE_CPU 2>/dev/null || true

step "0/3 GPU and torch"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv,noheader \
  || fail "nvidia-smi not found"
"$PY" - <<'PY' || fail "torch sees no CUDA GPU, or is a CPU-only build"
import torch, sys
print("torch", torch.__version__, "CUDA", torch.version.cuda, "available", torch.cuda.is_available())
sys.exit(0 if torch.version.cuda and torch.cuda.is_available() else 1)
PY
ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
[ -n "$ARCH" ] || fail "cannot read the GPU's compute capability"

step "1/3 build with CUDA for sm_$ARCH"
WITH_CUDA=ON P2S_CUDA_ARCHS="$ARCH" timeout 150 .ci/dev-install || fail "CUDA build failed (or took > 150 s)"
"$PY" - <<'PY' || fail "the installed extension was not built with CUDA"
from pix2seq_fast._ext import build_info
info = build_info()
print(info)
assert info["cuda_compiled"], info
PY

step "2/3 CUDA and Triton tests on the GPU"
LOG=$(mktemp)
set +e
timeout 150 "$PY" -m pytest tests/test_decode_attention.py tests/test_top_p_sample.py tests/test_rasterize.py \
  -k cuda -q -rs -p no:cacheprovider 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
set -e
[ "$status" -eq 0 ] || fail "CUDA/Triton tests failed (pytest exit $status, 124 = timeout)"
grep -qi "skipped" "$LOG" && fail "some CUDA/Triton tests were skipped on the GPU machine (see -rs above)"
passed=$(grep -oE '[0-9]+ passed' "$LOG" | tail -1 | cut -d' ' -f1)
[ "${passed:-0}" -ge 50 ] || fail "only ${passed:-0} CUDA/Triton tests ran (expected >= 50)"

step "3/3 GPU rows of the benchmarks"
timeout 150 "$PY" bench/gpu_check.py || fail "benchmark table: an error over tolerance, a crash or > 150 s"

echo
echo "GPU check passed in $(( $(date +%s) - T0 )) s"
