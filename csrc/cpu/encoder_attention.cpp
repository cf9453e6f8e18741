// Image-encoder self-attention on the CPU in bf16, straight from the fused QKV projection:
//   qkv bf16 [B, N, 3 * H * D] (the output of a ViT block's qkv Linear: q | k | v, heads inside each)
//   out bf16 [B, N, H * D],  out[b, n, h*D + d] = sum_j softmax_j(scale * q[b,n,h] . k[b,j,h]) v[b,j,h,d]
// i.e. timm's reshape/permute, scaled_dot_product_attention and transpose back, in one op.
// Scores, softmax and the output accumulate in fp32; the probabilities are rounded to bf16 before
// they multiply V (as bf16 flash-attention kernels do); the output is rounded to bf16 once.
//
// Why: at 1600 tokens PyTorch's CPU flash attention runs at ~145 GFLOP/s on an AVX512-BF16 CPU
// without AMX, a third of that CPU's bf16 GEMM rate, so it was half of a ViT-B encode. Here, per
// (image, head), K and V are first packed so that one 64-byte load holds a bf16 pair of 16 keys
// (K: [N/32 tiles][D/2][32 keys][2]) or of 16 channels (V: [N/2][D][2]); then, for each block of 8
// queries, vdpbf16ps builds the 8 x N scores 8 x 32 at a time (the query pair broadcast), the row
// softmax runs over the whole row in fp32 (AVX-512 exp), and vdpbf16ps again sums P V, 4 queries x
// D channels at a time. Threads split (image, head, query block) tasks; each thread's tasks share
// their image and head, so its packed K/V stay in its L2.
//
// Non-finite inputs: a query row that sees a NaN score or value, or an infinite maximum score, comes out
// NaN (as fp32 SDPA's does).
//
// Paths: AVX512-BF16 for D in {16, 32, 64, 128}; a scalar path (same math, same roundings, in
// order) for any other even D or a CPU without AVX512-BF16, or when P2S_CPU_ISA is below avx512.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "bf16_bits.h"
#include "cpu_isa.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define P2S_EA_X86 1
#endif

namespace {

using p2s::bf16_to_float;
using p2s::float_to_bf16;

constexpr int64_t kKeyTile = 32;    // keys per score tile: two 16-lane vectors
constexpr int kQueryBlock = 8;      // queries whose score rows are held at once

struct Shape {
  int64_t B, N, H, D;
  int64_t C() const { return H * D; }
  const uint16_t* q(const uint16_t* qkv, int64_t b, int64_t n, int64_t h) const {
    return qkv + (b * N + n) * 3 * C() + h * D;
  }
  const uint16_t* k(const uint16_t* qkv, int64_t b, int64_t n, int64_t h) const { return q(qkv, b, n, h) + C(); }
  const uint16_t* v(const uint16_t* qkv, int64_t b, int64_t n, int64_t h) const { return q(qkv, b, n, h) + 2 * C(); }
  uint16_t* out(uint16_t* o, int64_t b, int64_t n, int64_t h) const { return o + (b * N + n) * C() + h * D; }
};

// ---------------------------------------------------------------------------------------------
// scalar path: one query at a time
// ---------------------------------------------------------------------------------------------
void attend_scalar(const Shape& s, const uint16_t* qkv, float scale, uint16_t* out, int64_t b, int64_t h,
                   int64_t n, std::vector<float>& scores, std::vector<float>& acc) {
  const uint16_t* q = s.q(qkv, b, n, h);
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < s.N; ++j) {
    const uint16_t* k = s.k(qkv, b, j, h);
    float dot = 0.0f;
    for (int64_t d = 0; d < s.D; ++d) dot += bf16_to_float(q[d]) * bf16_to_float(k[d]);
    scores[j] = dot * scale;
    mx = std::max(mx, scores[j]);
  }
  float total = 0.0f;
  std::fill(acc.begin(), acc.end(), 0.0f);
  for (int64_t j = 0; j < s.N; ++j) {
    const float p = std::exp(scores[j] - mx);
    total += p;
    const float pb = bf16_to_float(float_to_bf16(p));
    const uint16_t* v = s.v(qkv, b, j, h);
    for (int64_t d = 0; d < s.D; ++d) acc[d] += pb * bf16_to_float(v[d]);
  }
  uint16_t* o = s.out(out, b, n, h);
  for (int64_t d = 0; d < s.D; ++d) o[d] = float_to_bf16(acc[d] / total);
}

void run_scalar(const Shape& s, const uint16_t* qkv, float scale, uint16_t* out) {
  at::parallel_for(0, s.B * s.H * s.N, 64, [&](int64_t t0, int64_t t1) {
    std::vector<float> scores(s.N), acc(s.D);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t bh = t / s.N, n = t % s.N;
      attend_scalar(s, qkv, scale, out, bh / s.H, bh % s.H, n, scores, acc);
    }
  });
}

#ifdef P2S_EA_X86
#define P2S_EA_TARGET __attribute__((target("arch=x86-64-v4,avx512bf16")))

P2S_EA_TARGET inline __m512bh as_bh(__m512i v) { return reinterpret_cast<__m512bh&>(v); }

P2S_EA_TARGET inline __m512i broadcast_pair(const uint16_t* p) {  // two bf16 -> every 32-bit lane
  int32_t pair;
  std::memcpy(&pair, p, sizeof pair);
  return _mm512_set1_epi32(pair);
}

// e^x for x <= 0 (scores minus their row maximum): x log2(e) = n + f with |f| <= 1/2, e^x = 2^n e^(f ln 2);
// e^r by its degree-6 Taylor polynomial (|r| <= 0.347: relative error < 4e-7, far below bf16's 4e-3).
P2S_EA_TARGET inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-1.0e4f), x);  // e^-1e4 == 0 in fp32; keeps n finite; NaN stays NaN
  const __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 r = _mm512_mul_ps(_mm512_sub_ps(t, n), _mm512_set1_ps(0.693147180559945309f));
  __m512 p = _mm512_set1_ps(1.0f / 720.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// Pack one (image, head)'s K as [Npad/32][D/2][32][2] and V as [Npad/2][D][2]; keys >= N are zero.
void pack_kv(const Shape& s, const uint16_t* qkv, int64_t b, int64_t h, int64_t npad, uint16_t* kp, uint16_t* vp) {
  const int64_t pairs = s.D / 2;
  std::memset(kp, 0, npad * s.D * sizeof(uint16_t));
  std::memset(vp, 0, npad * s.D * sizeof(uint16_t));
  for (int64_t j = 0; j < s.N; ++j) {
    const uint16_t* k = s.k(qkv, b, j, h);
    const uint16_t* v = s.v(qkv, b, j, h);
    uint16_t* kt = kp + (j / kKeyTile) * pairs * kKeyTile * 2 + (j % kKeyTile) * 2;
    for (int64_t p = 0; p < pairs; ++p) {
      kt[p * kKeyTile * 2] = k[2 * p];
      kt[p * kKeyTile * 2 + 1] = k[2 * p + 1];
    }
    uint16_t* vr = vp + (j / 2) * s.D * 2 + (j % 2);
    for (int64_t d = 0; d < s.D; ++d) vr[d * 2] = v[d];
  }
}

// Scores of 8 queries against every key (scaled, fp32, rows of length npad) and each row's maximum
// over the N real keys.
P2S_EA_TARGET void scores_block(const uint16_t* const* q, const uint16_t* kp, int64_t D, int64_t N, int64_t npad,
                                float scale, float* scores, float* row_max) {
  const int64_t pairs = D / 2;
  __m512 mx[kQueryBlock];
  for (int i = 0; i < kQueryBlock; ++i) mx[i] = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  const __m512 vscale = _mm512_set1_ps(scale);
  for (int64_t t = 0; t * kKeyTile < npad; ++t) {
    const uint16_t* kt = kp + t * pairs * kKeyTile * 2;
    __m512 acc[kQueryBlock][2];
    for (int i = 0; i < kQueryBlock; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (int64_t p = 0; p < pairs; ++p) {
      const __m512bh k0 = as_bh(_mm512_loadu_si512(kt + p * kKeyTile * 2));
      const __m512bh k1 = as_bh(_mm512_loadu_si512(kt + p * kKeyTile * 2 + 32));
#pragma GCC unroll 8
      for (int i = 0; i < kQueryBlock; ++i) {
        const __m512bh qb = as_bh(broadcast_pair(q[i] + 2 * p));
        acc[i][0] = _mm512_dpbf16_ps(acc[i][0], qb, k0);
        acc[i][1] = _mm512_dpbf16_ps(acc[i][1], qb, k1);
      }
    }
    const int64_t valid = std::min<int64_t>(kKeyTile, N - t * kKeyTile);
    const __mmask16 m0 = valid >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << valid) - 1);
    const __mmask16 m1 = valid >= 32 ? 0xFFFF : valid <= 16 ? 0 : static_cast<__mmask16>((1u << (valid - 16)) - 1);
    for (int i = 0; i < kQueryBlock; ++i) {
      const __m512 s0 = _mm512_mul_ps(acc[i][0], vscale), s1 = _mm512_mul_ps(acc[i][1], vscale);
      _mm512_storeu_ps(scores + i * npad + t * kKeyTile, s0);
      _mm512_storeu_ps(scores + i * npad + t * kKeyTile + 16, s1);
      mx[i] = _mm512_mask_max_ps(mx[i], m0, mx[i], s0);
      mx[i] = _mm512_mask_max_ps(mx[i], m1, mx[i], s1);
    }
  }
  for (int i = 0; i < kQueryBlock; ++i) row_max[i] = _mm512_reduce_max_ps(mx[i]);
}

// P = e^(score - max) rounded to bf16 over the row (zero for keys >= N); returns the fp32 sum.
P2S_EA_TARGET float softmax_row(const float* scores, float mx, int64_t N, int64_t npad, uint16_t* p) {
  const __m512 vmax = _mm512_set1_ps(mx);
  __m512 total = _mm512_setzero_ps();
  for (int64_t j = 0; j < npad; j += 16) {
    const int64_t valid = std::min<int64_t>(16, N - j);
    const __mmask16 m = valid >= 16 ? 0xFFFF : valid <= 0 ? 0 : static_cast<__mmask16>((1u << valid) - 1);
    const __m512 e = _mm512_maskz_mov_ps(m, exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(scores + j), vmax)));
    total = _mm512_add_ps(total, e);
    const __m256bh eb = _mm512_cvtneps_pbh(e);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + j), reinterpret_cast<const __m256i&>(eb));
  }
  return _mm512_reduce_add_ps(total);
}

// out[i][0..D) = (sum_j P[i][j] V[j]) / total[i] for QG queries, D = 16 DV.
template <int DV, int QG>
P2S_EA_TARGET inline void pv_group(const uint16_t* const* p, const uint16_t* vp, int64_t npad, const float* inv_total,
                                   uint16_t* const* out) {
  constexpr int64_t D = 16 * DV;
  __m512 acc[QG][DV];
  for (int i = 0; i < QG; ++i)
    for (int dv = 0; dv < DV; ++dv) acc[i][dv] = _mm512_setzero_ps();
  for (int64_t jp = 0; jp < npad / 2; ++jp) {
    const uint16_t* vr = vp + jp * D * 2;
    __m512bh v[DV];
#pragma GCC unroll 8
    for (int dv = 0; dv < DV; ++dv) v[dv] = as_bh(_mm512_loadu_si512(vr + dv * 32));
#pragma GCC unroll 8
    for (int i = 0; i < QG; ++i) {
      const __m512bh pb = as_bh(broadcast_pair(p[i] + 2 * jp));
#pragma GCC unroll 8
      for (int dv = 0; dv < DV; ++dv) acc[i][dv] = _mm512_dpbf16_ps(acc[i][dv], pb, v[dv]);
    }
  }
  for (int i = 0; i < QG; ++i) {
    const __m512 inv = _mm512_set1_ps(inv_total[i]);
    for (int dv = 0; dv < DV; ++dv) {
      const __m256bh o = _mm512_cvtneps_pbh(_mm512_mul_ps(acc[i][dv], inv));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[i] + dv * 16), reinterpret_cast<const __m256i&>(o));
    }
  }
}

template <int DV>
P2S_EA_TARGET void run_avx512_bf16(const Shape& s, const uint16_t* qkv, float scale, uint16_t* out) {
  constexpr int QG = DV >= 8 ? 2 : DV >= 4 ? 4 : 8;  // QG x DV accumulators + DV loads fit 32 registers
  const int64_t npad = (s.N + kKeyTile - 1) / kKeyTile * kKeyTile;
  const int64_t heads = s.B * s.H;
  // left uninitialised here: pack_kv zeroes each head's part in the threads
  std::unique_ptr<uint16_t[]> packed(new uint16_t[static_cast<size_t>(heads) * 2 * npad * s.D]);
  at::parallel_for(0, heads, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t bh = t0; bh < t1; ++bh) {
      uint16_t* kp = packed.get() + bh * 2 * npad * s.D;
      pack_kv(s, qkv, bh / s.H, bh % s.H, npad, kp, kp + npad * s.D);
    }
  });
  const int64_t blocks = (s.N + kQueryBlock - 1) / kQueryBlock;
  at::parallel_for(0, heads * blocks, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> scores(kQueryBlock * npad);
    std::vector<uint16_t> probs(kQueryBlock * npad);
    std::vector<uint16_t> spill(kQueryBlock * s.D);  // output rows of the padding queries
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t bh = t / blocks, b = bh / s.H, h = bh % s.H, n0 = (t % blocks) * kQueryBlock;
      const uint16_t* kp = packed.get() + bh * 2 * npad * s.D;
      const uint16_t* q[kQueryBlock];
      uint16_t* o[kQueryBlock];
      const uint16_t* p[kQueryBlock];
      for (int i = 0; i < kQueryBlock; ++i) {
        const int64_t n = std::min(n0 + i, s.N - 1);  // past the end: repeat the last query
        q[i] = s.q(qkv, b, n, h);
        o[i] = n0 + i < s.N ? s.out(out, b, n, h) : spill.data() + i * s.D;
        p[i] = probs.data() + i * npad;
      }
      float row_max[kQueryBlock], inv_total[kQueryBlock];
      scores_block(q, kp, s.D, s.N, npad, scale, scores.data(), row_max);
      for (int i = 0; i < kQueryBlock; ++i)
        inv_total[i] = 1.0f / softmax_row(scores.data() + i * npad, row_max[i], s.N, npad, probs.data() + i * npad);
      for (int i = 0; i < kQueryBlock; i += QG) pv_group<DV, QG>(p + i, kp + npad * s.D, npad, inv_total + i, o + i);
    }
  });
}
#endif

at::Tensor encoder_attention_cpu(const at::Tensor& qkv, int64_t num_heads, double scale) {
  TORCH_CHECK(qkv.device().is_cpu(), "encoder_attention: qkv must be a CPU tensor");
  TORCH_CHECK(qkv.scalar_type() == at::kBFloat16, "encoder_attention: qkv must be bfloat16, got ", qkv.scalar_type());
  TORCH_CHECK(qkv.dim() == 3 && qkv.is_contiguous(), "encoder_attention: qkv must be a contiguous [B, N, 3 * C] tensor, got ",
              qkv.sizes());
  TORCH_CHECK(num_heads > 0, "encoder_attention: num_heads must be positive, got ", num_heads);
  TORCH_CHECK(qkv.size(2) % (3 * num_heads) == 0, "encoder_attention: qkv's last dimension (", qkv.size(2),
              ") must be 3 * num_heads * head_dim with num_heads = ", num_heads);
  const Shape s{qkv.size(0), qkv.size(1), num_heads, qkv.size(2) / (3 * num_heads)};
  TORCH_CHECK(s.D % 2 == 0, "encoder_attention: head_dim must be even, got ", s.D);
  TORCH_CHECK(std::isfinite(scale) && scale > 0, "encoder_attention: scale must be a positive finite number, got ", scale);
  const p2s::CpuIsa isa = p2s::selected_cpu_isa("encoder_attention");
  at::Tensor out = at::empty({s.B, s.N, s.C()}, qkv.options());
  if (s.B == 0 || s.N == 0) return out;
  const auto* in = reinterpret_cast<const uint16_t*>(qkv.data_ptr<c10::BFloat16>());
  auto* o = reinterpret_cast<uint16_t*>(out.data_ptr<c10::BFloat16>());
  const float sc = static_cast<float>(scale);
#ifdef P2S_EA_X86
  if (isa == p2s::CpuIsa::kAvx512 && p2s::cpu_supports_avx512_bf16()) {
    switch (s.D) {
      case 16: run_avx512_bf16<1>(s, in, sc, o); return out;
      case 32: run_avx512_bf16<2>(s, in, sc, o); return out;
      case 64: run_avx512_bf16<4>(s, in, sc, o); return out;
      case 128: run_avx512_bf16<8>(s, in, sc, o); return out;
      default: break;
    }
  }
#endif
  (void)isa;
  run_scalar(s, in, sc, o);
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(pix2seq_fast, m) {
  m.def("encoder_attention(Tensor qkv, int num_heads, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(pix2seq_fast, CPU, m) { m.impl("encoder_attention", &encoder_attention_cpu); }
