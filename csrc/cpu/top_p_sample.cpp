// top_p_sample on the CPU without a full sort (semantics: pix2seq_fast/ops/sampling.py).
//
// Per row: (1) one pass for max / validity; (2) one vectorised pass computing every weight
// exp(s - max) in exact fixed point; (3) the tokens that can hold the threshold are bucketed by their
// gap below the maximum (equal-width ranges; a massless tail beyond 28 nats) with a histogram of
// masses (and counts, for top-k); walking it from the top finds the one bucket holding the top-k
// boundary and the one holding the top-p boundary, and only that bucket's few tokens are sorted;
// (4) the inverse-CDF draw over the kept tokens in index order. With top-k, every token is bucketed;
// top-p alone buckets only the most probable tokens that together hold more than p (sample_heavy:
// usually a small share of the row). OpenMP over rows.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

// Lets GCC if-convert (and so vectorise) the branch-free selects of the weight/bucket loops.
#pragma GCC optimize("no-trapping-math")
#include "pix2seq_fast/top_p.h"
#include "cpu_isa.h"
#include "top_p_sample.h"

namespace {

using namespace p2s::top_p;

constexpr float kNoThreshold = -std::numeric_limits<float>::infinity();  // every token of the bucket
// The top-p fast path's first candidate set: the tokens within this many nats of the maximum.
constexpr float kNearGap = 5.0f;

struct RowSettings {
  float top_p;
  int64_t top_k;
  float temperature;
  float uniform;
  int rule;
  bool want_logprob;
  bool avx512;  // the AVX-512 weight pass (cpu_isa.h); otherwise the AVX2 / baseline clones
};

struct Candidate {
  float s;
  uint64_t weight;
};

// Buffers reused across the rows one thread handles.
struct Scratch {
  std::vector<float> x;         // the row as fp32 (fp16/bf16 inputs)
  std::vector<uint64_t> fixed;  // fixed-point weights exp(s - max s) * 2^40
  std::vector<uint16_t> bucket; // bucket of each token
  std::vector<uint32_t> count;  // per bucket
  std::vector<uint64_t> mass;   // per bucket, fixed point
  std::vector<Candidate> candidates;
  std::vector<int32_t> heavy_index;  // the top-p fast path's heavy tokens (indices into the row)
  std::vector<float> heavy_s;        // ... their tempered logits
};

struct RowStats {
  float max;
  float min_finite;
  bool bad;
};

typedef float Floats8 __attribute__((vector_size(32)));
typedef int32_t Ints8 __attribute__((vector_size(32)));

__attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
RowStats row_stats(const float* x, int64_t n) {
  const Floats8 float_max = Floats8{} + kFloatMax;
  Floats8 mx = Floats8{} - INFINITY, mn = Floats8{} + INFINITY;
  Ints8 bad = Ints8{};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    Floats8 v;
    std::memcpy(&v, x + i, sizeof(v));
    mx = v > mx ? v : mx;
    const Floats8 finite = v > -float_max ? v : mn;
    mn = finite < mn ? finite : mn;
    bad |= ~(v <= float_max) & ~(v < -float_max);  // NaN or +inf
  }
  RowStats stats{-INFINITY, INFINITY, false};
  for (int l = 0; l < 8; ++l) {
    stats.max = mx[l] > stats.max ? mx[l] : stats.max;
    stats.min_finite = mn[l] < stats.min_finite ? mn[l] : stats.min_finite;
    stats.bad = stats.bad || bad[l] != 0;
  }
  for (; i < n; ++i) {
    const float v = x[i];
    stats.max = v > stats.max ? v : stats.max;
    if (v > -kFloatMax && v < stats.min_finite) stats.min_finite = v;
    stats.bad = stats.bad || bad_logit(v);
  }
  return stats;
}

// to_fixed(w) for w in [0, 1] from two exact 20-bit halves: int32 conversions, which vectorise
// (a float -> int64 conversion does not before AVX-512).
inline uint64_t to_fixed_split(float w) {
  const float scaled = w * 1048576.0f;  // 2^20, exact
  const int32_t high = static_cast<int32_t>(scaled);
  const int32_t low = static_cast<int32_t>((scaled - static_cast<float>(high)) * 1048576.0f);  // exact
  return (static_cast<uint64_t>(static_cast<uint32_t>(high)) << 20) + static_cast<uint32_t>(low);
}

// The bucket of a token `gap` nats below the maximum: floor(gap * inv_width) up to last_regular, or
// `tail` beyond `range`. Branch-free, so the loops calling it vectorise.
inline __attribute__((always_inline)) uint16_t bucket_of(float gap, float range, float inv_width, int last_regular,
                                                         int tail) {
  const float scaled = gap * inv_width;
  const int b = static_cast<int>(scaled < static_cast<float>(last_regular) ? scaled : static_cast<float>(last_regular));
  return static_cast<uint16_t>(gap <= range ? b : tail);
}

// fixed[i] = to_fixed(exp(s_i - max_s)), bucket[i] = bucket_of(max_s - s_i).
template <bool kInt64Convert>
inline __attribute__((always_inline)) void weigh_and_bucket_body(const float* x, int64_t n, float temperature,
                                                                 float max_s, float range, float inv_width,
                                                                 int last_regular, int tail, uint64_t* fixed,
                                                                 uint16_t* bucket) {
  const bool unit = temperature == 1.f;  // x / 1 == x: the compiler unswitches the loop
  for (int64_t i = 0; i < n; ++i) {
    const float s = unit ? x[i] + 0.f : tempered(x[i], temperature);
    const float gap = max_s - s;
    const float w = exp_nonpositive(s - max_s);
    const uint64_t f = kInt64Convert ? to_fixed(w) : to_fixed_split(w);
    fixed[i] = f;
    bucket[i] = bucket_of(gap, range, inv_width, last_regular, tail);
  }
}

// AVX-512 converts float -> int64 in one instruction: the exact to_fixed, no split needed.
__attribute__((target("arch=x86-64-v4")))
void weigh_and_bucket_avx512(const float* x, int64_t n, float temperature, float max_s, float range,
                             float inv_width, int last_regular, int tail, uint64_t* fixed, uint16_t* bucket) {
  weigh_and_bucket_body<true>(x, n, temperature, max_s, range, inv_width, last_regular, tail, fixed, bucket);
}

__attribute__((target_clones("avx2", "default")))
void weigh_and_bucket_generic(const float* x, int64_t n, float temperature, float max_s, float range,
                              float inv_width, int last_regular, int tail, uint64_t* fixed, uint16_t* bucket) {
  weigh_and_bucket_body<false>(x, n, temperature, max_s, range, inv_width, last_regular, tail, fixed, bucket);
}

void weigh_and_bucket(bool avx512, const float* x, int64_t n, float temperature, float max_s, float range,
                      float inv_width, int last_regular, int tail, uint64_t* fixed, uint16_t* bucket) {
  (avx512 ? weigh_and_bucket_avx512 : weigh_and_bucket_generic)(x, n, temperature, max_s, range, inv_width,
                                                                last_regular, tail, fixed, bucket);
}

// bucket[i] alone, as weigh_and_bucket computes it, for a row whose weights are already in place.
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
void bucket_tokens(const float* x, int64_t n, float temperature, float max_s, float range, float inv_width,
                   int last_regular, int tail, uint16_t* bucket) {
  const bool unit = temperature == 1.f;
  for (int64_t i = 0; i < n; ++i) {
    const float gap = max_s - (unit ? x[i] + 0.f : tempered(x[i], temperature));
    bucket[i] = bucket_of(gap, range, inv_width, last_regular, tail);
  }
}

// fixed[i] = to_fixed(exp(s_i - max_s)); returns their sum (the row's total mass) and, in
// `near_mass`, the mass of the tokens with s >= near. No buckets: the top-p fast path buckets only
// the tokens that can hold its threshold.
template <bool kInt64Convert>
inline __attribute__((always_inline)) uint64_t weigh_and_total_body(const float* x, int64_t n, float temperature,
                                                                    float max_s, float near, uint64_t* fixed,
                                                                    uint64_t& near_mass) {
  const bool unit = temperature == 1.f;
  uint64_t total = 0, above = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float s = unit ? x[i] + 0.f : tempered(x[i], temperature);
    const float w = exp_nonpositive(s - max_s);
    const uint64_t f = kInt64Convert ? to_fixed(w) : to_fixed_split(w);
    fixed[i] = f;
    total += f;
    above += s >= near ? f : 0;
  }
  near_mass = above;
  return total;
}

__attribute__((target("arch=x86-64-v4")))
uint64_t weigh_and_total_avx512(const float* x, int64_t n, float temperature, float max_s, float near,
                                uint64_t* fixed, uint64_t& near_mass) {
  return weigh_and_total_body<true>(x, n, temperature, max_s, near, fixed, near_mass);
}

__attribute__((target_clones("avx2", "default")))
uint64_t weigh_and_total_generic(const float* x, int64_t n, float temperature, float max_s, float near,
                                 uint64_t* fixed, uint64_t& near_mass) {
  return weigh_and_total_body<false>(x, n, temperature, max_s, near, fixed, near_mass);
}

// How many tokens have s >= near (a comparison and a popcount per 16 tokens: cheap next to gathering
// them, so a large set is never gathered).
__attribute__((target("arch=x86-64-v4")))
int64_t count_near_avx512(const float* x, int64_t n, float temperature, float near) {
  const bool unit = temperature == 1.f;
  const __m512 threshold = _mm512_set1_ps(near), divisor = _mm512_set1_ps(temperature);
  const __m512 zero = _mm512_setzero_ps();
  int64_t count = 0, i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 v = _mm512_loadu_ps(x + i);
    v = _mm512_add_ps(unit ? v : _mm512_div_ps(v, divisor), zero);
    count += __builtin_popcount(_mm512_cmp_ps_mask(v, threshold, _CMP_GE_OQ));
  }
  for (; i < n; ++i) count += tempered(x[i], temperature) >= near;
  return count;
}

__attribute__((target_clones("avx2", "default")))
int64_t count_near_generic(const float* x, int64_t n, float temperature, float near) {
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) count += tempered(x[i], temperature) >= near;
  return count;
}

// The heavy tokens, in index order, into index / s (tempered logit) / weight (each with room for n
// entries); returns how many (tokens_weighing_avx512 stops before gathering more than `cap`). Two
// definitions, both upper sets in s: s >= near, or weight >= at_least.
void push_heavy(int64_t i, float s_i, uint64_t weight_i, int32_t* index, float* s, uint64_t* weight, int64_t& m) {
  index[m] = static_cast<int32_t>(i);
  s[m] = s_i;
  weight[m++] = weight_i;
}

// s >= near: few tokens, found from 16-token comparison masks (the branch on a mask is mostly not
// taken; AVX-512's compress instructions are slower here on Zen 4).
__attribute__((target("arch=x86-64-v4")))
int64_t tokens_near_avx512(const float* x, int64_t n, float temperature, float near, const uint64_t* fixed,
                           int32_t* index, float* s, uint64_t* weight) {
  const bool unit = temperature == 1.f;
  const __m512 threshold = _mm512_set1_ps(near), divisor = _mm512_set1_ps(temperature);
  const __m512 zero = _mm512_setzero_ps();
  int64_t m = 0, i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 v = _mm512_loadu_ps(x + i);
    v = _mm512_add_ps(unit ? v : _mm512_div_ps(v, divisor), zero);  // tempered(): x / t + 0
    for (uint32_t hits = _mm512_cmp_ps_mask(v, threshold, _CMP_GE_OQ); hits != 0; hits &= hits - 1) {
      const int64_t j = i + __builtin_ctz(hits);
      push_heavy(j, tempered(x[j], temperature), fixed[j], index, s, weight, m);
    }
  }
  for (; i < n; ++i) {
    const float s_i = tempered(x[i], temperature);
    if (s_i >= near) push_heavy(i, s_i, fixed[i], index, s, weight, m);
  }
  return m;
}

int64_t tokens_near_generic(const float* x, int64_t n, float temperature, float near, const uint64_t* fixed,
                            int32_t* index, float* s, uint64_t* weight) {
  int64_t m = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float s_i = tempered(x[i], temperature);
    if (s_i >= near) push_heavy(i, s_i, fixed[i], index, s, weight, m);
  }
  return m;
}

// weight >= at_least: possibly many tokens. The indices are compressed 16 at a time (no branch; the
// index array needs room for n + 16), then their logits and weights gathered.
__attribute__((target("arch=x86-64-v4")))
int64_t tokens_weighing_avx512(const float* x, int64_t n, float temperature, const uint64_t* fixed,
                               uint64_t at_least, int64_t cap, int32_t* index, float* s, uint64_t* weight) {
  const __m512i floor = _mm512_set1_epi64(static_cast<long long>(at_least));
  const __m512i sixteen = _mm512_set1_epi32(16);
  __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  int64_t m = 0, i = 0;
  for (; i + 16 <= n; i += 16, lanes = _mm512_add_epi32(lanes, sixteen)) {
    const __mmask16 low = _mm512_cmpge_epu64_mask(_mm512_loadu_si512(fixed + i), floor);
    const __mmask16 high = _mm512_cmpge_epu64_mask(_mm512_loadu_si512(fixed + i + 8), floor);
    const __mmask16 heavy = static_cast<__mmask16>(low | (high << 8));
    _mm512_storeu_si512(index + m, _mm512_maskz_compress_epi32(heavy, lanes));
    m += __builtin_popcount(heavy);
  }
  for (; i < n; ++i) {
    index[m] = static_cast<int32_t>(i);
    m += fixed[i] >= at_least;
  }
  if (m > cap) return m;
  for (int64_t j = 0; j < m; ++j) {
    s[j] = tempered(x[index[j]], temperature);
    weight[j] = fixed[index[j]];
  }
  return m;
}

// weight >= at_least: possibly many tokens; branch-free (a token is written, then kept or overwritten).
int64_t tokens_weighing(const float* x, int64_t n, float temperature, const uint64_t* fixed, uint64_t at_least,
                        int64_t /*cap*/, int32_t* index, float* s, uint64_t* weight) {
  int64_t m = 0;
  for (int64_t i = 0; i < n; ++i) {
    index[m] = static_cast<int32_t>(i);
    s[m] = tempered(x[i], temperature);
    weight[m] = fixed[i];
    m += fixed[i] >= at_least;
  }
  return m;
}

// sum_i exp(x_i - max_x), the untempered softmax normaliser.
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
double sum_exp(const float* x, int64_t n, float max_x) {
  constexpr int kLanes = 8, kChunk = 256;  // float lanes within a chunk, double across chunks
  double total = 0;
  int64_t i = 0;
  for (; i + kChunk <= n; i += kChunk) {
    float acc[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int j = 0; j < kChunk; j += kLanes)
      for (int l = 0; l < kLanes; ++l) acc[l] += exp_nonpositive(x[i + j + l] - max_x);
    for (int l = 0; l < kLanes; ++l) total += acc[l];
  }
  for (; i < n; ++i) total += exp_nonpositive(x[i] - max_x);
  return total;
}

int64_t first_index_of(const float* x, int64_t n, float value) {
  for (int64_t i = 0; i < n; ++i)
    if (x[i] == value) return i;
  return n - 1;
}

// Per-bucket masses (and counts, for top-k). Two interleaved mass tables halve the store-to-load
// chains when neighbouring tokens share a bucket.
void histogram(int64_t n, int buckets, bool with_counts, Scratch& scratch) {
  uint64_t* even = scratch.mass.data();
  uint64_t* odd = even + buckets;
  std::fill(even, even + 2 * buckets, uint64_t(0));
  const uint16_t* bucket = scratch.bucket.data();
  const uint64_t* fixed = scratch.fixed.data();
  int64_t i = 0;
  for (; i + 2 <= n; i += 2) {
    even[bucket[i]] += fixed[i];
    odd[bucket[i + 1]] += fixed[i + 1];
  }
  if (i < n) even[bucket[i]] += fixed[i];
  for (int b = 0; b < buckets; ++b) even[b] += odd[b];
  if (with_counts) {
    std::fill(scratch.count.begin(), scratch.count.begin() + buckets, 0u);
    for (i = 0; i < n; ++i) scratch.count[bucket[i]] += 1;
  }
}

// Whether any of bucket[begin, begin + 64) equals b: branch-free, so it vectorises.
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
bool chunk_has_bucket(const uint16_t* bucket, int b) {
  int hit = 0;
  for (int j = 0; j < 64; ++j) hit |= bucket[j] == b;
  return hit != 0;
}

// Tokens of bucket `b`, optionally only those with s >= at_least, as (s, fixed weight).
void collect_bucket(const float* x, int64_t n, float temperature, const Scratch& scratch, int b,
                    float at_least, std::vector<Candidate>& out) {
  out.clear();
  const uint16_t* bucket = scratch.bucket.data();
  int64_t begin = 0;
  for (; begin + 64 <= n; begin += 64) {
    if (!chunk_has_bucket(bucket + begin, b)) continue;
    for (int64_t i = begin; i < begin + 64; ++i) {
      if (bucket[i] != b) continue;
      const float s = tempered(x[i], temperature);
      if (s >= at_least) out.push_back({s, scratch.fixed[i]});
    }
  }
  for (int64_t i = begin; i < n; ++i) {
    if (bucket[i] != b) continue;
    const float s = tempered(x[i], temperature);
    if (s >= at_least) out.push_back({s, scratch.fixed[i]});
  }
}

struct KeptSet {
  int limit_bucket;    // buckets < limit are kept whole
  float limit_s;       // tokens of the limit bucket with s >= limit_s are kept
  uint64_t kept_mass;  // fixed point
};

// Top-k: the k-th largest tempered logit, found in its bucket; restricts the bucket's mass.
KeptSet apply_top_k(const float* x, int64_t n, const RowSettings& cfg, Scratch& scratch, int buckets,
                    uint64_t& limit_bucket_mass) {
  int64_t seen = 0;
  int b = 0;
  for (; b < buckets; ++b) {
    if (seen + scratch.count[b] >= static_cast<uint64_t>(cfg.top_k)) break;
    seen += scratch.count[b];
  }
  auto& cand = scratch.candidates;
  collect_bucket(x, n, cfg.temperature, scratch, b, kNoThreshold, cand);
  const int64_t need = cfg.top_k - seen;  // 1 <= need <= cand.size()
  std::nth_element(cand.begin(), cand.begin() + (need - 1), cand.end(),
                   [](const Candidate& a, const Candidate& c) { return a.s > c.s; });
  const float kth = cand[need - 1].s;
  uint64_t above = 0;
  for (int j = 0; j < b; ++j) above += scratch.mass[j];
  limit_bucket_mass = 0;
  for (const Candidate& c : cand)
    if (c.s >= kth) limit_bucket_mass += c.weight;
  return {b, kth, above + limit_bucket_mass};
}

// Top-p over the buckets up to `within.limit_bucket` (whose mass is `limit_bucket_mass`).
KeptSet apply_top_p(const float* x, int64_t n, const RowSettings& cfg, Scratch& scratch,
                    const KeptSet& within, uint64_t limit_bucket_mass, int buckets) {
  const double target = mass_target(cfg.top_p, within.kept_mass);
  const int last = std::min(within.limit_bucket, buckets - 1);
  uint64_t above = 0;
  int b = 0;
  for (; b <= last; ++b) {
    const uint64_t m = b == within.limit_bucket ? limit_bucket_mass : scratch.mass[b];
    if (!bucket_all_kept(cfg.rule, above, m, target)) break;
    above += m;
  }
  if (b > last) return within;

  auto& cand = scratch.candidates;
  collect_bucket(x, n, cfg.temperature, scratch, b, b == within.limit_bucket ? within.limit_s : kNoThreshold,
                 cand);
  std::sort(cand.begin(), cand.end(), [](const Candidate& a, const Candidate& c) { return a.s > c.s; });
  float limit_s = INFINITY;
  size_t j = 0;
  while (j < cand.size()) {
    size_t end = j;
    while (end < cand.size() && cand[end].s == cand[j].s) ++end;
    if (!group_kept(cfg.rule, above, cand[j].weight, target)) break;
    above += cand[j].weight * (end - j);
    limit_s = cand[j].s;
    j = end;
  }
  return {b, limit_s, above};
}

bool is_kept(const float* x, int64_t i, float temperature, const Scratch& scratch, const KeptSet& kept) {
  const int b = scratch.bucket[i];
  return b < kept.limit_bucket || (b == kept.limit_bucket && tempered(x[i], temperature) >= kept.limit_s);
}

// Kept mass of tokens [begin, end): branch-free, so it vectorises.
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
uint64_t kept_mass_of(const float* x, int64_t begin, int64_t end, float temperature, const uint16_t* bucket,
                      const uint64_t* fixed, int limit_bucket, float limit_s) {
  uint64_t sum = 0;
  const bool unit = temperature == 1.f;
  for (int64_t i = begin; i < end; ++i) {
    const int b = bucket[i];
    const float s = unit ? x[i] + 0.f : tempered(x[i], temperature);
    const bool kept = (b < limit_bucket) | ((b == limit_bucket) & (s >= limit_s));
    sum += kept ? fixed[i] : 0;
  }
  return sum;
}

// Inverse CDF over the kept tokens in index order: chunk sums first, then the one chunk token by token.
int64_t draw(const float* x, int64_t n, const RowSettings& cfg, const Scratch& scratch, const KeptSet& kept) {
  constexpr int64_t kChunk = 256;
  const uint64_t target = draw_target(cfg.uniform, kept.kept_mass);
  uint64_t running = 0;
  for (int64_t begin = 0; begin < n; begin += kChunk) {
    const int64_t end = std::min(n, begin + kChunk);
    const uint64_t chunk = kept_mass_of(x, begin, end, cfg.temperature, scratch.bucket.data(),
                                        scratch.fixed.data(), kept.limit_bucket, kept.limit_s);
    if (running + chunk <= target) {
      running += chunk;
      continue;
    }
    for (int64_t i = begin; i < end; ++i) {
      if (!is_kept(x, i, cfg.temperature, scratch, kept)) continue;
      running += scratch.fixed[i];
      if (running > target) return i;
    }
  }
  TORCH_CHECK(false, "top_p_sample: internal error, the draw ran past the kept mass");
}

// Regular (equal-width) buckets for n tokens: ~16 tokens per bucket, a power of two in [64, 2048].
constexpr int kMaxRegularBuckets = 2048;
constexpr int kMaxBuckets = kMaxRegularBuckets + 1;  // + the massless tail
int regular_buckets(int64_t n) {
  return static_cast<int>(
      std::clamp<int64_t>(int64_t(1) << (64 - __builtin_clzll(n / 16 + 1)), 64, kMaxRegularBuckets));
}

// The general path: every token bucketed by its gap below max_s (top-k, then top-p, then the draw);
// `weighed`: scratch.fixed holds the weights already. Returns the row's total mass.
uint64_t sample_bucketed(const float* x, int64_t n, const RowSettings& cfg, float max_s, float min_s, bool weighed,
                         Scratch& scratch, int64_t& id) {
  const int regular = regular_buckets(n);
  const int buckets = regular + 1;  // + the massless tail
  const float range = std::min(max_s - min_s, kMasslessGap);
  const float inv_width = range > 0 ? static_cast<float>(regular) / range : 0.f;
  if (weighed)
    bucket_tokens(x, n, cfg.temperature, max_s, kMasslessGap, inv_width, regular - 1, regular, scratch.bucket.data());
  else
    weigh_and_bucket(cfg.avx512, x, n, cfg.temperature, max_s, kMasslessGap, inv_width, regular - 1, regular,
                     scratch.fixed.data(), scratch.bucket.data());

  const bool top_k = cfg.top_k > 0 && cfg.top_k < n;
  histogram(n, buckets, top_k, scratch);
  uint64_t total = 0;
  for (int b = 0; b < buckets; ++b) total += scratch.mass[b];

  KeptSet kept{buckets, kNoThreshold, total};
  uint64_t limit_bucket_mass = 0;
  if (top_k) kept = apply_top_k(x, n, cfg, scratch, buckets, limit_bucket_mass);
  if (cfg.top_p < 1.f) kept = apply_top_p(x, n, cfg, scratch, kept, limit_bucket_mass, buckets);
  id = draw(x, n, cfg, scratch, kept);
  return total;
}

// Top-p without top-k, given every token's weight (scratch.fixed), their `total`, and the mass
// `near_mass` of the tokens with s >= near. When a set H of the most probable tokens (all tokens
// with s above some value) holds more than p * total, every token outside H has more than p * total
// strictly above it and both rules drop it: the threshold, and the draw, lie inside H, and only H is
// bucketed and searched. H is the tokens within kNearGap of the maximum when they hold that mass
// (peaked rows: a few tokens), else those weighing at least (1 - p) * total / n (the lighter ones
// weigh less than (1 - p) * total together). Only for rows with at most a quarter of their tokens
// near the maximum. Returns false, deciding nothing, when the second set is more than a quarter of
// the row (bucketing every token is then cheaper) or does not hold the mass (rounding at the
// margin); the caller then buckets every token.
bool sample_heavy(const float* x, int64_t n, const RowSettings& cfg, float max_s, float near, uint64_t total,
                  uint64_t near_mass, const Scratch& scratch, Scratch& heavy, int64_t& id) {
  const double target = mass_target(cfg.top_p, total);
  if (heavy.heavy_index.size() < static_cast<size_t>(n + 16)) {
    heavy.heavy_index.resize(n + 16);
    heavy.heavy_s.resize(n);
    heavy.fixed.resize(n);
    heavy.bucket.resize(n);
    heavy.count.resize(kMaxBuckets);
    heavy.mass.resize(2 * kMaxBuckets);
  }
  int32_t* index = heavy.heavy_index.data();
  float* s = heavy.heavy_s.data();
  uint64_t* weight = heavy.fixed.data();
  const int64_t cap = n / 4;
  int64_t m = 0;
  if (static_cast<double>(near_mass) > target) {  // the caller counted them: at most a quarter of the row
    m = (cfg.avx512 ? tokens_near_avx512 : tokens_near_generic)(x, n, cfg.temperature, near, scratch.fixed.data(),
                                                                index, s, weight);
  } else {
    const uint64_t at_least = std::max<uint64_t>(
        1, static_cast<uint64_t>((1.0 - static_cast<double>(cfg.top_p)) * static_cast<double>(total) /
                                 static_cast<double>(n)));
    m = (cfg.avx512 ? tokens_weighing_avx512 : tokens_weighing)(x, n, cfg.temperature, scratch.fixed.data(),
                                                                at_least, cap, index, s, weight);
    if (m > cap) return false;
    uint64_t heavy_mass = 0;
    for (int64_t j = 0; j < m; ++j) heavy_mass += weight[j];
    if (!(static_cast<double>(heavy_mass) > target)) return false;
  }
  float min_s = max_s;
  for (int64_t j = 0; j < m; ++j) min_s = s[j] < min_s ? s[j] : min_s;

  const int regular = regular_buckets(m);
  const float range = max_s - min_s;
  const float inv_width = range > 0 ? static_cast<float>(regular) / range : 0.f;
  for (int64_t j = 0; j < m; ++j) heavy.bucket[j] = bucket_of(max_s - s[j], range, inv_width, regular - 1, regular);
  const int buckets = regular + 1;  // the tail stays empty: every heavy token is within `range`
  histogram(m, buckets, false, heavy);
  RowSettings tempered_already = cfg;  // s is tempered: tempered(s, 1) == s
  tempered_already.temperature = 1.f;
  const KeptSet kept = apply_top_p(s, m, tempered_already, heavy, KeptSet{buckets, kNoThreshold, total}, 0, buckets);
  id = heavy.heavy_index[draw(s, m, tempered_already, heavy, kept)];
  return true;
}

void sample_row(const float* x, int64_t n, int64_t row, const RowSettings& cfg, Scratch& scratch, Scratch& heavy,
                int64_t& id, float& logprob) {
  const RowStats stats = row_stats(x, n);
  TORCH_CHECK(!stats.bad, "top_p_sample: logits row ", row, " contains NaN or +inf");
  TORCH_CHECK(stats.max > -kFloatMax, "top_p_sample: logits row ", row,
              " is entirely -inf (no token can be drawn)");
  double log_normaliser = 0;  // log sum exp(x - max x)

  if (is_greedy(cfg.top_p, cfg.temperature)) {
    id = first_index_of(x, n, stats.max);
    if (cfg.want_logprob) log_normaliser = std::log(sum_exp(x, n, stats.max));
  } else {
    const float max_s = tempered(stats.max, cfg.temperature);
    TORCH_CHECK(max_s <= kFloatMax, "top_p_sample: logits row ", row, " divided by temperature ", cfg.temperature,
                " overflows float32");
    const float min_s = tempered(stats.min_finite, cfg.temperature);
    uint64_t total = 0;
    const bool top_p_alone = !(cfg.top_k > 0 && cfg.top_k < n) && cfg.top_p < 1.f;
    bool weighed = false, decided = false;
    const float near = max_s - kNearGap;
    // rows with more than a quarter of their tokens near the maximum (flat rows) bucket every token
    if (top_p_alone && (cfg.avx512 ? count_near_avx512 : count_near_generic)(x, n, cfg.temperature, near) <= n / 4) {
      weighed = true;
      uint64_t near_mass = 0;
      total = (cfg.avx512 ? weigh_and_total_avx512 : weigh_and_total_generic)(x, n, cfg.temperature, max_s, near,
                                                                             scratch.fixed.data(), near_mass);
      decided = sample_heavy(x, n, cfg, max_s, near, total, near_mass, scratch, heavy, id);
    }
    if (!decided) total = sample_bucketed(x, n, cfg, max_s, min_s, weighed, scratch, id);

    if (cfg.want_logprob)
      log_normaliser = cfg.temperature == 1.f ? std::log(static_cast<double>(total) / kFixedOne)
                                              : std::log(sum_exp(x, n, stats.max));
  }
  logprob = cfg.want_logprob ? static_cast<float>(static_cast<double>(x[id]) - stats.max - log_normaliser)
                             : 0.f;
}

template <typename T>
const float* row_as_float(const T* row, int64_t n, Scratch& scratch) {
  if constexpr (std::is_same_v<T, float>) {
    return row;
  } else {
    for (int64_t i = 0; i < n; ++i) scratch.x[i] = static_cast<float>(row[i]);
    return scratch.x.data();
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> top_p_sample_rows(const at::Tensor& logits, RowValues<float> top_p,
                                                     RowValues<int64_t> top_k, RowValues<float> temperature,
                                                     const float* uniforms, int rule_id, bool return_logprobs) {
  TORCH_CHECK(logits.device().is_cpu(), "top_p_sample: logits must be a CPU tensor, got ", logits.device());
  TORCH_CHECK(logits.dim() == 2, "top_p_sample: logits must be 2-D [B, V], got ", logits.sizes());
  const auto dtype = logits.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
              "top_p_sample: logits dtype must be float32, float16 or bfloat16, got ", dtype);
  TORCH_CHECK(logits.is_contiguous(), "top_p_sample: logits must be contiguous");
  const int64_t batch = logits.size(0), vocab = logits.size(1);
  TORCH_CHECK(vocab >= 1 && vocab <= kMaxVocab, "top_p_sample: logits must have 1..", kMaxVocab,
              " tokens per row, got ", vocab);
  for (int64_t b = 0; b < batch; ++b) {
    TORCH_CHECK(top_p[b] <= 1.f, "top_p_sample: top_p must be <= 1 and not NaN, got ", top_p[b], " in row ", b);
    TORCH_CHECK(top_k[b] >= 0, "top_p_sample: top_k must be >= 0, got ", top_k[b], " in row ", b);
    TORCH_CHECK(temperature[b] >= 0.f && temperature[b] <= kFloatMax,
                "top_p_sample: temperature must be finite and >= 0, got ", temperature[b], " in row ", b);
    TORCH_CHECK(uniforms[b] >= 0.f && uniforms[b] < 1.f, "top_p_sample: uniforms must lie in [0, 1), got ",
                uniforms[b], " in row ", b);
  }

  const bool avx512 = p2s::selected_cpu_isa("top_p_sample") == p2s::CpuIsa::kAvx512;
  at::Tensor ids = at::empty({batch}, logits.options().dtype(at::kLong));
  at::Tensor logprobs = return_logprobs ? at::empty({batch}, logits.options().dtype(at::kFloat)) : at::Tensor();
  int64_t* out_ids = ids.data_ptr<int64_t>();
  float* out_lp = return_logprobs ? logprobs.data_ptr<float>() : nullptr;

  auto run = [&](auto* data) {
    // rows per task: at least ~32K logits, so small batches stay on the calling thread
    constexpr int64_t kLogitsPerTask = 32768;
    const int64_t rows_per_task = std::max<int64_t>(1, kLogitsPerTask / vocab);
    at::parallel_for(0, batch, rows_per_task, [&](int64_t begin, int64_t end) {
      static thread_local Scratch scratch, heavy;  // reused across calls: no page faults per step
      if (scratch.fixed.size() < static_cast<size_t>(vocab)) {
        scratch.fixed.resize(vocab);
        scratch.bucket.resize(vocab);
        scratch.count.resize(kMaxBuckets);
        scratch.mass.resize(2 * kMaxBuckets);
      }
      if (dtype != at::kFloat && scratch.x.size() < static_cast<size_t>(vocab)) scratch.x.resize(vocab);
      for (int64_t b = begin; b < end; ++b) {
        const RowSettings cfg{top_p[b], top_k[b], temperature[b], uniforms[b], rule_id, return_logprobs, avx512};
        const float* x = row_as_float(data + b * vocab, vocab, scratch);
        float lp = 0.f;
        sample_row(x, vocab, b, cfg, scratch, heavy, out_ids[b], lp);
        if (out_lp) out_lp[b] = lp;
      }
    });
  };
  if (dtype == at::kFloat) run(logits.data_ptr<float>());
  else if (dtype == at::kHalf) run(logits.data_ptr<c10::Half>());
  else run(logits.data_ptr<c10::BFloat16>());
  return {ids, logprobs};
}

int top_p_rule_id(const std::string& rule) {
  TORCH_CHECK(rule == "pix2seq" || rule == "standard",
              "top_p_sample: rule must be 'pix2seq' or 'standard', got '", rule, "'");
  return rule == "pix2seq" ? kPix2Seq : kStandard;
}

void check_top_p_row_tensor(const at::Tensor& t, const char* name, int64_t batch, c10::ScalarType dtype) {
  TORCH_CHECK(t.device().is_cpu(), "top_p_sample: ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.dim() == 1 && t.size(0) == batch, "top_p_sample: ", name, " must have shape [", batch,
              "], got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == dtype, "top_p_sample: ", name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), "top_p_sample: ", name, " must be contiguous");
}

namespace {

std::tuple<at::Tensor, at::Tensor> top_p_sample_cpu(const at::Tensor& logits, const at::Tensor& top_p,
                                                    const at::Tensor& top_k, const at::Tensor& temperature,
                                                    const at::Tensor& uniforms, std::string rule,
                                                    bool return_logprobs) {
  const int rule_id = top_p_rule_id(rule);
  TORCH_CHECK(logits.dim() == 2, "top_p_sample: logits must be 2-D [B, V], got ", logits.sizes());
  const int64_t batch = logits.size(0);
  check_top_p_row_tensor(top_p, "top_p", batch, at::kFloat);
  check_top_p_row_tensor(top_k, "top_k", batch, at::kLong);
  check_top_p_row_tensor(temperature, "temperature", batch, at::kFloat);
  check_top_p_row_tensor(uniforms, "uniforms", batch, at::kFloat);
  auto [ids, logprobs] = top_p_sample_rows(logits, RowValues<float>::of(top_p.data_ptr<float>()),
                                           RowValues<int64_t>::of(top_k.data_ptr<int64_t>()),
                                           RowValues<float>::of(temperature.data_ptr<float>()),
                                           uniforms.data_ptr<float>(), rule_id, return_logprobs);
  if (!logprobs.defined()) logprobs = at::empty({0}, logits.options().dtype(at::kFloat));
  return {ids, logprobs};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(pix2seq_fast, m) {
  m.def("top_p_sample(Tensor logits, Tensor top_p, Tensor top_k, Tensor temperature, Tensor uniforms, "
        "str rule, bool return_logprobs) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pix2seq_fast, CPU, m) { m.impl("top_p_sample", &top_p_sample_cpu); }
