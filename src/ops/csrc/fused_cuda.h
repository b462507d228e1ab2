// The op library's CUDA updates through the core's fused kernel (one NVRTC-compiled launch over
// every tensor of a call: src/core/src/shim/cuda.rs, run from Rust through
// `asymvalley_op_cuda_fused`, which keeps the plans, so repeated updates of one model upload no
// table). Behind a switch, OFF by default: `ASYMVALLEY_OP_FUSED_CUDA=1` (read once per process, at
// the first CUDA update; src/ops/src/switch.rs parses it) or `torch.ops.asymvalley._set_fused_cuda`.
//
// Each function returns false, having written nothing, when the path is off or some tensor of
// the call cannot take the kernel (not all CUDA and strided with storage, a negative or conjugate
// view, a dtype the kernel does not read; then, in Rust: not contiguous, mixed devices, a half
// average, no driver or NVRTC); the caller then runs the `_foreach` path, with the same values.
// Callers validate first (validate.h).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace asymvalley::fused_cuda {

// Whether the path is on (the variable, or the last `set_enabled`). Throws, naming the variable
// and its value, when the variable holds neither an on nor an off value.
bool enabled();
void set_enabled(bool on);

// avg[t] <- lerp(avg[t], params[t], w) (params[t] converted, when `copy`), one launch. The weight
// is `weight`, or, when `device_weight` is given (a 0-dim float64 tensor on the pairs' device),
// read by the kernel from it: a device counter's weight, with no host read.
bool lerp(at::TensorList avg, at::TensorList params, bool copy, double weight, const at::Tensor* device_weight);

// out[t] <- avg[t] + beta * (avg[t] - anchor[t]), when every out[t] is anchor[t] itself and no out
// shares memory with anything else it reads (fused_cpu.h's rule for the CPU pass).
bool bias(at::TensorList out, at::TensorList avg, at::TensorList anchor, double beta);

// Launches made, and plans built, by this process (`torch.ops.asymvalley._fused_cuda_stats()`).
int64_t launches();
int64_t builds();

}  // namespace asymvalley::fused_cuda
