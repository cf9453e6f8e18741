// Weight-only low-precision linear layer on the CPU, for decoding at small batch (GEMV-like):
//   out[m, n] = (sum_k x[m, k] * w[n, k]) * scale[n] + bias[n]
// x fp32 [M, K]; w bf16 or int8 [N, K] (row-major, one output feature per row); scale fp32 [N]
// (int8: the per-output-channel dequantisation factor; bf16: absent); bias fp32 [N] or absent.
// Products are accumulated in fp32. A decode step at batch 1 reads every weight once, so its time
// is the weight bytes over the memory bandwidth: bf16 halves them and int8 quarters them against
// fp32. Work: with AVX-512, one weight row at a time x up to 4 input rows, 16-wide FMA over K (rows in
// order: one sequential stream); with AVX2, blocks of 4 weight rows x up to 4 input rows, 8-wide; both
// with software prefetch ahead; a scalar fallback for other CPUs; OpenMP over blocks of output features.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>

#include "bf16_bits.h"
#include "cpu_isa.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define P2S_LP_X86 1
#endif

namespace {

using p2s::bf16_to_float;

constexpr int kRowBlock = 4;  // weight rows per inner block
constexpr int kBatchBlock = 4;

inline float weight_value(uint16_t w) { return bf16_to_float(w); }
inline float weight_value(int8_t w) { return static_cast<float>(w); }

// Scalar path (and K tails): rows [n0, n1) of the output for input rows [m0, m0 + mb).
template <typename W>
void block_scalar(const float* x, const W* w, int64_t K, int64_t n0, int64_t n1, int64_t m0, int64_t mb,
                  int64_t k0, float* acc /* [mb][n1 - n0], added to */) {
  for (int64_t n = n0; n < n1; ++n) {
    const W* wr = w + n * K;
    for (int64_t m = 0; m < mb; ++m) {
      const float* xr = x + (m0 + m) * K;
      float s = 0.0f;
      for (int64_t k = k0; k < K; ++k) s += xr[k] * weight_value(wr[k]);
      acc[m * (n1 - n0) + (n - n0)] += s;
    }
  }
}

#ifdef P2S_LP_X86
__attribute__((target("avx2,fma"))) inline __m256 load8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
__attribute__((target("avx2,fma"))) inline __m256 load8(const int8_t* p) {
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
}
__attribute__((target("avx2,fma"))) inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

// RB weight rows x MB input rows, K in steps of 8; returns the first k not done.
template <typename W, int RB, int MB>
__attribute__((target("avx2,fma"))) inline int64_t block_avx2(const float* x, const W* w, int64_t K, int64_t n0,
                                                              int64_t m0, float* out, int64_t ld) {
  __m256 acc[RB][MB];
  for (int r = 0; r < RB; ++r)
    for (int m = 0; m < MB; ++m) acc[r][m] = _mm256_setzero_ps();
  // Weight rows stream from memory once per step: prefetch the rows eight blocks ahead, one cache line
  // at a time. Each block's 4 rows span only a few KB, so the hardware prefetchers, which stop at page
  // boundaries, would otherwise restart on every block (measured: 7 GB/s without, on a 21 GB/s core).
  constexpr int64_t kLine = 64 / sizeof(W);  // weights per cache line
  // (integer arithmetic: the last blocks' prefetches point past the weight, which a prefetch may do)
  const uintptr_t ahead = reinterpret_cast<uintptr_t>(w + n0 * K) + 8 * kRowBlock * K * sizeof(W);
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    if (k % kLine == 0) {
#pragma GCC unroll 4
      for (int r = 0; r < RB; ++r)
        _mm_prefetch(reinterpret_cast<const char*>(ahead + (r * K + k) * sizeof(W)), _MM_HINT_T0);
    }
    __m256 xv[MB];
#pragma GCC unroll 4
    for (int m = 0; m < MB; ++m) xv[m] = _mm256_loadu_ps(x + (m0 + m) * K + k);
#pragma GCC unroll 4
    for (int r = 0; r < RB; ++r) {
      const __m256 wv = load8(w + (n0 + r) * K + k);
#pragma GCC unroll 4
      for (int m = 0; m < MB; ++m) acc[r][m] = _mm256_fmadd_ps(xv[m], wv, acc[r][m]);
    }
  }
  for (int r = 0; r < RB; ++r)
    for (int m = 0; m < MB; ++m) out[m * ld + r] = hsum(acc[r][m]);
  return k;
}

template <typename W, int MB>
__attribute__((target("avx2,fma"))) void rows_avx2(const float* x, const W* w, int64_t K, int64_t n0, int64_t n1,
                                                   int64_t m0, float* acc) {
  const int64_t ld = n1 - n0;
  int64_t n = n0;
  int64_t k_done = 0;
  for (; n + kRowBlock <= n1; n += kRowBlock) k_done = block_avx2<W, kRowBlock, MB>(x, w, K, n, m0, acc + (n - n0), ld);
  for (; n < n1; ++n) k_done = block_avx2<W, 1, MB>(x, w, K, n, m0, acc + (n - n0), ld);
  if (k_done < K) block_scalar(x, w, K, n0, n1, m0, MB, k_done, acc);
}

// AVX-512: 16 weights per instruction.
__attribute__((target("arch=x86-64-v4"))) inline __m512 load16(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
__attribute__((target("arch=x86-64-v4"))) inline __m512 load16(const int8_t* p) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
}

// One weight row x MB input rows: row after row is one sequential stream, which the hardware
// prefetchers follow (4-row blocks read 4 interleaved streams and reached half the bandwidth). Two
// accumulators per input row hide the FMA latency.
template <typename W, int MB>
__attribute__((target("arch=x86-64-v4"))) inline int64_t row_avx512(const float* x, const W* wr, int64_t K,
                                                                    int64_t m0, float* out, int64_t ld) {
  __m512 even[MB], odd[MB];
  for (int m = 0; m < MB; ++m) even[m] = odd[m] = _mm512_setzero_ps();
  constexpr int64_t kLine = 64 / sizeof(W);
  const uintptr_t ahead = reinterpret_cast<uintptr_t>(wr) + 8 * K * sizeof(W);  // eight rows on
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    if (k % kLine == 0) _mm_prefetch(reinterpret_cast<const char*>(ahead + k * sizeof(W)), _MM_HINT_T0);
    if ((k + 16) % kLine == 0)
      _mm_prefetch(reinterpret_cast<const char*>(ahead + (k + 16) * sizeof(W)), _MM_HINT_T0);
    const __m512 w0 = load16(wr + k), w1 = load16(wr + k + 16);
#pragma GCC unroll 4
    for (int m = 0; m < MB; ++m) {
      even[m] = _mm512_fmadd_ps(_mm512_loadu_ps(x + (m0 + m) * K + k), w0, even[m]);
      odd[m] = _mm512_fmadd_ps(_mm512_loadu_ps(x + (m0 + m) * K + k + 16), w1, odd[m]);
    }
  }
  for (; k + 16 <= K; k += 16) {
    const __m512 w0 = load16(wr + k);
#pragma GCC unroll 4
    for (int m = 0; m < MB; ++m) even[m] = _mm512_fmadd_ps(_mm512_loadu_ps(x + (m0 + m) * K + k), w0, even[m]);
  }
  for (int m = 0; m < MB; ++m) out[m * ld] = _mm512_reduce_add_ps(_mm512_add_ps(even[m], odd[m]));
  return k;
}

template <typename W, int MB>
__attribute__((target("arch=x86-64-v4"))) void rows_avx512(const float* x, const W* w, int64_t K, int64_t n0,
                                                           int64_t n1, int64_t m0, float* acc) {
  const int64_t ld = n1 - n0;
  int64_t k_done = 0;
  for (int64_t n = n0; n < n1; ++n) k_done = row_avx512<W, MB>(x, w + n * K, K, m0, acc + (n - n0), ld);
  if (k_done < K) block_scalar(x, w, K, n0, n1, m0, MB, k_done, acc);
}

#endif

template <typename W>
void rows(p2s::CpuIsa isa, const float* x, const W* w, int64_t K, int64_t n0, int64_t n1, int64_t m0, int64_t mb,
          float* acc) {
#ifdef P2S_LP_X86
  if (isa == p2s::CpuIsa::kAvx512) {
    switch (mb) {
      case 1: return rows_avx512<W, 1>(x, w, K, n0, n1, m0, acc);
      case 2: return rows_avx512<W, 2>(x, w, K, n0, n1, m0, acc);
      case 3: return rows_avx512<W, 3>(x, w, K, n0, n1, m0, acc);
      default: return rows_avx512<W, 4>(x, w, K, n0, n1, m0, acc);
    }
  }
  if (isa == p2s::CpuIsa::kAvx2) {
    switch (mb) {
      case 1: return rows_avx2<W, 1>(x, w, K, n0, n1, m0, acc);
      case 2: return rows_avx2<W, 2>(x, w, K, n0, n1, m0, acc);
      case 3: return rows_avx2<W, 3>(x, w, K, n0, n1, m0, acc);
      default: return rows_avx2<W, 4>(x, w, K, n0, n1, m0, acc);
    }
  }
#endif
  block_scalar(x, w, K, n0, n1, m0, mb, 0, acc);
}

template <typename W>
void run(const float* x, const W* w, const float* scale, const float* bias, int64_t M, int64_t K, int64_t N,
         float* out) {
  const p2s::CpuIsa isa = p2s::selected_cpu_isa("lowp_linear");  // before the threads: it may throw
  constexpr int64_t kTile = 64;  // output features per task
  const int64_t tiles = (N + kTile - 1) / kTile;
  // Small layers stay on the calling thread: a task costs more than a 512 x 512 GEMV.
  const int64_t grain = N * K * M < (1 << 20) ? tiles : 1;
  at::parallel_for(0, tiles, grain, [&](int64_t t0, int64_t t1) {
    float acc[kBatchBlock * kTile];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n0 = t * kTile, n1 = std::min(N, n0 + kTile), nn = n1 - n0;
      for (int64_t m0 = 0; m0 < M; m0 += kBatchBlock) {
        const int64_t mb = std::min<int64_t>(kBatchBlock, M - m0);
        std::fill(acc, acc + mb * nn, 0.0f);
        rows(isa, x, w, K, n0, n1, m0, mb, acc);
        for (int64_t m = 0; m < mb; ++m) {
          float* dst = out + (m0 + m) * N + n0;
          const float* src = acc + m * nn;
          for (int64_t j = 0; j < nn; ++j) {
            float v = src[j];
            if (scale) v *= scale[n0 + j];
            if (bias) v += bias[n0 + j];
            dst[j] = v;
          }
        }
      }
    }
  });
}

at::Tensor lowp_linear_cpu(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& scale,
                           const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.device().is_cpu() && weight.device().is_cpu(), "lowp_linear: x and weight must be CPU tensors");
  TORCH_CHECK(x.scalar_type() == at::kFloat, "lowp_linear: x must be float32, got ", x.scalar_type());
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "lowp_linear: x must be a contiguous [M, K] tensor, got ",
              x.sizes());
  TORCH_CHECK(weight.dim() == 2 && weight.is_contiguous(), "lowp_linear: weight must be a contiguous [N, K] tensor, got ",
              weight.sizes());
  const int64_t M = x.size(0), K = x.size(1), N = weight.size(0);
  TORCH_CHECK(weight.size(1) == K, "lowp_linear: weight must have K = ", K, " columns, got ", weight.size(1));
  const bool is_int8 = weight.scalar_type() == at::kChar;
  TORCH_CHECK(is_int8 || weight.scalar_type() == at::kBFloat16, "lowp_linear: weight must be int8 or bfloat16, got ",
              weight.scalar_type());
  const float* scale_ptr = nullptr;
  if (scale.has_value()) {
    TORCH_CHECK(scale->scalar_type() == at::kFloat && scale->dim() == 1 && scale->size(0) == N &&
                    scale->is_contiguous() && scale->device().is_cpu(),
                "lowp_linear: scale must be a contiguous float32 CPU tensor [N] = [", N, "]");
    scale_ptr = scale->data_ptr<float>();
  }
  TORCH_CHECK(!is_int8 || scale_ptr, "lowp_linear: an int8 weight needs its per-row scale");
  const float* bias_ptr = nullptr;
  if (bias.has_value()) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->dim() == 1 && bias->size(0) == N &&
                    bias->is_contiguous() && bias->device().is_cpu(),
                "lowp_linear: bias must be a contiguous float32 CPU tensor [N] = [", N, "]");
    bias_ptr = bias->data_ptr<float>();
  }
  at::Tensor out = at::empty({M, N}, x.options());
  if (M == 0 || N == 0) return out;
  if (is_int8) {
    run(x.data_ptr<float>(), weight.data_ptr<int8_t>(), scale_ptr, bias_ptr, M, K, N, out.data_ptr<float>());
  } else {
    run(x.data_ptr<float>(), reinterpret_cast<const uint16_t*>(weight.data_ptr<c10::BFloat16>()), scale_ptr,
        bias_ptr, M, K, N, out.data_ptr<float>());
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(pix2seq_fast, m) {
  m.def("lowp_linear(Tensor x, Tensor weight, Tensor? scale, Tensor? bias) -> Tensor");
}

TORCH_LIBRARY_IMPL(pix2seq_fast, CPU, m) { m.impl("lowp_linear", &lowp_linear_cpu); }
