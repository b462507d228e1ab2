// Fused multi-tensor kernels that tch does not bind (its generator skips `_foreach_*`).
//
// Every function is `extern "C"`, takes borrowed `at::Tensor*` handles (tch's `C_tensor`), never
// lets a C++ exception escape (it would abort the Rust caller), and returns NULL on success or a
// heap-allocated message that the caller frees with `asymvalley_free_error`.
#include <ATen/ATen.h>

#include <vector>

#include "guard.h"

namespace {

using asymvalley::ffi::guarded;

std::vector<at::Tensor> borrow(at::Tensor** handles, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(*handles[i]);
  return out;
}

// `_foreach_lerp_` needs `end` in the dtype of `self`; a bf16/fp16 model feeding an fp32
// average is converted here (one extra read of the half-precision source, no extra write).
std::vector<at::Tensor> in_dtype_of(const std::vector<at::Tensor>& like, std::vector<at::Tensor> src) {
  for (size_t i = 0; i < src.size(); ++i) {
    if (src[i].scalar_type() != like[i].scalar_type()) src[i] = src[i].to(like[i].scalar_type());
  }
  return src;
}


}  // namespace

extern "C" {

void asymvalley_free_error(char* msg) { std::free(msg); }

// avg[i] <- avg[i] + weight * (src[i] - avg[i]), one fused launch per (device, dtype) group.
char* asymvalley_foreach_lerp_(at::Tensor** avg, at::Tensor** src, size_t n, double weight) {
  return guarded([&] {
    auto a = borrow(avg, n);
    auto s = in_dtype_of(a, borrow(src, n));
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

// out[i] <- avg[i] + beta * (avg[i] - anchor[i])  ==  lerp(anchor, avg, 1 + beta), fused.
char* asymvalley_foreach_bias_toward_flat(at::Tensor** out, at::Tensor** avg, at::Tensor** anchor,
                                          size_t n, double beta) {
  return guarded([&] {
    auto o = borrow(out, n);
    auto a = borrow(avg, n);
    auto c = in_dtype_of(a, borrow(anchor, n));
    // Computed in the dtype of the average (fp32 for half models), then written into `out`.
    auto diff = at::_foreach_sub(a, c);
    auto biased = at::_foreach_add(a, diff, at::Scalar(beta));
    at::_foreach_copy_(o, biased, false);
  });
}

}  // extern "C"
