// The one validator of the op library: every op and every `Averager` method calls one of these
// before it writes anything, so a refused call changes no tensor and no counter.
//
// Each check reads only TensorImpl fields (dtype, sizes, strides, device, layout, data pointer;
// on the CPU the counter's value), never device memory, and allocates nothing on success, so a
// valid call costs a few comparisons per tensor. Each refusal is a c10::Error (Python:
// RuntimeError) whose message names the argument as the schema does (`avg[3]`, `n_averaged`).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>

namespace asymvalley::check {

// How a source's dtype may relate to its destination's.
enum class Dtypes {
  // The one dtype policy of every average (the Rust `Averager` keeps the same, see
  // `average_kind`): the destination's own dtype; for a float32 destination also float16 and
  // bfloat16 (an fp32 average of a half model); for a float64 destination any floating dtype.
  // float64 into float32, and anything into a half-precision destination, are refused: they lose
  // precision at every update, silently.
  Accumulate,
  // Any floating pair (writing an fp32 average back into a bf16 model).
  Convert,
};

// One list argument of an op, as its schema names it.
struct Arg {
  const char* name;
  at::TensorList tensors;
  bool written;
};

// `swa_update_` / `ema_update_` / `Averager.update`: `avg` is written from `params`
// (Accumulate); `n_averaged` (nullable) is the op's counter, `decay` the EMA decay if any.
void update_call(const char* op, at::TensorList avg, at::TensorList params, const at::Tensor* n_averaged,
                 std::optional<double> decay);

// `bias_toward_flat_(out, avg, anchor, beta)`: `out` (any floating dtype) may alias `avg` or
// `anchor` (the kernel computes into temporaries first), not itself.
void bias_call(at::TensorList out, at::TensorList avg, at::TensorList anchor, double beta);

// `Averager.copy_to` / `Averager.swap`: `params` (the model) is written from `average`; `swap`
// also writes `average`.
void write_call(const char* op, at::TensorList params, at::TensorList average, bool average_written);

// PyTorch's name of a dtype (`torch.float32`).
std::string dtype_name(at::ScalarType t);

}  // namespace asymvalley::check
