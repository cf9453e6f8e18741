// The Python module pix2seq_fast._C. The ops themselves register with the torch dispatcher from
// their own translation units (TORCH_LIBRARY_FRAGMENT / TORCH_LIBRARY_IMPL in csrc/cpu and
// csrc/cuda); this file reports how the module was built and adds the direct Python entries defined
// next to their kernels. It deliberately includes no torch
// header (torch/extension.h alone costs ~19 s to parse).
#include <omp.h>
#include <pybind11/pybind11.h>

#include <string>

void bind_top_p_sample_cpu(pybind11::module_& m);  // csrc/cpu/top_p_sample_python.cpp

#ifndef P2S_WITH_CUDA
#define P2S_WITH_CUDA 0
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "pix2seq_fast compiled kernels (ops are under torch.ops.pix2seq_fast)";
  m.attr("cuda_compiled") = static_cast<bool>(P2S_WITH_CUDA);
  m.attr("cuda_archs") = std::string(P2S_CUDA_ARCHS);
  m.attr("torch_version") = std::string(P2S_TORCH_VERSION);
  m.def("omp_max_threads", []() { return omp_get_max_threads(); },
        "Threads the CPU kernels' OpenMP loops use");
  bind_top_p_sample_cpu(m);
}
