// bfloat16 <-> float on raw 16-bit patterns, for CPU kernels that hold bf16 data as uint16_t.
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>
#include <cstring>

namespace p2s {

inline float bf16_to_float(uint16_t b) {  // exact: bf16 is the upper half of an fp32
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline uint16_t float_to_bf16(float f) { return c10::BFloat16(f).x; }  // round to nearest even

}  // namespace p2s
