// Which vector ISA the CPU kernels run: the best this CPU supports, or the one named by the
// environment variable P2S_CPU_ISA = baseline | avx2 | avx512 (tests use it to run every path of a
// kernel on one machine). One home for the choice, shared by every kernel that has per-ISA paths.
#pragma once

namespace p2s {

enum class CpuIsa { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };  // avx2 = x86-64-v3, avx512 = x86-64-v4

bool cpu_supports(CpuIsa isa);

// Whether this CPU has AVX512-BF16 (vdpbf16ps: bf16 pair products accumulated in fp32) on top of
// x86-64-v4.
bool cpu_supports_avx512_bf16();

// The ISA to run now (reads P2S_CPU_ISA on each call, so tests may change it); an unknown name, or
// one this CPU lacks, fails a TORCH_CHECK naming `op` and P2S_CPU_ISA.
CpuIsa selected_cpu_isa(const char* op);

}  // namespace p2s
