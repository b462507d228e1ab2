// Fused multi-tensor kernels that tch does not bind (its generator skips `_foreach_*`).
//
// Every function is `extern "C"`, takes borrowed `at::Tensor*` handles (tch's `C_tensor`), never
// lets a C++ exception escape (it would abort the Rust caller), and returns NULL on success or a
// heap-allocated message that the caller frees with `asymvalley_free_error`.
#include <ATen/ATen.h>

#include <vector>

#include "foreach_kernels.h"
#include "guard.h"

namespace {

using asymvalley::ffi::guarded;

std::vector<at::Tensor> borrow(at::Tensor** handles, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(*handles[i]);
  return out;
}

}  // namespace

extern "C" {

void asymvalley_free_error(char* msg) { std::free(msg); }

// avg[i] <- avg[i] + weight * (src[i] - avg[i]), one fused launch per (device, dtype) group.
char* asymvalley_foreach_lerp_(at::Tensor** avg, at::Tensor** src, size_t n, double weight) {
  return guarded([&] {
    auto a = borrow(avg, n);
    auto s = asymvalley::kernels::in_dtype_of(a, borrow(src, n));
    at::_foreach_lerp_(a, s, at::Scalar(weight));
  });
}

// dst[i] <- src[i] (with dtype conversion), fused.
char* asymvalley_foreach_copy_(at::Tensor** dst, at::Tensor** src, size_t n) {
  return guarded([&] {
    auto d = borrow(dst, n);
    auto s = borrow(src, n);
    at::_foreach_copy_(d, s, /*non_blocking=*/false);
  });
}

// out[i] <- avg[i] + beta * (avg[i] - anchor[i]), in avg's dtype (foreach_kernels.h), fused.
char* asymvalley_foreach_bias_toward_flat(at::Tensor** out, at::Tensor** avg, at::Tensor** anchor,
                                          size_t n, double beta) {
  return guarded([&] {
    auto o = borrow(out, n);
    auto biased = asymvalley::kernels::biased(borrow(avg, n), borrow(anchor, n), beta);
    at::_foreach_copy_(o, biased, false);
  });
}

}  // extern "C"
