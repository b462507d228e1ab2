// The kernels of `torch.ops.asymvalley.{swa_update_, ema_update_, bias_toward_flat_}` (their
// schemas are in register.cpp).
//
// CPU: one fused pass over every tensor of the call (fused_cpu.h: the core's `av_cpu_apply`, the
// host form of the CUDA kernel's indexing), each parameter read in its own dtype, so a bf16 model
// into an fp32 average is neither converted first nor split into groups. Its values equal
// `torch.lerp` / `Tensor.copy_` / `torch.add(alpha=)` bitwise (src/core/csrc/fused/cpu.cpp says
// why). A call with a tensor the pass cannot address as given (a non-contiguous but valid view,
// a half-precision average, a `_neg_view`, a bias `out` sharing memory with an input other than
// its own anchor) takes the `_foreach` path below instead, with the same values; the tests count
// fused passes (`torch.ops.asymvalley._fused_cpu_passes()`) to hold each case to its path.
//
// CUDA (and any other device): `at::_foreach_*`, one call per (device, dtype) group, so an update
// is a handful of fused launches. Behind a switch, OFF by default, the core's fused CUDA kernel
// instead (fused_cuda.h: ONE NVRTC-compiled launch over every tensor, each read in its own dtype,
// the plan's device tables cached in Rust per fingerprint of the call): set
// `ASYMVALLEY_OP_FUSED_CUDA=1` before the first CUDA update of the process (read once; `0`/unset
// is off, any other value is refused by name), or call `torch.ops.asymvalley._set_fused_cuda(True)`.
// A call the kernel cannot take (non-contiguous, mixed devices, a half average, no driver or
// NVRTC) takes the `_foreach` path, with the same values; `_fused_cuda_launches()` counts the
// launches. It stays off until a GPU run (benches/gpu/run.sh measures both settings) checks it.

// Counter and weight, without a device sync:
// - `n_averaged` on the CPU (what `asymvalley.AveragedModel` passes: a host-side counter): it is
//   read directly (a CPU read, no device sync) and the weight is a host double, which the fused
//   pass (CPU) or `_foreach_lerp_`'s fused fast path (CUDA) takes.
// - `n_averaged` on the device (TorchScript users mirroring `AveragedModel.n_averaged`): never
//   read on the host. The weight is a 0-dim device tensor (float64; with the switch on, the fused
//   kernel reads it from device memory when it runs) (`1/(n+1)` for SWA, `where(n == 0, 1,
//   1 - decay)` for EMA) fed to `_foreach_lerp_`'s tensor-weight overload; weight 1 is the copy
//   of the first call (`lerp(a, b, 1) == b` exactly for finite `a`). That overload loops per
//   tensor on CUDA: it trades launches for the absence of a sync.
//
// Validation: every kernel first calls the one validator (validate.h), which reads only
// TensorImpl fields and words every error; nothing is written before it accepts.
//
// Mixed dtypes on the `_foreach` path (a bf16 model into an fp32 average): ATen has no
// mixed-dtype `_foreach_lerp_` (`lerp` requires equal dtypes; a mixed foreach list takes the
// per-tensor slow path), so the params are converted first: into fresh fp32 tensors by ONE
// `_foreach_copy_` (its CUDA fast path converts dtypes in a multi-tensor launch), not one `.to()`
// launch per tensor. The traffic is 18 B/param (read 2 + write 4 for the conversion, then read
// 4 + 4, write 4) against the 10 B/param of the fused pass.
#include "kernels.h"

#include <ATen/core/grad_mode.h>

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "foreach_kernels.h"
#include "fused_cpu.h"
#include "fused_cuda.h"
#include "rust_ffi.h"
#include "validate.h"

namespace asymvalley {
namespace {

// Indices of `avg` grouped by (device, dtype), in first-appearance order.
std::vector<std::vector<size_t>> groups_of(at::TensorList avg) {
  std::vector<std::vector<size_t>> out;
  std::vector<std::pair<at::Device, at::ScalarType>> keys;
  for (size_t i = 0; i < avg.size(); ++i) {
    const auto key = std::make_pair(avg[i].device(), avg[i].scalar_type());
    size_t k = 0;
    while (k < keys.size() && keys[k] != key) ++k;
    if (k == keys.size()) {
      keys.push_back(key);
      out.emplace_back();
    }
    out[k].push_back(i);
  }
  return out;
}

// Whether every avg shares avg[0]'s device and dtype and every param has that dtype too: the
// common case, served by one foreach call on the lists as given (no regrouping, no copies).
bool uniform(at::TensorList avg, at::TensorList params) {
  const auto dev = avg[0].device();
  const auto dt = avg[0].scalar_type();
  for (size_t i = 0; i < avg.size(); ++i) {
    if (avg[i].scalar_type() != dt || params[i].scalar_type() != dt || avg[i].device() != dev) return false;
  }
  return true;
}

std::vector<at::Tensor> pick(at::TensorList ts, const std::vector<size_t>& idx) {
  std::vector<at::Tensor> out;
  out.reserve(idx.size());
  for (size_t i : idx) out.push_back(ts[i]);
  return out;
}

// avg <- lerp(avg, params, w) with a 0-dim device weight tensor (no host read).
void lerp_device(at::TensorList avg, at::TensorList params, const at::Tensor& weight) {
  for (const auto& g : groups_of(avg)) {
    auto a = pick(avg, g);
    auto p = kernels::in_dtype_of(a, pick(params, g));
    auto w = weight.to(a[0].scalar_type());
    std::vector<at::Tensor> ws(a.size(), w);
    at::_foreach_lerp_(a, p, ws);
  }
}

// The free ops' layout: it depends only on the tensors' sizes, which `fit` compares at every
// call (rebuilding on any difference); the pointers are read at every call.
fused::HostLayout& op_layout() {
  thread_local fused::HostLayout layout;
  return layout;
}

}  // namespace

void lerp_host(at::TensorList avg, at::TensorList params, bool copy, double weight, fused::HostLayout& layout) {
  if (fused::lerp(avg, params, copy, weight, layout)) return;
  if (fused_cuda::lerp(avg, params, copy, weight, nullptr)) return;
  if (copy) {  // `_foreach_copy_` converts dtypes and crosses devices itself: one call
    at::_foreach_copy_(avg, params, /*non_blocking=*/false);
    return;
  }
  if (uniform(avg, params)) {
    at::_foreach_lerp_(avg, params, at::Scalar(weight));
    return;
  }
  for (const auto& g : groups_of(avg)) {
    auto a = pick(avg, g);
    at::_foreach_lerp_(a, kernels::in_dtype_of(a, pick(params, g)), at::Scalar(weight));
  }
}

// swa_update_(avg, params, n_averaged): equal-weight running mean, first call copies.
void swa_update_(at::TensorList avg, at::TensorList params, const at::Tensor& n_averaged) {
  check::update_call("swa_update_", avg, params, &n_averaged, std::nullopt);
  at::NoGradGuard no_grad;
  if (n_averaged.device().is_cpu()) {
    const int64_t n = n_averaged.item<int64_t>();  // a CPU read: no device sync
    lerp_host(avg, params, n == 0, asymvalley_op_swa_weight(n), op_layout());
  } else {
    // 1/(n+1) computed in float64 on the device (cast to each group's dtype); n = 0 gives 1 (the copy).
    const auto w = at::reciprocal((n_averaged + 1).to(at::kDouble));
    if (!fused_cuda::lerp(avg, params, /*copy=*/false, 0.0, &w)) lerp_device(avg, params, w);
  }
  n_averaged.add_(1);
}

// ema_update_(avg, params, n_averaged, decay): avg <- decay*avg + (1-decay)*params; first call copies.
void ema_update_(at::TensorList avg, at::TensorList params, const at::Tensor& n_averaged,
                 double decay) {
  check::update_call("ema_update_", avg, params, &n_averaged, decay);
  at::NoGradGuard no_grad;
  if (n_averaged.device().is_cpu()) {
    const int64_t n = n_averaged.item<int64_t>();
    lerp_host(avg, params, n == 0, 1.0 - decay, op_layout());
  } else {
    auto opts = n_averaged.options().dtype(at::kDouble);
    auto w = at::where(n_averaged.eq(0), at::ones({}, opts), at::full({}, 1.0 - decay, opts));
    if (!fused_cuda::lerp(avg, params, /*copy=*/false, 0.0, &w)) lerp_device(avg, params, w);
  }
  n_averaged.add_(1);
}

// bias_toward_flat_(out, avg, anchor, beta): out <- avg + beta*(avg - anchor), the formula of
// the library's shim (foreach_kernels.h), computed in avg's dtype. On the `_foreach` path every
// (device, dtype) group is computed before any `out` is written: `out` may alias `avg` or
// `anchor`, also of another group (the fused pass takes only an `out` that is its own anchor).
void bias_toward_flat_(at::TensorList out, at::TensorList avg, at::TensorList anchor, double beta) {
  check::bias_call(out, avg, anchor, beta);
  at::NoGradGuard no_grad;
  if (fused::bias(out, avg, anchor, beta, op_layout())) return;
  if (fused_cuda::bias(out, avg, anchor, beta)) return;
  const auto groups = groups_of(avg);
  std::vector<std::vector<at::Tensor>> results;
  results.reserve(groups.size());
  for (const auto& g : groups) results.push_back(kernels::biased(pick(avg, g), pick(anchor, g), beta));
  for (size_t k = 0; k < groups.size(); ++k) {
    auto o = pick(out, groups[k]);
    at::_foreach_copy_(o, results[k], /*non_blocking=*/false);
  }
}

}  // namespace asymvalley
