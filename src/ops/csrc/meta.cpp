// The Meta kernels of the update ops: the same validation as the real kernels, and no work
// (the ops return nothing; their outputs are their inputs, shapes unchanged).
#include <optional>

#include "kernels.h"
#include "validate.h"

namespace asymvalley {

void swa_update_meta(at::TensorList avg, at::TensorList params, const at::Tensor& n_averaged) {
  check::update_call("swa_update_", avg, params, &n_averaged, std::nullopt);
}
void ema_update_meta(at::TensorList avg, at::TensorList params, const at::Tensor& n_averaged,
                     double decay) {
  check::update_call("ema_update_", avg, params, &n_averaged, decay);
}
void bias_toward_flat_meta(at::TensorList out, at::TensorList avg, at::TensorList anchor, double beta) {
  check::bias_call(out, avg, anchor, beta);
}

}  // namespace asymvalley
