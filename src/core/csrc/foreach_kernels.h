// The multi-tensor kernels that the library's shim (foreach.cpp) and the op library
// (src/ops/csrc/kernels.cpp) share: one dtype policy and one formula for the flat-side bias.
#pragma once

#include <ATen/ATen.h>

#include <utility>
#include <vector>

namespace asymvalley::kernels {

// `src` converted to the dtype of `like` where they differ (a bf16 model into an fp32 average:
// `_foreach_lerp_` needs `end` in the dtype of `self`). The converted tensors are fresh ones
// filled by ONE `_foreach_copy_` (a fused, dtype-converting launch on CUDA), not one `.to()`
// launch per tensor; the others are passed through as they are.
inline std::vector<at::Tensor> in_dtype_of(at::TensorList like, std::vector<at::Tensor> src) {
  std::vector<at::Tensor> from, into;
  std::vector<size_t> where;
  for (size_t i = 0; i < src.size(); ++i) {
    if (src[i].scalar_type() != like[i].scalar_type()) {
      from.push_back(src[i]);
      into.push_back(at::empty_like(src[i], src[i].options().dtype(like[i].scalar_type())));
      where.push_back(i);
    }
  }
  if (!from.empty()) {
    at::_foreach_copy_(into, from, /*non_blocking=*/false);
    for (size_t k = 0; k < where.size(); ++k) src[where[k]] = std::move(into[k]);
  }
  return src;
}

// The flat-side-biased average `avg + beta * (avg - anchor)`, computed in avg's dtype (the fp32
// master of a half model) into fresh tensors, so the caller may write it over `avg` or `anchor`.
// `anchor` is converted to avg's dtypes first. Subtracting, then scaling by beta, keeps beta
// exact (a lerp with weight 1 + beta would round 1 + beta first).
inline std::vector<at::Tensor> biased(at::TensorList avg, at::TensorList anchor, double beta) {
  auto c = in_dtype_of(avg, std::vector<at::Tensor>(anchor.begin(), anchor.end()));
  auto diff = at::_foreach_sub(avg, c);
  return at::_foreach_add(avg, diff, at::Scalar(beta));
}

}  // namespace asymvalley::kernels
