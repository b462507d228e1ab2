// What the op library's C++ calls in its Rust half (src/ops/src/ffi.rs). The shared types come
// from `asymvalley_abi.h`, which build.rs writes from src/ops/src/abi.rs.
#pragma once

#include <c10/util/Exception.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "asymvalley_abi.h"

namespace at {
class Tensor;
}

extern "C" {
char* asymvalley_op_rule_parse(const char* mode, const char* warmup, double decay, double inv_gamma,
                               double power, double min_decay, int64_t update_after_step,
                               int64_t update_every, AsvRule* out);
char* asymvalley_op_rule_plan(const AsvRule* rule, int64_t steps, int64_t n_averaged, AsvPlan* out);
double asymvalley_op_swa_weight(int64_t n_averaged);
size_t asymvalley_valley_asymmetry_fields();
char* asymvalley_valley_asymmetry_raw(const double* offsets, const double* losses, size_t n, double* out,
                                      size_t out_len);
// Takes ownership of the n tensors (each a `new at::Tensor`); writes the reply JSON to *out_json
// (freed with asymvalley_op_free_error) and calls sink(data, t) for each output tensor (borrowed).
char* asymvalley_valley_probe_raw(const uint8_t* module, size_t module_len, at::Tensor* const* tensors,
                                  size_t n_tensors, int has_test, const char* request, char** out_json,
                                  void (*sink)(void* data, const at::Tensor* t), void* data);
// Parses the switch ASYMVALLEY_OP_FUSED_CUDA (value NULL: unset) into *out (1 on, 0 off).
char* asymvalley_op_fused_cuda_switch(const char* value, int* out);
// One fused CUDA pass over n (avg, model) pairs, `stride` bytes apart (a TensorList's data());
// op: AV_OP_LERP / AV_OP_COPY_IN / AV_OP_BIAS; scalar_tensor: NULL or a 0-dim float64 device
// tensor the kernel reads the scalar from. *taken = 1 if launched, 0 if ineligible (nothing written).
char* asymvalley_op_cuda_fused(int op, const void* avg, const void* model, size_t n, size_t stride, double scalar,
                               const void* scalar_tensor, int* taken);
char* asymvalley_op_cuda_fused_stats(int64_t* launches, int64_t* builds);
// Frees every message the functions above return.
void asymvalley_op_free_error(char* msg);
}

namespace asymvalley {

// Rethrows a Rust error message (NULL: success) as a c10::Error (Python: RuntimeError),
// prefixed by `context` when given.
inline void raise_if(char* msg, const char* context = nullptr) {
  if (msg == nullptr) return;
  std::string text(msg);
  asymvalley_op_free_error(msg);
  if (context != nullptr) TORCH_CHECK(false, context, ": ", text);
  TORCH_CHECK(false, text);
}

}  // namespace asymvalley
