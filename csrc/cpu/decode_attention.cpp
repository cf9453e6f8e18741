// Decode attention and KV-cache append on the CPU; registers the op schemas.
//
// Work is planned per K/V row: the query rows (sequence b, query t) of every sequence that reads
// row n are gathered, and a work item is (row n, head h, a block of <= 16 of those query rows,
// optionally a chunk of keys). Rows shared by >= 8 query rows (an image's K/V read by many
// sequences) take the "grouped" path: 16 query rows sit in the 16 lanes of a vector, so every key
// and value element is loaded once per block and used by 16 queries (a small GEMM with the online
// softmax between the two products). Rows read by few queries (self-attention caches) take the
// "single" path: one query at a time, vectorised over the head dimension. When items are few
// compared with threads, keys are split into chunks whose partial softmax states are merged.
//
// The bodies are always-inline templates instantiated three times, for AVX-512, AVX2+FMA and the
// baseline ISA, and the best one the CPU supports is chosen at run time (or the one named by the
// environment variable P2S_CPU_ISA = baseline | avx2 | avx512; cpu_isa.h).
//
// Non-finite inputs follow the reference's one rule: a query row whose visible scores (keys
// j < its limit) or visible values hold a NaN or +-inf, or whose output overflows, comes out all
// NaN; keys and values past the limit never matter. The single path reads only visible keys and
// flags a non-finite score or output; a grouped lane that meets a non-finite score or output (its
// tiles may hold keys only other lanes see) is computed again on the single path, so on finite
// inputs the check costs one compare per score.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include "cpu_isa.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <type_traits>
#include <vector>

#include "pix2seq_fast/decode_attention.h"

namespace {

namespace da = p2s::decode_attention;

constexpr int kLanes = 16;      // query rows per work item
constexpr int kKeyTile = 64;    // keys per online-softmax step
constexpr int kGroupedMinRows = 8;
constexpr int kMinKeysPerSplit = 256;

#define P2S_ALWAYS_INLINE [[gnu::always_inline]] inline

typedef float v16 __attribute__((vector_size(64)));
typedef float v8 __attribute__((vector_size(32)));
typedef float v4 __attribute__((vector_size(16)));

// 16 fp32 lanes held as native vectors of the ISA: 1 zmm (512), 2 ymm (256) or 4 xmm (128).
// GCC keeps a 64-byte generic vector in memory when the target has no 512-bit registers (every
// broadcast and partial result went through the stack, ~7x slower); arrays of native-width
// vectors stay in registers.
template <int BITS>
struct Lanes {
  static constexpr int W = BITS / 32;  // floats per native vector
  static constexpr int R = 16 / W;     // native vectors per 16 lanes
  typedef float nv __attribute__((vector_size(BITS / 8)));
  typedef float nvu __attribute__((vector_size(BITS / 8), aligned(4)));
  nv r[R];

  static inline __attribute__((always_inline)) Lanes zero() {
    Lanes x;
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) x.r[i] = nv{};
    return x;
  }
  static inline __attribute__((always_inline)) Lanes load(const float* p) {
    Lanes x;
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) x.r[i] = *reinterpret_cast<const nvu*>(p + i * W);
    return x;
  }
  inline __attribute__((always_inline)) void store(float* p) const {
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) *reinterpret_cast<nvu*>(p + i * W) = r[i];
  }
  inline __attribute__((always_inline)) Lanes& operator+=(const Lanes& o) {
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) r[i] += o.r[i];
    return *this;
  }
  friend inline __attribute__((always_inline)) Lanes operator*(const Lanes& a, const Lanes& b) {
    Lanes x;
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) x.r[i] = a.r[i] * b.r[i];
    return x;
  }
  friend inline __attribute__((always_inline)) Lanes operator*(const Lanes& a, float s) {
    const nv b = s - nv{};  // a broadcast (x - 0 folds to x; 0 + x would not)
    Lanes x;
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) x.r[i] = a.r[i] * b;
    return x;
  }
  friend inline __attribute__((always_inline)) Lanes operator*(float s, const Lanes& a) { return a * s; }
  // Sum of the 16 lanes in the same order for every ISA: halves, quarters, then pairs.
  inline __attribute__((always_inline)) float sum() const {
    v4 x4;
    if constexpr (W == 16) {
      const v8 x8 = __builtin_shufflevector(r[0], r[0], 0, 1, 2, 3, 4, 5, 6, 7) +
                    __builtin_shufflevector(r[0], r[0], 8, 9, 10, 11, 12, 13, 14, 15);
      x4 = __builtin_shufflevector(x8, x8, 0, 1, 2, 3) + __builtin_shufflevector(x8, x8, 4, 5, 6, 7);
    } else if constexpr (W == 8) {
      const v8 x8 = r[0] + r[1];
      x4 = __builtin_shufflevector(x8, x8, 0, 1, 2, 3) + __builtin_shufflevector(x8, x8, 4, 5, 6, 7);
    } else {
      x4 = (r[0] + r[2]) + (r[1] + r[3]);
    }
    return (x4[0] + x4[2]) + (x4[1] + x4[3]);
  }
};

// count + 1 in the lanes where x is NaN / +-inf (x - x is 0 only for finite x).
template <int BITS>
inline __attribute__((always_inline)) Lanes<BITS> lanes_count_nonfinite(const Lanes<BITS>& count,
                                                                        const Lanes<BITS>& x) {
  typedef typename Lanes<BITS>::nv nv;
  Lanes<BITS> out;
#pragma GCC unroll 4
  for (int i = 0; i < Lanes<BITS>::R; ++i) {
    const nv zero = nv{};
    out.r[i] = (x.r[i] - x.r[i]) == zero ? count.r[i] : count.r[i] + 1.0f;
  }
  return out;
}

// 0 for a finite x, 1 for NaN / +-inf.
P2S_ALWAYS_INLINE float nonfinite(float x) { return std::fabs(x) <= FLT_MAX ? 0.0f : 1.0f; }

// True when one of o[0], o[stride], ..., o[(D - 1) * stride] is NaN / +-inf.
P2S_ALWAYS_INLINE bool any_nonfinite(const float* o, int D, int stride) {
  float bad = 0.0f;
  for (int d = 0; d < D; ++d) bad += nonfinite(o[d * stride]);
  return bad > 0.0f;
}

// std::max(a, b) lane by lane (same NaN behaviour: (a < b) ? b : a).
template <int BITS>
inline __attribute__((always_inline)) Lanes<BITS> lanes_max(const Lanes<BITS>& a, const Lanes<BITS>& b) {
  Lanes<BITS> x;
#pragma GCC unroll 4
  for (int i = 0; i < Lanes<BITS>::R; ++i) x.r[i] = a.r[i] < b.r[i] ? b.r[i] : a.r[i];
  return x;
}

// da::exp2_nonpositive(x - shift) lane by lane: the header's operations in the same order, so every
// lane equals the scalar function bit for bit.
template <int BITS>
inline __attribute__((always_inline)) Lanes<BITS> lanes_exp2_shifted(const Lanes<BITS>& x,
                                                                     const Lanes<BITS>& shift) {
  typedef typename Lanes<BITS>::nv nv;
  typedef int ni __attribute__((vector_size(BITS / 8)));
  Lanes<BITS> out;
#pragma GCC unroll 4
  for (int i = 0; i < Lanes<BITS>::R; ++i) {
    const nv y = x.r[i] - shift.r[i];
    const nv lo = -127.0f - nv{};
    const nv clamped = y < lo ? lo : y;
    const nv whole = (clamped + 12582912.0f) - 12582912.0f;
    const nv r = clamped - whole;
    nv q = 1.5353362e-4f - nv{};
    q = q * r + 1.3398874e-3f;
    q = q * r + 9.6180364e-3f;
    q = q * r + 5.5503406e-2f;
    q = q * r + 2.4022648e-1f;
    q = q * r + 6.9314718e-1f;
    q = q * r + 1.0f;
    const nv two_to_whole = (nv)(((ni)(whole + 8388735.0f)) << 23);
    out.r[i] = q * two_to_whole;
  }
  return out;
}

struct Problem {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  int64_t q_sb, q_sh, q_st;  // element strides of q [B, H, Tq, D] (last stride 1)
  int64_t k_sn, k_sh, k_sl;  // of k [N, H, L, D]
  int64_t v_sn, v_sh, v_sl;  // of v [N, H, L, D]
  int heads, num_queries, head_dim;
  float q_scale;  // scale * log2(e)
};

struct QueryRow {
  int b, t, limit;  // sequence, query index, number of visible keys
};

struct WorkItem {
  int n, h;             // K/V row and head
  int first, count;     // query rows rows[first .. first + count)
  int key_begin, key_end;
  bool grouped;
  int64_t partial;      // offset of this item's partial states, or -1 to write the output
};

// ---- element conversion -----------------------------------------------------------------------
P2S_ALWAYS_INLINE float to_float(float x) { return x; }
P2S_ALWAYS_INLINE float to_float(c10::Half x) { return da::fp16_bits_to_float(x.x); }
P2S_ALWAYS_INLINE float to_float(c10::BFloat16 x) { return da::bf16_bits_to_float(x.x); }

template <typename T>
P2S_ALWAYS_INLINE T from_float(float x) {
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else if constexpr (std::is_same_v<T, c10::Half>) {
    return c10::Half(da::float_to_fp16_bits(x), c10::Half::from_bits());
  } else {
    return c10::BFloat16(da::float_to_bf16_bits(x), c10::BFloat16::from_bits());
  }
}

// Returns keys/values [nk, D] as fp32 rows with the returned stride (no copy for fp32 inputs).
template <typename T>
P2S_ALWAYS_INLINE const float* rows_as_float(const T* src, int64_t stride, int nk, int D,
                                             float* buffer, int64_t* out_stride) {
  if constexpr (std::is_same_v<T, float>) {
    *out_stride = stride;
    return src;
  } else {
    for (int r = 0; r < nk; ++r) {
      const T* row = src + r * stride;
      float* dst = buffer + r * D;
#pragma omp simd
      for (int d = 0; d < D; ++d) dst[d] = to_float(row[d]);
    }
    *out_stride = D;
    return buffer;
  }
}

// ---- grouped path: 16 query rows in vector lanes ----------------------------------------------
// Register blocking per ISA (16 lanes are 1 zmm, 2 ymm or 4 xmm registers): keys per step of the
// score product, head dims per chunk of the value product.
template <int VECTOR_BITS>
struct Blocking {
  static constexpr int keys = VECTOR_BITS >= 512 ? 8 : VECTOR_BITS >= 256 ? 4 : 2;
  static constexpr int dims = VECTOR_BITS >= 512 ? 16 : VECTOR_BITS >= 256 ? 4 : 2;
};

// scores[j][lane] = sum_d qt[d][lane] * keys[j][d]
template <int DS, int KU, int BITS>
P2S_ALWAYS_INLINE void grouped_scores(const float* qt, const float* keys, int64_t ks, int nk, int D,
                                      float* scores) {
  const int dim = DS ? DS : D;
  int j = 0;
  for (; j + KU <= nk; j += KU) {
    const float* k0 = keys + j * ks;
    using V = Lanes<BITS>;
    V a[KU];
#pragma GCC unroll 8
    for (int u = 0; u < KU; ++u) a[u] = V::zero();
    for (int d = 0; d < dim; ++d) {
      const V q = V::load(qt + d * kLanes);
#pragma GCC unroll 8
      for (int u = 0; u < KU; ++u) a[u] += q * k0[u * ks + d];
    }
#pragma GCC unroll 8
    for (int u = 0; u < KU; ++u) a[u].store(scores + (j + u) * kLanes);
  }
  for (; j < nk; ++j) {
    using V = Lanes<BITS>;
    const float* kj = keys + j * ks;
    V a = V::zero();
    for (int d = 0; d < dim; ++d) a += V::load(qt + d * kLanes) * kj[d];
    a.store(scores + j * kLanes);
  }
}

// ot[d][lane] += sum_j probs[j][lane] * values[j][d]
template <int DS, int DC, int BITS>
P2S_ALWAYS_INLINE void grouped_accumulate(const float* probs, const float* values, int64_t vs,
                                          int nk, int D, float* ot) {
  using V = Lanes<BITS>;
  const int dim = DS ? DS : D;
  int c = 0;
  for (; c + DC <= dim; c += DC) {
    V acc[DC];
#pragma GCC unroll 16
    for (int e = 0; e < DC; ++e) acc[e] = V::load(ot + (c + e) * kLanes);
    for (int j = 0; j < nk; ++j) {
      const V p = V::load(probs + j * kLanes);
      const float* vj = values + j * vs + c;
#pragma GCC unroll 16
      for (int e = 0; e < DC; ++e) acc[e] += p * vj[e];
    }
#pragma GCC unroll 16
    for (int e = 0; e < DC; ++e) acc[e].store(ot + (c + e) * kLanes);
  }
  for (; c < dim; ++c) {  // head dims that are not a multiple of DC
    V acc = V::load(ot + c * kLanes);
    for (int j = 0; j < nk; ++j) acc += V::load(probs + j * kLanes) * values[j * vs + c];
    acc.store(ot + c * kLanes);
  }
}


struct Scratch {
  float* qt;      // [D][16] grouped, [16][D] single
  float* ot;      // [D][16] grouped, [16][D] single
  float* scores;  // [kKeyTile][16]
  float* keys;    // [kKeyTile][D]
  float* values;  // [kKeyTile][D]
};

template <typename T, int DS, int VECTOR_BITS>
P2S_ALWAYS_INLINE void single_item(const Problem& p, const QueryRow* rows, const WorkItem& w,
                                   const Scratch& s, float* partials);

template <typename T, int DS, int VECTOR_BITS>
P2S_ALWAYS_INLINE void grouped_item(const Problem& p, const QueryRow* rows, const WorkItem& w,
                                    const Scratch& s, float* partials) {
  using V = Lanes<VECTOR_BITS>;
  const int D = DS ? DS : p.head_dim;
  const T* q = static_cast<const T*>(p.q);
  alignas(64) float limit[kLanes], m[kLanes], l[kLanes], alpha[kLanes], shift[kLanes],
      tile_max[kLanes], tile_sum[kLanes], bad[kLanes];
  int max_limit = 0, min_limit = 1 << 30;
  for (int lane = 0; lane < kLanes; ++lane) {
    if (lane < w.count) {
      const QueryRow& r = rows[w.first + lane];
      const T* src = q + r.b * p.q_sb + w.h * p.q_sh + r.t * p.q_st;
      for (int d = 0; d < D; ++d) s.qt[d * kLanes + lane] = to_float(src[d]) * p.q_scale;
      limit[lane] = static_cast<float>(r.limit);
      max_limit = std::max(max_limit, r.limit);
      min_limit = std::min(min_limit, r.limit);
    } else {
      for (int d = 0; d < D; ++d) s.qt[d * kLanes + lane] = 0.0f;
      limit[lane] = 0.0f;  // an unused lane: its results are never read
    }
    m[lane] = -INFINITY;
    l[lane] = 0.0f;
    bad[lane] = 0.0f;
  }
  std::memset(s.ot, 0, sizeof(float) * D * kLanes);
  const T* kbase = static_cast<const T*>(p.k) + w.n * p.k_sn + w.h * p.k_sh;
  const T* vbase = static_cast<const T*>(p.v) + w.n * p.v_sn + w.h * p.v_sh;
  const int key_end = std::min(w.key_end, max_limit);
  for (int t0 = w.key_begin; t0 < key_end; t0 += kKeyTile) {
    const int nk = std::min(kKeyTile, key_end - t0);
    int64_t ks, vs;
    const float* keys = rows_as_float(kbase + t0 * p.k_sl, p.k_sl, nk, D, s.keys, &ks);
    grouped_scores<DS, Blocking<VECTOR_BITS>::keys, VECTOR_BITS>(s.qt, keys, ks, nk, D, s.scores);
    for (int lane = 0; lane < kLanes; ++lane) tile_max[lane] = -INFINITY;
    if (t0 + nk <= min_limit) {
      V tmax = V::load(tile_max), nbad = V::load(bad);
      for (int j = 0; j < nk; ++j) {
        const V score = V::load(s.scores + j * kLanes);
        tmax = lanes_max(tmax, score);
        nbad = lanes_count_nonfinite(nbad, score);
      }
      tmax.store(tile_max);
      nbad.store(bad);
    } else {
      for (int j = 0; j < nk; ++j) {
        const float key = static_cast<float>(t0 + j);
#pragma omp simd
        for (int lane = 0; lane < kLanes; ++lane) {
          const float score = s.scores[j * kLanes + lane];
          const float x = key < limit[lane] ? score : -INFINITY;
          s.scores[j * kLanes + lane] = x;
          tile_max[lane] = std::max(tile_max[lane], x);
          bad[lane] += nonfinite(score);  // also keys the lane does not see: rechecked below
        }
      }
    }
#pragma omp simd
    for (int lane = 0; lane < kLanes; ++lane) {
      const float m_new = std::max(m[lane], tile_max[lane]);
      alpha[lane] = da::rescale_factor(m[lane], m_new);
      shift[lane] = da::safe_max(m_new);
      m[lane] = m_new;
      tile_sum[lane] = 0.0f;
    }
    {
      const V shift_v = V::load(shift);
      V sum = V::load(tile_sum);
      for (int j = 0; j < nk; ++j) {
        const V e = lanes_exp2_shifted(V::load(s.scores + j * kLanes), shift_v);
        e.store(s.scores + j * kLanes);
        sum += e;
      }
      sum.store(tile_sum);
    }
#pragma omp simd
    for (int lane = 0; lane < kLanes; ++lane) l[lane] = l[lane] * alpha[lane] + tile_sum[lane];
    {
      const V alpha_v = V::load(alpha);
      for (int d = 0; d < D; ++d) (V::load(s.ot + d * kLanes) * alpha_v).store(s.ot + d * kLanes);
    }
    const float* values = rows_as_float(vbase + t0 * p.v_sl, p.v_sl, nk, D, s.values, &vs);
    grouped_accumulate<DS, Blocking<VECTOR_BITS>::dims, VECTOR_BITS>(s.scores, values, vs, nk, D, s.ot);
  }
  int recheck[kLanes], rechecks = 0;
  for (int lane = 0; lane < w.count; ++lane)
    if (bad[lane] > 0.0f || any_nonfinite(s.ot + lane, D, kLanes)) recheck[rechecks++] = lane;
  if (partials) {
    for (int lane = 0; lane < w.count; ++lane) {
      float* dst = partials + lane * (D + 2);
      dst[0] = m[lane];
      dst[1] = l[lane];
      for (int d = 0; d < D; ++d) dst[2 + d] = s.ot[d * kLanes + lane];
    }
  } else {
    T* out = static_cast<T*>(p.out);
    for (int lane = 0; lane < w.count; ++lane) {
      const QueryRow& r = rows[w.first + lane];
      T* dst = out + ((static_cast<int64_t>(r.b) * p.heads + w.h) * p.num_queries + r.t) * D;
      for (int d = 0; d < D; ++d) dst[d] = from_float<T>(da::normalize(s.ot[d * kLanes + lane], l[lane]));
    }
  }
  // Lanes that met a NaN / inf (perhaps only in keys they do not see) again on the single path,
  // which reads only the lane's own visible keys; it reuses the scratch, so after every write above.
  for (int i = 0; i < rechecks; ++i) {
    WorkItem one = w;
    one.first = w.first + recheck[i];
    one.count = 1;
    one.grouped = false;
    single_item<T, DS, VECTOR_BITS>(p, rows, one, s, partials ? partials + recheck[i] * (D + 2) : nullptr);
  }
}

// ---- single path: one query row at a time, vectorised over the head dimension ----------------
template <typename T, int DS, int VECTOR_BITS>
P2S_ALWAYS_INLINE void single_item(const Problem& p, const QueryRow* rows, const WorkItem& w,
                                   const Scratch& s, float* partials) {
  const int D = DS ? DS : p.head_dim;
  const T* q = static_cast<const T*>(p.q);
  float m[kLanes], l[kLanes], bad[kLanes];
  int max_limit = 0;
  for (int r = 0; r < w.count; ++r) {
    const QueryRow& row = rows[w.first + r];
    const T* src = q + row.b * p.q_sb + w.h * p.q_sh + row.t * p.q_st;
    for (int d = 0; d < D; ++d) s.qt[r * D + d] = to_float(src[d]) * p.q_scale;
    for (int d = 0; d < D; ++d) s.ot[r * D + d] = 0.0f;
    m[r] = -INFINITY;
    l[r] = 0.0f;
    bad[r] = 0.0f;
    max_limit = std::max(max_limit, row.limit);
  }
  const T* kbase = static_cast<const T*>(p.k) + w.n * p.k_sn + w.h * p.k_sh;
  const T* vbase = static_cast<const T*>(p.v) + w.n * p.v_sn + w.h * p.v_sh;
  const int key_end = std::min(w.key_end, max_limit);
  float* scores = s.scores;
  for (int t0 = w.key_begin; t0 < key_end; t0 += kKeyTile) {
    const int nk = std::min(kKeyTile, key_end - t0);
    int64_t ks, vs;
    const float* keys = rows_as_float(kbase + t0 * p.k_sl, p.k_sl, nk, D, s.keys, &ks);
    const float* values = rows_as_float(vbase + t0 * p.v_sl, p.v_sl, nk, D, s.values, &vs);
    for (int r = 0; r < w.count; ++r) {
      const int nr = std::min(nk, rows[w.first + r].limit - t0);
      if (nr <= 0) continue;
      const float* qr = s.qt + r * D;
      float tile_max = -INFINITY;
      if constexpr (DS % 16 == 0 && DS > 0) {
        constexpr int kChunks = DS / 16;
        using V = Lanes<VECTOR_BITS>;
        V qv[kChunks];
        for (int c = 0; c < kChunks; ++c) qv[c] = V::load(qr + 16 * c);
        for (int j = 0; j < nr; ++j) {
          const float* kj = keys + j * ks;
          V acc = qv[0] * V::load(kj);
          for (int c = 1; c < kChunks; ++c) acc += qv[c] * V::load(kj + 16 * c);
          const float dot = acc.sum();
          scores[j] = dot;
          tile_max = std::max(tile_max, dot);
          bad[r] += nonfinite(dot);
        }
      } else {
        for (int j = 0; j < nr; ++j) {
          const float* kj = keys + j * ks;
          float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
          for (int d = 0; d < D; ++d) acc += qr[d] * kj[d];
          scores[j] = acc;
          tile_max = std::max(tile_max, acc);
          bad[r] += nonfinite(acc);
        }
      }
      const float m_new = std::max(m[r], tile_max);
      const float alpha = da::rescale_factor(m[r], m_new);
      m[r] = m_new;
      float tile_sum = 0.0f;
#pragma omp simd reduction(+ : tile_sum)
      for (int j = 0; j < nr; ++j) {
        const float e = da::exp2_nonpositive(scores[j] - m_new);
        scores[j] = e;
        tile_sum += e;
      }
      l[r] = l[r] * alpha + tile_sum;
      float* o = s.ot + r * D;
      if constexpr (DS % 16 == 0 && DS > 0) {
        constexpr int kChunks = DS / 16;
        using V = Lanes<VECTOR_BITS>;
        V acc[kChunks];
        for (int c = 0; c < kChunks; ++c) acc[c] = V::load(o + 16 * c) * alpha;
        for (int j = 0; j < nr; ++j) {
          const float pj = scores[j];
          const float* vj = values + j * vs;
          for (int c = 0; c < kChunks; ++c) acc[c] += pj * V::load(vj + 16 * c);
        }
        for (int c = 0; c < kChunks; ++c) acc[c].store(o + 16 * c);
      } else {
#pragma omp simd
        for (int d = 0; d < D; ++d) o[d] *= alpha;
        for (int j = 0; j < nr; ++j) {
          const float pj = scores[j];
          const float* vj = values + j * vs;
#pragma omp simd
          for (int d = 0; d < D; ++d) o[d] += pj * vj[d];
        }
      }
    }
  }
  for (int r = 0; r < w.count; ++r) {
    const float* o = s.ot + r * D;
    const bool nan_row = bad[r] > 0.0f || any_nonfinite(o, D, 1);
    if (partials) {
      float* dst = partials + r * (D + 2);
      dst[0] = m[r];
      dst[1] = l[r];
      for (int d = 0; d < D; ++d) dst[2 + d] = nan_row ? NAN : o[d];  // a NaN survives the merge
    } else {
      const QueryRow& row = rows[w.first + r];
      T* dst = static_cast<T*>(p.out) +
               ((static_cast<int64_t>(row.b) * p.heads + w.h) * p.num_queries + row.t) * D;
      for (int d = 0; d < D; ++d) dst[d] = from_float<T>(nan_row ? NAN : da::normalize(o[d], l[r]));
    }
  }
}

template <typename T, int DS, int VECTOR_BITS>
P2S_ALWAYS_INLINE void run_item(const Problem& p, const QueryRow* rows, const WorkItem& w,
                                const Scratch& s, float* partials) {
  if (w.grouped) {
    grouped_item<T, DS, VECTOR_BITS>(p, rows, w, s, partials);
  } else {
    single_item<T, DS, VECTOR_BITS>(p, rows, w, s, partials);
  }
}

using ItemFn = void (*)(const Problem&, const QueryRow*, const WorkItem&, const Scratch&, float*);

// One entry point per (ISA, dtype, head dim); the target attribute makes the inlined bodies use
// that ISA.
#define P2S_DA_ENTRY(NAME, ATTR, BITS, T, DS)                                                  \
  ATTR void NAME(const Problem& p, const QueryRow* rows, const WorkItem& w, const Scratch& s, \
                 float* partials) {                                                           \
    run_item<T, DS, BITS>(p, rows, w, s, partials);                                           \
  }
#define P2S_DA_ISA(PREFIX, ATTR, BITS)                         \
  P2S_DA_ENTRY(PREFIX##_f32_32, ATTR, BITS, float, 32)            \
  P2S_DA_ENTRY(PREFIX##_f32_64, ATTR, BITS, float, 64)            \
  P2S_DA_ENTRY(PREFIX##_f32_any, ATTR, BITS, float, 0)            \
  P2S_DA_ENTRY(PREFIX##_f16_32, ATTR, BITS, c10::Half, 32)        \
  P2S_DA_ENTRY(PREFIX##_f16_64, ATTR, BITS, c10::Half, 64)        \
  P2S_DA_ENTRY(PREFIX##_f16_any, ATTR, BITS, c10::Half, 0)        \
  P2S_DA_ENTRY(PREFIX##_bf16_32, ATTR, BITS, c10::BFloat16, 32)   \
  P2S_DA_ENTRY(PREFIX##_bf16_64, ATTR, BITS, c10::BFloat16, 64)   \
  P2S_DA_ENTRY(PREFIX##_bf16_any, ATTR, BITS, c10::BFloat16, 0)   \
  const ItemFn PREFIX##_table[3][3] = {                     \
      {PREFIX##_f32_32, PREFIX##_f32_64, PREFIX##_f32_any}, \
      {PREFIX##_f16_32, PREFIX##_f16_64, PREFIX##_f16_any}, \
      {PREFIX##_bf16_32, PREFIX##_bf16_64, PREFIX##_bf16_any}};

P2S_DA_ISA(baseline, , 128)
#if defined(__x86_64__) && defined(__GNUC__)
P2S_DA_ISA(avx2, __attribute__((target("arch=x86-64-v3"))), 256)
P2S_DA_ISA(avx512, __attribute__((target("arch=x86-64-v4,prefer-vector-width=512"))), 512)
#endif

using ItemTable = const ItemFn (*)[3];

ItemTable table_for(p2s::CpuIsa isa) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (isa == p2s::CpuIsa::kAvx512) return avx512_table;
  if (isa == p2s::CpuIsa::kAvx2) return avx2_table;
#endif
  return baseline_table;
}

ItemFn select_item_fn(at::ScalarType dtype, int head_dim) {
  const ItemTable table = table_for(p2s::selected_cpu_isa("decode_attention"));
  const int row = dtype == at::kFloat ? 0 : dtype == at::kHalf ? 1 : 2;
  const int col = head_dim == 32 ? 0 : head_dim == 64 ? 1 : 2;
  return table[row][col];
}

// ---- merge of split-KV partial states --------------------------------------------------------
template <typename T>
void merge_partials(const Problem& p, const QueryRow* rows, const WorkItem& w, int splits,
                    int64_t split_stride, const float* partials) {
  const int D = p.head_dim;
  T* out = static_cast<T*>(p.out);
  for (int r = 0; r < w.count; ++r) {
    float m_all = -INFINITY;
    for (int sp = 0; sp < splits; ++sp) m_all = da::merged_max(m_all, partials[sp * split_stride + r * (D + 2)]);
    float l_all = 0.0f;
    float acc[512];
    float* o = D <= 512 ? acc : nullptr;
    std::vector<float> big;
    if (!o) {
      big.resize(D);
      o = big.data();
    }
    for (int d = 0; d < D; ++d) o[d] = 0.0f;
    for (int sp = 0; sp < splits; ++sp) {
      const float* part = partials + sp * split_stride + r * (D + 2);
      const float weight = da::merge_weight(part[0], m_all);
      l_all += weight * part[1];
      for (int d = 0; d < D; ++d) o[d] += weight * part[2 + d];
    }
    const QueryRow& row = rows[w.first + r];
    T* dst = out + ((static_cast<int64_t>(row.b) * p.heads + w.h) * p.num_queries + row.t) * D;
    const bool nan_row = any_nonfinite(o, D, 1);  // a NaN partial (see single_item) or an overflow
    for (int d = 0; d < D; ++d) dst[d] = from_float<T>(nan_row ? NAN : da::normalize(o[d], l_all));
  }
}

void check_index_tensor(const at::Tensor& t, const char* name, int64_t size) {
  TORCH_CHECK(t.device().is_cpu(), "decode_attention: ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.dim() == 1 && t.size(0) == size, "decode_attention: ", name, " must have shape [B] = [",
              size, "], got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kInt || t.scalar_type() == at::kLong, "decode_attention: ", name,
              " must be int32 or int64, got ", t.scalar_type());
}

std::vector<int64_t> index_values(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kLong).contiguous();
  const int64_t* data = c.data_ptr<int64_t>();
  return std::vector<int64_t>(data, data + c.numel());
}

void check_float_tensor(const at::Tensor& t, const char* name, int64_t dims) {
  TORCH_CHECK(t.device().is_cpu(), "decode_attention: ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.dim() == dims, "decode_attention: ", name, " must be ", dims, "-D, got ", t.sizes());
  const auto dtype = t.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16, "decode_attention: ",
              name, " must be float32, float16 or bfloat16, got ", dtype);
  TORCH_CHECK(t.size(-1) <= 1 || t.stride(-1) == 1, "decode_attention: ", name,
              " must have stride 1 in its last (head_dim) dimension, got strides ", t.strides());
}

at::Tensor decode_attention_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& lengths, const std::optional<at::Tensor>& kv_index,
                                bool causal, double scale) {
  check_float_tensor(q, "q", 4);
  check_float_tensor(k, "k", 4);
  check_float_tensor(v, "v", 4);
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
              "decode_attention: q, k and v must share one dtype, got ", q.scalar_type(), ", ",
              k.scalar_type(), ", ", v.scalar_type());
  TORCH_CHECK(v.sizes() == k.sizes(), "decode_attention: v must have k's shape ", k.sizes(), ", got ",
              v.sizes());
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), D = q.size(3);
  const int64_t N = k.size(0), L = k.size(2);
  TORCH_CHECK(k.size(1) == H && k.size(3) == D, "decode_attention: k [N, H, L, D] must match q [B, H, Tq, D] in H and D, got q ",
              q.sizes(), " and k ", k.sizes());
  TORCH_CHECK(B >= 1 && H >= 1 && Tq >= 1 && D >= 1 && N >= 1 && L >= 1,
              "decode_attention: every dimension must be >= 1, got q ", q.sizes(), " and k ", k.sizes());
  TORCH_CHECK(L < (1 << 24), "decode_attention: at most 2^24 keys, got L = ", L);
  check_index_tensor(lengths, "lengths", B);
  const std::vector<int64_t> length = index_values(lengths);
  const int64_t min_length = causal ? Tq : 1;
  for (int64_t b = 0; b < B; ++b)
    TORCH_CHECK(length[b] >= min_length && length[b] <= L, "decode_attention: lengths[", b, "] = ", length[b],
                " must be in [", min_length, ", L=", L, "]", causal ? " (causal needs lengths >= Tq)" : "");
  std::vector<int64_t> row_of(B);
  if (kv_index.has_value()) {
    check_index_tensor(*kv_index, "kv_index", B);
    row_of = index_values(*kv_index);
    for (int64_t b = 0; b < B; ++b)
      TORCH_CHECK(row_of[b] >= 0 && row_of[b] < N, "decode_attention: kv_index[", b, "] = ", row_of[b],
                  " must be in [0, N=", N, ")");
  } else {
    TORCH_CHECK(N == B, "decode_attention: without kv_index, k and v need N == B rows, got N=", N, ", B=", B);
    for (int64_t b = 0; b < B; ++b) row_of[b] = b;
  }
  TORCH_CHECK(std::isfinite(scale), "decode_attention: scale must be finite, got ", scale);

  at::Tensor out = at::empty({B, H, Tq, D}, q.options().memory_format(at::MemoryFormat::Contiguous));
  Problem p{q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(),
            q.stride(0), q.stride(1), q.stride(2),
            k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2),
            static_cast<int>(H), static_cast<int>(Tq), static_cast<int>(D),
            static_cast<float>(scale) * da::kLog2e};

  // Query rows grouped by K/V row (counting sort, stable in b).
  std::vector<int> rows_per_n(N + 1, 0);
  for (int64_t b = 0; b < B; ++b) rows_per_n[row_of[b] + 1] += static_cast<int>(Tq);
  for (int64_t n = 0; n < N; ++n) rows_per_n[n + 1] += rows_per_n[n];
  std::vector<QueryRow> rows(B * Tq);
  {
    std::vector<int> fill(rows_per_n.begin(), rows_per_n.end() - 1);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < Tq; ++t)
        rows[fill[row_of[b]]++] = QueryRow{static_cast<int>(b), static_cast<int>(t),
                                           da::visible_keys(static_cast<int>(length[b]), static_cast<int>(Tq),
                                                            static_cast<int>(t), causal)};
  }
  std::vector<WorkItem> items;
  for (int64_t n = 0; n < N; ++n) {
    const int begin = rows_per_n[n], count = rows_per_n[n + 1] - begin;
    if (count == 0) continue;
    const bool grouped = count >= kGroupedMinRows;
    for (int64_t h = 0; h < H; ++h)
      for (int first = begin; first < begin + count; first += kLanes)
        items.push_back(WorkItem{static_cast<int>(n), static_cast<int>(h), first,
                                 std::min(kLanes, begin + count - first), 0, static_cast<int>(L), grouped, -1});
  }
  // Split keys when there are too few items to occupy the threads.
  const int threads = at::get_num_threads();
  const int64_t num_items = static_cast<int64_t>(items.size());
  int splits = 1;
  if (num_items < 2 * threads && L >= 2 * kMinKeysPerSplit)
    splits = static_cast<int>(std::min<int64_t>((4 * threads + num_items - 1) / num_items, L / kMinKeysPerSplit));
  const int64_t split_stride = static_cast<int64_t>(kLanes) * (D + 2);
  std::vector<float> partials;
  std::vector<WorkItem> units;
  if (splits > 1) {
    const int64_t chunk = ((L + splits - 1) / splits + kKeyTile - 1) / kKeyTile * kKeyTile;
    partials.resize(num_items * splits * split_stride);
    for (int64_t i = 0; i < num_items; ++i)
      for (int sp = 0; sp < splits; ++sp) {
        WorkItem u = items[i];
        u.key_begin = static_cast<int>(std::min<int64_t>(L, sp * chunk));
        u.key_end = static_cast<int>(std::min<int64_t>(L, (sp + 1) * chunk));
        u.partial = (i * splits + sp) * split_stride;
        units.push_back(u);
      }
  } else {
    units = items;
  }

  const ItemFn item_fn = select_item_fn(q.scalar_type(), static_cast<int>(D));
  const int64_t tile_floats = static_cast<int64_t>(kKeyTile) * std::max<int64_t>(D, kLanes);
  const int64_t row_floats = static_cast<int64_t>(kLanes) * D;
  float* partial_base = partials.data();
  at::parallel_for(0, static_cast<int64_t>(units.size()), 1, [&](int64_t begin, int64_t end) {
    std::vector<float> buffer(2 * row_floats + 3 * tile_floats + 64);
    float* base = buffer.data() + (64 - (reinterpret_cast<uintptr_t>(buffer.data()) / sizeof(float)) % 16) % 16;
    const Scratch s{base, base + row_floats, base + 2 * row_floats, base + 2 * row_floats + tile_floats,
                    base + 2 * row_floats + 2 * tile_floats};
    for (int64_t u = begin; u < end; ++u)
      item_fn(p, rows.data(), units[u], s, units[u].partial >= 0 ? partial_base + units[u].partial : nullptr);
  });
  if (splits > 1) {
    at::parallel_for(0, num_items, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const float* part = partial_base + i * splits * split_stride;
        switch (q.scalar_type()) {
          case at::kFloat: merge_partials<float>(p, rows.data(), items[i], splits, split_stride, part); break;
          case at::kHalf: merge_partials<c10::Half>(p, rows.data(), items[i], splits, split_stride, part); break;
          default: merge_partials<c10::BFloat16>(p, rows.data(), items[i], splits, split_stride, part); break;
        }
      }
    });
  }
  return out;
}

// ---- kv_append -------------------------------------------------------------------------------
void kv_append_cpu(const at::Tensor& k_cache, const at::Tensor& v_cache, const at::Tensor& k_new,
                   const at::Tensor& v_new, const at::Tensor& start) {
  const struct { const at::Tensor* t; const char* name; } all[] = {
      {&k_cache, "k_cache"}, {&v_cache, "v_cache"}, {&k_new, "k_new"}, {&v_new, "v_new"}};
  for (const auto& [t, name] : all) {
    TORCH_CHECK(t->device().is_cpu(), "kv_append: ", name, " must be a CPU tensor, got ", t->device());
    TORCH_CHECK(t->dim() == 4, "kv_append: ", name, " must be 4-D, got ", t->sizes());
    TORCH_CHECK(t->scalar_type() == k_cache.scalar_type(), "kv_append: ", name, " has dtype ",
                t->scalar_type(), " but k_cache has ", k_cache.scalar_type());
    TORCH_CHECK(t->size(-1) <= 1 || t->stride(-1) == 1, "kv_append: ", name,
                " must have stride 1 in its last (head_dim) dimension, got strides ", t->strides());
  }
  TORCH_CHECK(v_cache.sizes() == k_cache.sizes(), "kv_append: v_cache must have k_cache's shape ",
              k_cache.sizes(), ", got ", v_cache.sizes());
  TORCH_CHECK(v_new.sizes() == k_new.sizes(), "kv_append: v_new must have k_new's shape ", k_new.sizes(),
              ", got ", v_new.sizes());
  const int64_t B = k_cache.size(0), H = k_cache.size(1), L = k_cache.size(2), D = k_cache.size(3);
  const int64_t T = k_new.size(2);
  TORCH_CHECK(k_new.size(0) == B && k_new.size(1) == H && k_new.size(3) == D,
              "kv_append: k_new [B, H, T, D] must match k_cache [B, H, L, D] in B, H and D, got ",
              k_new.sizes(), " and ", k_cache.sizes());
  TORCH_CHECK(start.device().is_cpu(), "kv_append: start must be a CPU tensor, got ", start.device());
  TORCH_CHECK(start.dim() == 1 && start.size(0) == B, "kv_append: start must have shape [B] = [", B,
              "], got ", start.sizes());
  TORCH_CHECK(start.scalar_type() == at::kInt || start.scalar_type() == at::kLong,
              "kv_append: start must be int32 or int64, got ", start.scalar_type());
  const std::vector<int64_t> first = index_values(start);
  for (int64_t b = 0; b < B; ++b)
    TORCH_CHECK(first[b] >= 0 && first[b] + T <= L, "kv_append: start[", b, "] = ", first[b],
                " needs 0 <= start and start + T <= L (T=", T, ", L=", L, ")");
  if (T == 0 || B == 0 || H == 0 || D == 0) return;
  const int64_t bytes = D * k_cache.element_size();
  char* kc = static_cast<char*>(k_cache.data_ptr());
  char* vc = static_cast<char*>(v_cache.data_ptr());
  const char* kn = static_cast<const char*>(k_new.data_ptr());
  const char* vn = static_cast<const char*>(v_new.data_ptr());
  const int64_t es = k_cache.element_size();
  at::parallel_for(0, B * H, 16, [&](int64_t begin, int64_t end) {
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      for (int64_t t = 0; t < T; ++t) {
        const int64_t pos = first[b] + t;
        std::memcpy(kc + (b * k_cache.stride(0) + h * k_cache.stride(1) + pos * k_cache.stride(2)) * es,
                    kn + (b * k_new.stride(0) + h * k_new.stride(1) + t * k_new.stride(2)) * es, bytes);
        std::memcpy(vc + (b * v_cache.stride(0) + h * v_cache.stride(1) + pos * v_cache.stride(2)) * es,
                    vn + (b * v_new.stride(0) + h * v_new.stride(1) + t * v_new.stride(2)) * es, bytes);
      }
    }
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(pix2seq_fast, m) {
  m.def("decode_attention(Tensor q, Tensor k, Tensor v, Tensor lengths, Tensor? kv_index, bool causal, "
        "float scale) -> Tensor");
  m.def("kv_append(Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor k_new, Tensor v_new, Tensor start) -> ()");
}

TORCH_LIBRARY_IMPL(pix2seq_fast, CPU, m) {
  m.impl("decode_attention", &decode_attention_cpu);
  m.impl("kv_append", &kv_append_cpu);
}
