// The CPU top_p_sample kernel's entry, shared by the dispatcher op (top_p_sample.cpp) and the direct
// Python binding for CPU tensors (top_p_sample_python.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <tuple>

// A per-row setting: one value per row (`rows`, length B) or the same value for every row.
template <typename T>
struct RowValues {
  const T* rows;
  T all;
  static RowValues of(const T* rows) { return {rows, T{}}; }
  static RowValues same(T value) { return {nullptr, value}; }
  T operator[](int64_t b) const { return rows ? rows[b] : all; }
};

// Checks the logits and every row's settings (TORCH_CHECK naming the argument), then samples one
// token per row of `logits` [B, V] (fp32/fp16/bf16, contiguous). `uniforms`: B floats in [0, 1).
// Returns (ids int64 [B], logprobs fp32 [B], or an undefined tensor without return_logprobs).
std::tuple<at::Tensor, at::Tensor> top_p_sample_rows(const at::Tensor& logits, RowValues<float> top_p,
                                                     RowValues<int64_t> top_k, RowValues<float> temperature,
                                                     const float* uniforms, int rule_id, bool return_logprobs);

// "pix2seq" -> 0, "standard" -> 1; anything else fails a TORCH_CHECK.
int top_p_rule_id(const std::string& rule);

// TORCH_CHECK that a per-row settings tensor is a contiguous CPU [batch] tensor of `dtype`.
void check_top_p_row_tensor(const at::Tensor& t, const char* name, int64_t batch, c10::ScalarType dtype);
