#include "cpu_isa.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>

namespace p2s {

bool cpu_supports(CpuIsa isa) {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (isa == CpuIsa::kAvx512) return __builtin_cpu_supports("x86-64-v4");
  if (isa == CpuIsa::kAvx2) return __builtin_cpu_supports("x86-64-v3");
#endif
  return isa == CpuIsa::kBaseline;
}

bool cpu_supports_avx512_bf16() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("x86-64-v4") && __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

CpuIsa selected_cpu_isa(const char* op) {
  static const CpuIsa best = cpu_supports(CpuIsa::kAvx512) ? CpuIsa::kAvx512
                             : cpu_supports(CpuIsa::kAvx2) ? CpuIsa::kAvx2
                                                           : CpuIsa::kBaseline;
  const char* forced = std::getenv("P2S_CPU_ISA");
  if (forced == nullptr || forced[0] == '\0') return best;
  CpuIsa isa;
  if (std::strcmp(forced, "avx512") == 0) isa = CpuIsa::kAvx512;
  else if (std::strcmp(forced, "avx2") == 0) isa = CpuIsa::kAvx2;
  else if (std::strcmp(forced, "baseline") == 0) isa = CpuIsa::kBaseline;
  else TORCH_CHECK(false, op, ": P2S_CPU_ISA must be baseline, avx2 or avx512, got '", forced, "'");
  TORCH_CHECK(cpu_supports(isa), op, ": P2S_CPU_ISA=", forced, " but this CPU does not support it");
  return isa;
}

}  // namespace p2s
