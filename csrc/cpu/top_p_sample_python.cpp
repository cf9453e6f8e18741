// pix2seq_fast._C.top_p_sample_cpu: the CPU kernel called straight from Python, without the
// dispatcher's ~3 us per call or a tensor per setting. Settings may be numbers (the same for every
// row) or [B] tensors; the uniforms are drawn here from the generator exactly as torch.rand(B,
// generator=...) draws them for the other backends (tests/test_top_p_sample.py checks both the
// values and the generator's state). Errors are raised as ValueError.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/DistributionsHelper.h>
#include <torch/csrc/utils/pybind.h>

#include <limits>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include "top_p_sample.h"

namespace {

namespace py = pybind11;

// Smaller calls (a few microseconds) keep the GIL: releasing and taking it back costs more than
// another Python thread could use in that time.
constexpr int64_t kLogitsWithoutGil = 16384;

// A number (Python float -> double, int -> int64) for every row, or a [B] tensor of T.
template <typename T, typename Number>
RowValues<T> row_values(const std::variant<at::Tensor, Number>& setting, const char* name, int64_t batch,
                        c10::ScalarType dtype) {
  if (const auto* number = std::get_if<Number>(&setting)) return RowValues<T>::same(static_cast<T>(*number));
  const at::Tensor& rows = std::get<at::Tensor>(setting);
  check_top_p_row_tensor(rows, name, batch, dtype);
  return RowValues<T>::of(rows.data_ptr<T>());
}

// The number settings' values, checked before their narrowing to the kernel's float (the messages
// of sampling.py's checks: this entry is also the Python fast path for number settings).
void check_number_settings(const std::variant<at::Tensor, double>& top_p, const std::variant<at::Tensor, int64_t>& top_k,
                           const std::variant<at::Tensor, double>& temperature) {
  if (const double* p = std::get_if<double>(&top_p))
    TORCH_CHECK(*p <= 1.0, "top_p_sample: top_p must be <= 1 (<= 0 means greedy), got ", *p);
  if (const int64_t* k = std::get_if<int64_t>(&top_k))
    TORCH_CHECK(*k >= 0, "top_p_sample: top_k must be >= 0 (0 disables it), got ", *k);
  if (const double* t = std::get_if<double>(&temperature))
    TORCH_CHECK(*t >= 0.0 && *t < std::numeric_limits<double>::infinity(),
                "top_p_sample: temperature must be finite and >= 0 (0 means greedy), got ", *t);
}

// torch.rand(batch, generator=generator) of float32 on the CPU, without a tensor: ATen's CPU uniform
// kernel draws one 24-bit uniform_real_distribution<float> sample per element in order, under the
// generator's lock, and maps a value rounded up to 1 to 0.
std::vector<float> draw_uniforms(int64_t batch, const std::optional<at::Generator>& generator) {
  auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(generator, at::detail::getDefaultCPUGenerator());
  std::vector<float> uniforms(batch);
  std::lock_guard<std::mutex> lock(gen->mutex_);
  at::uniform_real_distribution<float> uniform(0.f, 1.f);
  for (float& u : uniforms) {
    const float value = uniform(gen);
    u = value == 1.f ? 0.f : value;
  }
  return uniforms;
}

py::tuple top_p_sample_cpu(const at::Tensor& logits, const std::variant<at::Tensor, double>& top_p,
                           const std::variant<at::Tensor, int64_t>& top_k,
                           const std::variant<at::Tensor, double>& temperature,
                           const std::optional<at::Generator>& generator, const std::string& rule,
                           bool return_logprobs) {
  try {
    const int rule_id = top_p_rule_id(rule);
    TORCH_CHECK(logits.dim() == 2, "top_p_sample: logits must be 2-D [B, V], got ", logits.sizes());
    TORCH_CHECK(logits.device().is_cpu(), "top_p_sample: logits must be a CPU tensor, got ", logits.device());
    TORCH_CHECK(logits.size(1) >= 1, "top_p_sample: logits must have at least one token per row, got shape ",
                logits.sizes());
    TORCH_CHECK(!generator.has_value() || generator->device().is_cpu(), "top_p_sample: generator is on ",
                generator.has_value() ? generator->device() : c10::Device(c10::kCPU), " but logits are on cpu");
    check_number_settings(top_p, top_k, temperature);
    const int64_t batch = logits.size(0);
    const RowValues<float> p = row_values<float>(top_p, "top_p", batch, at::kFloat);
    const RowValues<int64_t> k = row_values<int64_t>(top_k, "top_k", batch, at::kLong);
    const RowValues<float> t = row_values<float>(temperature, "temperature", batch, at::kFloat);
    const std::vector<float> uniforms = draw_uniforms(batch, generator);
    std::tuple<at::Tensor, at::Tensor> out;
    if (logits.numel() < kLogitsWithoutGil) {
      out = top_p_sample_rows(logits.contiguous(), p, k, t, uniforms.data(), rule_id, return_logprobs);
    } else {
      py::gil_scoped_release no_gil;
      out = top_p_sample_rows(logits.contiguous(), p, k, t, uniforms.data(), rule_id, return_logprobs);
    }
    if (!return_logprobs) return py::make_tuple(std::get<0>(out), py::none());
    return py::make_tuple(std::get<0>(out), std::get<1>(out));
  } catch (const c10::Error& error) {
    throw py::value_error(error.what_without_backtrace());
  }
}

}  // namespace

void bind_top_p_sample_cpu(py::module_& m) {
  m.def("top_p_sample_cpu", &top_p_sample_cpu, py::arg("logits"), py::arg("top_p"), py::arg("top_k"),
        py::arg("temperature"), py::arg("generator"), py::arg("rule"), py::arg("return_logprobs"),
        "top_p_sample's CPU kernel for CPU tensors (see pix2seq_fast/ops/sampling.py); settings are "
        "numbers or [B] tensors (float32, int64, float32). Returns (ids int64 [B], logprobs fp32 [B] or None).");
}
