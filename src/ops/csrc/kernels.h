// The op kernels (kernels.cpp, meta.cpp) and the update step the Averager class shares with them.
//
// Never include torch/extension.h in the op library: it pulls in pybind11 and links libpython, which a
// library loaded by torch.ops.load_library (and by Rust, with no Python) must not need.
#pragma once

#include <ATen/ATen.h>

#include "fused_cpu.h"

namespace asymvalley {

// avg <- lerp(avg, params, weight) with a host weight, or a copy when `copy`: one fused pass on
// the CPU (`layout` is the caller's, refitted to the sizes), else one foreach call per (device,
// dtype) group (one call for a uniform list). Callers validate first.
void lerp_host(at::TensorList avg, at::TensorList params, bool copy, double weight, fused::HostLayout& layout);

void swa_update_(at::TensorList avg, at::TensorList params, const at::Tensor& n_averaged);
void ema_update_(at::TensorList avg, at::TensorList params, const at::Tensor& n_averaged, double decay);
void bias_toward_flat_(at::TensorList out, at::TensorList avg, at::TensorList anchor, double beta);

// The Meta kernels (meta.cpp): the same validation and no work, so fake tensors under
// torch.compile and opcheck see the same refusals.
void swa_update_meta(at::TensorList avg, at::TensorList params, const at::Tensor& n_averaged);
void ema_update_meta(at::TensorList avg, at::TensorList params, const at::Tensor& n_averaged, double decay);
void bias_toward_flat_meta(at::TensorList out, at::TensorList avg, at::TensorList anchor, double beta);

}  // namespace asymvalley
