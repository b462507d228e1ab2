// The op library's side of the fused CUDA path (see fused_cuda.h): the switch, eligibility as
// far as TensorImpl fields tell, and the call into Rust.
#include "fused_cuda.h"

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string>

#include "fused/cpu.h"
#include "fused_cpu.h"
#include "rust_ffi.h"

namespace asymvalley::fused_cuda {
namespace {

// -1: not read yet; 0 off; 1 on. The variable is read once (under the once_flag); `set_enabled`
// overrides it.
std::atomic<int> g_state{-1};
std::once_flag g_read;
std::string g_error;  // the variable's parse error, if any (then every CUDA update is refused)

void read_env() {
  int on = 0;
  char* msg = asymvalley_op_fused_cuda_switch(std::getenv("ASYMVALLEY_OP_FUSED_CUDA"), &on);
  if (msg != nullptr) {
    g_error = msg;
    asymvalley_op_free_error(msg);
    return;
  }
  int expected = -1;
  g_state.compare_exchange_strong(expected, on);
}

// Whether the kernel can address `t` as given: a CUDA strided tensor with storage, not a
// negative or conjugate view (their memory holds -x or conj(x)), of a dtype it reads.
bool addressable(const at::Tensor& t) {
  if (!(t.defined() && t.is_cuda() && t.layout() == at::kStrided && t.has_storage() && !t.is_neg() &&
        !t.is_conj())) {
    return false;
  }
  const auto d = t.scalar_type();
  return d == at::kFloat || d == at::kDouble || d == at::kBFloat16 || d == at::kHalf;
}

bool all_addressable(at::TensorList ts) {
  for (const auto& t : ts) {
    if (!addressable(t)) return false;
  }
  return true;
}

// One call into Rust; true if the kernel ran. A Rust error (a failed launch) is raised.
bool run(int op, at::TensorList avg, at::TensorList model, double scalar, const at::Tensor* device_scalar) {
  int taken = 0;
  raise_if(asymvalley_op_cuda_fused(op, avg.data(), model.data(), avg.size(), sizeof(at::Tensor), scalar,
                                    device_scalar, &taken),
           "fused CUDA update");
  return taken != 0;
}

}  // namespace

bool enabled() {
  std::call_once(g_read, read_env);
  if (g_state.load() < 0) TORCH_CHECK(false, g_error);
  return g_state.load() == 1;
}

void set_enabled(bool on) {
  std::call_once(g_read, read_env);
  g_state.store(on ? 1 : 0);
}

bool lerp(at::TensorList avg, at::TensorList params, bool copy, double weight, const at::Tensor* device_weight) {
  if (avg.empty() || !avg[0].is_cuda() || !enabled()) return false;
  if (!all_addressable(avg) || !all_addressable(params)) return false;
  if (device_weight != nullptr &&
      !(device_weight->device() == avg[0].device() && device_weight->scalar_type() == at::kDouble &&
        device_weight->dim() == 0)) {
    return false;
  }
  return run(copy ? AV_OP_COPY_IN : AV_OP_LERP, avg, params, weight, device_weight);
}

bool bias(at::TensorList out, at::TensorList avg, at::TensorList anchor, double beta) {
  if (avg.empty() || !avg[0].is_cuda() || !enabled()) return false;
  if (!all_addressable(avg) || !all_addressable(anchor)) return false;
  // The kernel writes the model side in place: only `out` that is its own anchor qualifies.
  for (size_t i = 0; i < out.size(); ++i) {
    if (!out[i].is_same(anchor[i])) return false;
  }
  if (!fused::bias_aliasing_ok(out, avg, anchor)) return false;
  return run(AV_OP_BIAS, avg, anchor, beta, nullptr);
}

int64_t launches() {
  int64_t l = 0, b = 0;
  raise_if(asymvalley_op_cuda_fused_stats(&l, &b));
  return l;
}

int64_t builds() {
  int64_t l = 0, b = 0;
  raise_if(asymvalley_op_cuda_fused_stats(&l, &b));
  return b;
}

}  // namespace asymvalley::fused_cuda
