// The TorchScript op library: `torch.ops.asymvalley.*` and `torch.classes.asymvalley.Averager`.
//
// This file registers the schemas and the kernels; Rust (src/op/) validates every call before a
// tensor is touched and decides what an Averager update does. The kernels call `at::_foreach_*`,
// one call per (device, dtype) group, so a CUDA update is a handful of fused launches.
//
// Counter and weight, without a device sync:
// - `n_averaged` on the CPU (what `asymvalley.AveragedModel` passes: a host-side counter): it is
//   read directly (a CPU read, no device sync) and the weight is a host double Scalar, which
//   takes `_foreach_lerp_`'s fused fast path.
// - `n_averaged` on the device (TorchScript users mirroring `AveragedModel.n_averaged`): never
//   read on the host. The weight is a 0-dim device tensor (`1/(n+1)` for SWA, `where(n == 0, 1,
//   1 - decay)` for EMA) fed to `_foreach_lerp_`'s tensor-weight overload; weight 1 is the copy
//   of the first call (`lerp(a, b, 1) == b` exactly for finite `a`). That overload loops per
//   tensor on CUDA: it trades launches for the absence of a sync.
//
// Validation cost: `check_update` first runs `quick_update_ok`, a tight C++ loop over the same
// checks that reads only TensorImpl fields (no strings, no allocation but one span vector). When
// it accepts, the call is valid; when anything looks wrong it only says "not sure", and the Rust
// checks (src/op/, the single authority) decide and word the error. So a bad input still gets the
// Rust message and nothing is modified, and a good one costs ~1/10 of the Rust path (which builds
// owned descriptions: device strings, size vectors). Keep `quick_update_ok` no more permissive
// than `check_update` in src/op/mod.rs.
//
// Mixed dtypes (a bf16 model into an fp32 average): ATen has no mixed-dtype `_foreach_lerp_`
// (`lerp` requires equal dtypes; a mixed foreach list takes the per-tensor slow path), so the
// params are converted first: into fresh fp32 tensors by ONE `_foreach_copy_` (its CUDA fast path
// converts dtypes in a multi-tensor launch), not one `.to()` launch per tensor. The traffic is
// still 18 B/param (read 2 + write 4 for the conversion, then read 4 + 4, write 4) against a
// floor of 10 B/param for a fused mixed-dtype lerp, which would need our own CUDA kernel; the
// alternatives in ATen (`_foreach_mul_` + a mixed `_foreach_add_`) move the same 18 B and fall to
// per-tensor launches.
//
// Never include torch/extension.h here: it pulls in pybind11 and links libpython, which a
// library loaded by torch.ops.load_library (and by Rust, with no Python) must not need.
#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <c10/core/InferenceMode.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

extern "C" {
// Must match `AsvTensorDesc` in src/op/mod.rs.
struct AsvTensorDesc {
  int32_t dtype;
  int32_t has_span;
  int64_t ndim;
  const int64_t* sizes;
  const char* device;
  size_t start;
  size_t end;
};

char* asymvalley_op_check_update(const char* op, const AsvTensorDesc* avg, size_t n_avg,
                                 const AsvTensorDesc* params, size_t n_params,
                                 const AsvTensorDesc* counter, double decay, int32_t has_decay);
char* asymvalley_op_check_bias(const AsvTensorDesc* out, size_t n_out, const AsvTensorDesc* avg,
                               size_t n_avg, const AsvTensorDesc* anchor, size_t n_anchor,
                               double beta);
char* asymvalley_op_check_write(const char* op, const AsvTensorDesc* dst, size_t n_dst,
                                const AsvTensorDesc* src, size_t n_src, int32_t src_mutated);
char* asymvalley_op_averager_plan(const char* mode, const char* warmup, double decay,
                                  double inv_gamma, double power, double min_decay,
                                  int64_t update_after_step, int64_t update_every, int64_t steps,
                                  int64_t n_averaged, int32_t* action, double* weight);
double asymvalley_op_swa_weight(int64_t n_averaged);
void asymvalley_op_free_error(char* msg);
}

namespace asymvalley {
namespace {

// Descriptions of a list of tensors, kept alive while Rust reads them.
class Descs {
 public:
  explicit Descs(at::ArrayRef<at::Tensor> ts) {
    const size_t n = ts.size();
    devices_.reserve(n);
    sizes_.reserve(n);
    descs_.reserve(n);
    for (const auto& t : ts) {
      TORCH_CHECK(t.defined(), "asymvalley: an undefined tensor was passed");
      devices_.push_back(t.device().str());
      sizes_.emplace_back(t.sizes().begin(), t.sizes().end());
      AsvTensorDesc d{};
      d.dtype = static_cast<int32_t>(t.scalar_type());
      d.ndim = t.dim();
      // Meta/fake tensors have no memory: no span, no aliasing check.
      if (!t.is_meta() && t.has_storage() && t.numel() > 0 && t.data_ptr() != nullptr) {
        int64_t extent = 1;
        for (int64_t k = 0; k < t.dim(); ++k) extent += (t.size(k) - 1) * t.stride(k);
        d.has_span = 1;
        d.start = reinterpret_cast<size_t>(t.data_ptr());
        d.end = d.start + static_cast<size_t>(extent) * t.element_size();
      }
      descs_.push_back(d);
    }
    for (size_t i = 0; i < n; ++i) {
      descs_[i].sizes = sizes_[i].data();
      descs_[i].device = devices_[i].c_str();
    }
  }
  const AsvTensorDesc* data() const { return descs_.empty() ? nullptr : descs_.data(); }
  size_t size() const { return descs_.size(); }

 private:
  std::vector<std::string> devices_;
  std::vector<std::vector<int64_t>> sizes_;
  std::vector<AsvTensorDesc> descs_;
};

// Rethrows a Rust error message as a c10::Error (Python: RuntimeError).
void raise_if(char* msg) {
  if (msg == nullptr) return;
  std::string text(msg);
  asymvalley_op_free_error(msg);
  TORCH_CHECK(false, text);
}

bool is_op_float(at::ScalarType t) {
  return t == at::kHalf || t == at::kFloat || t == at::kDouble || t == at::kBFloat16;
}

// Counters are int64 only: a narrower counter wraps (uint8 after 255 updates) and the next update
// would then copy instead of averaging.
bool is_op_integer(at::ScalarType t) { return t == at::kLong; }

struct Span {
  uintptr_t start, end;
  bool mutated;
};

// The bytes `t`'s elements occupy, as `Descs` computes them (none for meta/empty tensors).
void push_span(std::vector<Span>& spans, const at::Tensor& t, bool mutated) {
  if (t.is_meta() || !t.has_storage() || t.numel() == 0) return;
  const void* p = t.data_ptr();
  if (p == nullptr) return;
  int64_t extent = 1;
  const auto sizes = t.sizes();
  const auto strides = t.strides();
  for (size_t k = 0; k < sizes.size(); ++k) extent += (sizes[k] - 1) * strides[k];
  const auto start = reinterpret_cast<uintptr_t>(p);
  spans.push_back(Span{start, start + static_cast<uintptr_t>(extent) * t.element_size(), mutated});
}

// The sweep of `check::check_aliasing`: no written span overlaps any other span.
bool no_written_overlap(std::vector<Span>& spans) {
  std::sort(spans.begin(), spans.end(), [](const Span& x, const Span& y) {
    return x.start != y.start ? x.start < y.start : x.end < y.end;
  });
  uintptr_t any_end = 0, written_end = 0;
  bool any = false, written = false;
  for (const auto& s : spans) {
    if (s.mutated ? (any && s.start < any_end) : (written && s.start < written_end)) return false;
    if (!any || s.end > any_end) any_end = s.end, any = true;
    if (s.mutated && (!written || s.end > written_end)) written_end = s.end, written = true;
  }
  return true;
}

// True only when every check of `check_update` (src/op/mod.rs) passes: lists, dtypes (the
// Accumulate rule), shapes, devices, counter, decay, aliasing. False means "ask Rust".
bool quick_update_ok(at::TensorList avg, at::TensorList params, const at::Tensor* counter,
                     c10::optional<double> decay) {
  const size_t n = avg.size();
  if (n == 0 || params.size() != n) return false;
  if (decay.has_value() && !(*decay > 0.0 && *decay < 1.0)) return false;
  thread_local std::vector<Span> spans;
  spans.clear();
  spans.reserve(2 * n + 1);
  for (size_t i = 0; i < n; ++i) {
    const auto& a = avg[i];
    const auto& p = params[i];
    if (!a.defined() || !p.defined()) return false;
    const auto ad = a.scalar_type(), pd = p.scalar_type();
    if (!is_op_float(ad) || !is_op_float(pd)) return false;
    if (pd != ad && ad != at::kFloat && ad != at::kDouble) return false;
    if (a.device() != p.device() || !a.sizes().equals(p.sizes())) return false;
    push_span(spans, a, true);
    push_span(spans, p, false);
  }
  if (counter != nullptr) {
    const auto& c = *counter;
    if (!c.defined() || c.dim() != 0 || !is_op_integer(c.scalar_type())) return false;
    if (!c.device().is_cpu() && c.device() != avg[0].device()) return false;
    push_span(spans, c, true);
  }
  return no_written_overlap(spans);
}

// `name[i]` as the schema names the tensor (`avg[3]`), or `name` alone for a single tensor.
std::string arg_name(const char* name, int64_t i) {
  return i < 0 ? std::string(name) : std::string(name) + "[" + std::to_string(i) + "]";
}

// Whether two elements of `t` may share an address. ATen's `has_internal_overlap` answers
// "yes" for a stride-0 dimension and "no" for a non-overlapping dense tensor; for the other
// strided views (`as_strided`, slices with steps) this decides: with the dimensions of size > 1
// sorted by stride, each stride must exceed the span of all smaller ones (the layout of any
// slice of a contiguous tensor). Anything else is refused as "may overlap".
bool may_self_overlap(const at::Tensor& t) {
  // A fake tensor with symbolic sizes (torch.compile with dynamic shapes) has no layout to check
  // yet; the real call checks its real tensors.
  if (t.unsafeGetTensorImpl()->has_symbolic_sizes_strides()) return false;
  if (t.numel() <= 1) return false;
  switch (at::has_internal_overlap(t)) {
    case at::MemOverlap::Yes: return true;
    case at::MemOverlap::No: return false;
    default: break;
  }
  std::vector<std::pair<int64_t, int64_t>> dims;  // (stride, size)
  for (int64_t k = 0; k < t.dim(); ++k) {
    if (t.size(k) > 1) dims.emplace_back(t.stride(k), t.size(k));
  }
  std::sort(dims.begin(), dims.end());
  int64_t reach = 0;  // the largest element offset reachable with the dimensions so far
  for (const auto& [stride, size] : dims) {
    if (stride <= reach) return true;
    reach += (size - 1) * stride;
  }
  return false;
}

// Refuses, before anything is written, a tensor the kernels cannot use as given, whatever its
// dtype and shape: a non-strided layout (sparse, mkldnn), a quantized tensor, and for a tensor
// the op writes (`written`) an inference tensor outside inference mode (ATen refuses that
// in-place write, but only when it reaches that tensor, after the earlier ones were written) and
// a layout whose elements overlap (an `expand` or `as_strided` view: an in-place write would
// race with itself or fail in TensorIterator half-way through the list).
void check_usable(const char* op, const char* name, int64_t i, const at::Tensor& t, bool written) {
  if (!t.defined()) return;  // the pairing checks name undefined tensors
  TORCH_CHECK(t.layout() == at::kStrided, "invalid ", arg_name(name, i), " = a tensor of layout ",
              t.layout(), " (in ", op, "): expected a dense tensor (layout torch.strided)");
  TORCH_CHECK(!t.is_quantized(), "invalid ", arg_name(name, i), " = a quantized tensor (in ", op,
              "): expected a floating-point tensor (dequantize() it first)");
  if (!written) return;
  TORCH_CHECK(!t.is_inference() || c10::InferenceMode::is_enabled(), "invalid ", arg_name(name, i),
              " = an inference tensor (made under torch.inference_mode()) (in ", op,
              "): expected a normal tensor; an inference tensor may be updated in place only inside "
              "torch.inference_mode()");
  if (may_self_overlap(t)) {
    for (int64_t k = 0; k < t.dim(); ++k) {
      TORCH_CHECK(t.stride(k) != 0 || t.size(k) <= 1, "invalid ", arg_name(name, i),
                  " = a view with stride 0 in dimension ", k, " (sizes ", t.sizes(), ", strides ",
                  t.strides(), ") (in ", op, "): expected a tensor whose elements have distinct "
                  "addresses (an expand() view cannot be written in place; clone() it)");
    }
    TORCH_CHECK(false, "invalid ", arg_name(name, i), " = a view whose elements overlap in memory (sizes ",
                t.sizes(), ", strides ", t.strides(), ") (in ", op, "): expected a tensor whose elements "
                "have distinct addresses (an as_strided view cannot be written in place; clone() it)");
  }
}

void check_usable_list(const char* op, const char* name, at::TensorList ts, bool written) {
  for (size_t i = 0; i < ts.size(); ++i) check_usable(op, name, static_cast<int64_t>(i), ts[i], written);
}

// `bias_toward_flat_` lerps with weight 1 + beta in the opmath type of each avg dtype (float for
// float16/bfloat16/float32, double for float64): ATen converts the weight with an overflow check
// and would throw at the first float32 group, after the float64 groups were written.
void check_beta(const char* op, at::TensorList avg, double beta) {
  TORCH_CHECK(std::isfinite(beta), "invalid beta = ", beta, " (in ", op, "): expected a finite number");
  const double w = 1.0 + beta;
  for (size_t i = 0; i < avg.size(); ++i) {
    if (!avg[i].defined() || avg[i].scalar_type() == at::kDouble) continue;
    TORCH_CHECK(std::fabs(w) <= static_cast<double>(FLT_MAX), "invalid beta = ", beta, " (in ", op,
                "): expected |1 + beta| <= ", static_cast<double>(FLT_MAX), " (the largest torch.float32: avg[",
                i, "] is ", avg[i].scalar_type(), ", computed in float32)");
  }
}

// The counter of `swa_update_`/`ema_update_`: an int64 0-dim tensor, and on the CPU not negative
// (a negative count would act as weight 1, a copy). A device counter is not read here: reading it
// would cost a sync per update.
// Non-integer dtypes and other shapes are left to the Rust check, which words those errors.
void check_counter_value(const char* op, const at::Tensor& c) {
  if (!c.defined()) return;
  const char* narrow = nullptr;
  switch (c.scalar_type()) {
    case at::kByte: narrow = "torch.uint8"; break;
    case at::kChar: narrow = "torch.int8"; break;
    case at::kShort: narrow = "torch.int16"; break;
    case at::kInt: narrow = "torch.int32"; break;
    case at::kBool: narrow = "torch.bool"; break;
    default: break;
  }
  TORCH_CHECK(narrow == nullptr, "invalid n_averaged dtype = ", narrow, " (in ", op,
              "): expected torch.int64; a narrower counter wraps");
  if (c.scalar_type() == at::kLong && c.device().is_cpu() && !c.is_meta() && c.dim() == 0) {
    const int64_t n = c.item<int64_t>();
    TORCH_CHECK(n >= 0, "invalid n_averaged = ", n, " (in ", op, "): expected an integer >= 0");
  }
}

void check_update(const char* op, at::TensorList avg, at::TensorList params,
                  const at::Tensor* counter, c10::optional<double> decay) {
  check_usable_list(op, "avg", avg, /*written=*/true);
  check_usable_list(op, "params", params, /*written=*/false);
  if (counter != nullptr) {
    check_usable(op, "n_averaged", -1, *counter, /*written=*/true);
    check_counter_value(op, *counter);
  }
  if (quick_update_ok(avg, params, counter, decay)) return;
  Descs a(avg), p(params);
  std::vector<at::Tensor> c;
  if (counter != nullptr) c.push_back(*counter);
  Descs cd(c);
  raise_if(asymvalley_op_check_update(op, a.data(), a.size(), p.data(), p.size(), cd.data(),
                                      decay.value_or(0.0), decay.has_value() ? 1 : 0));
}

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

// `src` converted to the dtype of `like` where they differ (a bf16 model into an fp32 average):
// fresh tensors filled by one `_foreach_copy_` (a fused, dtype-converting launch on CUDA).
std::vector<at::Tensor> in_dtype_of(const std::vector<at::Tensor>& like, std::vector<at::Tensor> src) {
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

// avg <- lerp(avg, params, w) with a host weight, or a copy when `copy`, per (device, dtype) group.
void lerp_host(at::TensorList avg, at::TensorList params, bool copy, double weight) {
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
    at::_foreach_lerp_(a, in_dtype_of(a, pick(params, g)), at::Scalar(weight));
  }
}

// avg <- lerp(avg, params, w) with a 0-dim device weight tensor (no host read).
void lerp_device(at::TensorList avg, at::TensorList params, const at::Tensor& weight) {
  for (const auto& g : groups_of(avg)) {
    auto a = pick(avg, g);
    auto p = in_dtype_of(a, pick(params, g));
    auto w = weight.to(a[0].scalar_type());
    std::vector<at::Tensor> ws(a.size(), w);
    at::_foreach_lerp_(a, p, ws);
  }
}

}  // namespace

// swa_update_(avg, params, n_averaged): equal-weight running mean, first call copies.
void swa_update_(at::TensorList avg, at::TensorList params, const at::Tensor& n_averaged) {
  check_update("swa_update_", avg, params, &n_averaged, c10::nullopt);
  at::NoGradGuard no_grad;
  if (n_averaged.device().is_cpu()) {
    const int64_t n = n_averaged.item<int64_t>();  // a CPU read: no device sync
    lerp_host(avg, params, n == 0, asymvalley_op_swa_weight(n));
  } else {
    // 1/(n+1) computed in float64 on the device (cast to each group's dtype); n = 0 gives 1 (the copy).
    lerp_device(avg, params, at::reciprocal((n_averaged + 1).to(at::kDouble)));
  }
  n_averaged.add_(1);
}

// ema_update_(avg, params, n_averaged, decay): avg <- decay*avg + (1-decay)*params; first call copies.
void ema_update_(at::TensorList avg, at::TensorList params, const at::Tensor& n_averaged,
                 double decay) {
  check_update("ema_update_", avg, params, &n_averaged, decay);
  at::NoGradGuard no_grad;
  if (n_averaged.device().is_cpu()) {
    const int64_t n = n_averaged.item<int64_t>();
    lerp_host(avg, params, n == 0, 1.0 - decay);
  } else {
    auto opts = n_averaged.options().dtype(at::kDouble);
    auto w = at::where(n_averaged.eq(0), at::ones({}, opts), at::full({}, 1.0 - decay, opts));
    lerp_device(avg, params, w);
  }
  n_averaged.add_(1);
}

// bias_toward_flat_(out, avg, anchor, beta): out <- avg + beta*(avg - anchor) = lerp(anchor, avg, 1+beta).
// Computed into a temporary in avg's dtype, then copied: `out` may alias `avg` or `anchor`.
void check_bias(at::TensorList out, at::TensorList avg, at::TensorList anchor, double beta) {
  const char* op = "bias_toward_flat_";
  check_usable_list(op, "out", out, /*written=*/true);
  check_usable_list(op, "avg", avg, /*written=*/false);
  check_usable_list(op, "anchor", anchor, /*written=*/false);
  Descs o(out), a(avg), c(anchor);
  raise_if(asymvalley_op_check_bias(o.data(), o.size(), a.data(), a.size(), c.data(), c.size(), beta));
  check_beta(op, avg, beta);
}

void bias_toward_flat_(at::TensorList out, at::TensorList avg, at::TensorList anchor, double beta) {
  check_bias(out, avg, anchor, beta);
  at::NoGradGuard no_grad;
  // Every group is computed before any `out` is written: an `out` of one group may alias the
  // `avg` or `anchor` of a later one.
  const auto groups = groups_of(avg);
  std::vector<std::vector<at::Tensor>> biased;
  biased.reserve(groups.size());
  for (const auto& g : groups) {
    auto a = pick(avg, g);
    auto c = in_dtype_of(a, pick(anchor, g));
    biased.push_back(at::_foreach_lerp(c, a, at::Scalar(1.0 + beta)));
  }
  for (size_t k = 0; k < groups.size(); ++k) {
    auto o = pick(out, groups[k]);
    at::_foreach_copy_(o, biased[k], /*non_blocking=*/false);
  }
}

// Meta kernels: the same validation, no work (shapes are unchanged, outputs are the inputs).
void swa_update_meta(at::TensorList avg, at::TensorList params, const at::Tensor& n_averaged) {
  check_update("swa_update_", avg, params, &n_averaged, c10::nullopt);
}
void ema_update_meta(at::TensorList avg, at::TensorList params, const at::Tensor& n_averaged,
                     double decay) {
  check_update("ema_update_", avg, params, &n_averaged, decay);
}
void bias_toward_flat_meta(at::TensorList out, at::TensorList avg, at::TensorList anchor, double beta) {
  check_bias(out, avg, anchor, beta);
}

// ---------------------------------------------------------------------------------------------
// torch.classes.asymvalley.Averager: SWA or EMA over flat fp32 buffers with host counters.
// ---------------------------------------------------------------------------------------------
struct Averager : torch::CustomClassHolder {
  std::string mode, warmup;
  double decay, inv_gamma, power, min_decay;
  int64_t update_after_step, update_every;
  int64_t steps = 0, n_averaged = 0;
  // One flat fp32 buffer per device; `views[i]` is param i's slice of buffer `owner[i]`.
  std::vector<at::Tensor> flats;
  std::vector<at::Tensor> views;
  std::vector<int64_t> owner;
  // Whether the buffers hold an average: set by the first update that writes them (a copy or a
  // mirror). Buffers exist before that (an SWA update before `update_after_step` allocates and
  // skips; a refused first update may leave them), but their memory is uninitialized, so every
  // read of the average requires `filled`.
  bool filled = false;
  // Held by every method that reads or writes the state: TorchScript class methods run without
  // the GIL, so Python threads sharing one Averager would otherwise race (the first update
  // allocates the buffers while another reads them).
  mutable std::mutex mu;

  Averager(std::string mode_, double decay_, std::string warmup_, double inv_gamma_, double power_,
           double min_decay_, int64_t update_after_step_, int64_t update_every_)
      : mode(std::move(mode_)), warmup(std::move(warmup_)), decay(decay_), inv_gamma(inv_gamma_),
        power(power_), min_decay(min_decay_), update_after_step(update_after_step_),
        update_every(update_every_) {
    plan(0, 0);  // validates the configuration
  }

  std::pair<int32_t, double> plan(int64_t s, int64_t n) const {
    int32_t action = 0;
    double weight = 0.0;
    raise_if(asymvalley_op_averager_plan(mode.c_str(), warmup.c_str(), decay, inv_gamma, power,
                                         min_decay, update_after_step, update_every, s, n,
                                         &action, &weight));
    return {action, weight};
  }

  // Lays out one fp32 buffer per device, in first-appearance order of the params.
  void allocate_like(const std::vector<at::Tensor>& params) {
    std::vector<std::string> devs;
    std::vector<int64_t> totals;
    std::vector<int64_t> own(params.size());
    for (size_t i = 0; i < params.size(); ++i) {
      auto d = params[i].device().str();
      size_t k = 0;
      while (k < devs.size() && devs[k] != d) ++k;
      if (k == devs.size()) {
        devs.push_back(d);
        totals.push_back(0);
      }
      own[i] = static_cast<int64_t>(k);
      totals[k] += params[i].numel();
    }
    std::vector<at::Tensor> fl;
    for (size_t k = 0; k < devs.size(); ++k) {
      fl.push_back(at::empty({totals[k]}, at::TensorOptions().dtype(at::kFloat).device(devs[k])));
    }
    std::vector<std::vector<int64_t>> shapes;
    for (const auto& p : params) shapes.emplace_back(p.sizes().begin(), p.sizes().end());
    set_layout(std::move(fl), own, shapes);
  }

  void set_layout(std::vector<at::Tensor> fl, const std::vector<int64_t>& own,
                  const std::vector<std::vector<int64_t>>& shapes) {
    std::vector<int64_t> offset(fl.size(), 0);
    std::vector<at::Tensor> vs;
    for (size_t i = 0; i < own.size(); ++i) {
      const auto k = own[i];
      TORCH_CHECK(k >= 0 && k < static_cast<int64_t>(fl.size()), "Averager: corrupt state (buffer index)");
      int64_t numel = 1;
      for (auto s : shapes[i]) numel *= s;
      TORCH_CHECK(offset[k] + numel <= fl[k].numel(), "Averager: corrupt state (sizes exceed the buffer)");
      vs.push_back(fl[k].narrow(0, offset[k], numel).view(shapes[i]));
      offset[k] += numel;
    }
    for (size_t k = 0; k < fl.size(); ++k) {
      TORCH_CHECK(offset[k] == fl[k].numel(), "Averager: corrupt state (buffer larger than its tensors)");
    }
    flats = std::move(fl);
    views = std::move(vs);
    owner = own;
  }

  // The buffers are float32: float64 params would be rounded, losing the precision the caller
  // asked for, so they are refused rather than narrowed silently.
  static void refuse_narrowing(const std::vector<at::Tensor>& params) {
    for (size_t i = 0; i < params.size(); ++i) {
      TORCH_CHECK(!params[i].defined() || params[i].scalar_type() != at::kDouble, "invalid params[", i,
                  "] dtype = torch.float64 (in Averager.update): the average is torch.float32 and ",
                  "would round float64 values; pass float32, float16 or bfloat16 params");
    }
  }

  void update(std::vector<at::Tensor> params) {
    std::lock_guard<std::mutex> lock(mu);
    refuse_narrowing(params);
    const auto [action, weight] = plan(steps, n_averaged);
    const bool fresh = views.empty();
    if (fresh) {
      TORCH_CHECK(!params.empty(), "invalid params = an empty list (in Averager.update): expected at least one tensor");
      allocate_like(params);
    }
    try {
      check_update("Averager.update", views, params, nullptr, c10::nullopt);
    } catch (...) {
      if (fresh) {
        flats.clear();
        views.clear();
        owner.clear();
      }
      throw;
    }
    at::NoGradGuard no_grad;
    switch (action) {
      case 0:
        break;
      case 1:
      case 2:
        lerp_host(views, params, /*copy=*/true, 1.0);
        break;
      default:
        lerp_host(views, params, /*copy=*/false, weight);
    }
    if (action >= 1) filled = true;
    if (action >= 2) n_averaged += 1;
    steps += 1;
  }

  void require_average(const char* op) const {
    TORCH_CHECK(filled && !views.empty(), "Averager.", op,
                ": the averager holds no average yet (no update has written it: none was made, ",
                "the first one was refused, or every one so far was skipped before update_after_step)");
  }

  // params <- average (converted to the params' dtypes).
  void copy_to(std::vector<at::Tensor> params) {
    std::lock_guard<std::mutex> lock(mu);
    require_average("copy_to");
    check_usable_list("Averager.copy_to", "params", params, /*written=*/true);
    Descs d(params), s(views);
    raise_if(asymvalley_op_check_write("Averager.copy_to", d.data(), d.size(), s.data(), s.size(), 0));
    at::NoGradGuard no_grad;
    at::_foreach_copy_(params, views, /*non_blocking=*/false);
  }

  // Exchanges the average and params (evaluate the average, then swap back). With half-precision
  // params the average comes back rounded to their dtype, so swap twice only with fp32 params.
  void swap(std::vector<at::Tensor> params) {
    std::lock_guard<std::mutex> lock(mu);
    require_average("swap");
    check_usable_list("Averager.swap", "params", params, /*written=*/true);
    Descs d(params), s(views);
    raise_if(asymvalley_op_check_write("Averager.swap", d.data(), d.size(), s.data(), s.size(), 1));
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> saved;
    saved.reserve(params.size());
    for (const auto& p : params) saved.push_back(p.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true));
    at::_foreach_copy_(params, views, false);
    at::_foreach_copy_(views, saved, false);
  }

  // The buffers' views themselves (not copies), so callers read the live average.
  std::vector<at::Tensor> average() const {
    std::lock_guard<std::mutex> lock(mu);
    require_average("average");
    return views;
  }

  int64_t get_n_averaged() const {
    std::lock_guard<std::mutex> lock(mu);
    return n_averaged;
  }
  int64_t get_steps() const {
    std::lock_guard<std::mutex> lock(mu);
    return steps;
  }

  using State = std::tuple<std::string, std::string, std::vector<double>, std::vector<int64_t>,
                           std::vector<at::Tensor>, std::vector<int64_t>>;

  // (mode, warmup, [decay, inv_gamma, power, min_decay], [version, update_after_step,
  //  update_every, steps, n_averaged], flat buffers, layout = per tensor [owner, ndim, sizes...]).
  State get_state() const {
    std::lock_guard<std::mutex> lock(mu);
    std::vector<int64_t> layout;
    for (size_t i = 0; i < views.size(); ++i) {
      layout.push_back(owner[i]);
      layout.push_back(views[i].dim());
      for (auto s : views[i].sizes()) layout.push_back(s);
    }
    return State{mode, warmup, {decay, inv_gamma, power, min_decay},
                 {1, update_after_step, update_every, steps, n_averaged}, flats, layout};
  }

  static c10::intrusive_ptr<Averager> from_state(State st) {
    auto& [m, w, fl, in, buffers, layout] = st;
    TORCH_CHECK(fl.size() == 4 && in.size() == 5 && in[0] == 1,
                "Averager: unsupported pickled state (expected version 1)");
    auto self = c10::make_intrusive<Averager>(m, fl[0], w, fl[1], fl[2], fl[3], in[1], in[2]);
    self->steps = in[3];
    self->n_averaged = in[4];
    std::vector<int64_t> own;
    std::vector<std::vector<int64_t>> shapes;
    size_t i = 0;
    while (i < layout.size()) {
      TORCH_CHECK(i + 1 < layout.size(), "Averager: corrupt state (layout)");
      own.push_back(layout[i]);
      const auto nd = layout[i + 1];
      TORCH_CHECK(nd >= 0 && i + 2 + static_cast<size_t>(nd) <= layout.size(), "Averager: corrupt state (layout)");
      shapes.emplace_back(layout.begin() + i + 2, layout.begin() + i + 2 + nd);
      i += 2 + static_cast<size_t>(nd);
    }
    for (const auto& b : buffers) {
      TORCH_CHECK(b.dim() == 1 && b.scalar_type() == at::kFloat, "Averager: corrupt state (buffers must be 1-D float32)");
    }
    if (!own.empty()) self->set_layout(buffers, own, shapes);
    // `filled` is not pickled: it follows from the counters (an update that writes either counts
    // in n_averaged or is an EMA mirror, which happens at every step before update_after_step,
    // step 0 included), so pickles written before the flag existed load unchanged.
    self->plan(self->steps, self->n_averaged);  // refuses negative counters, naming them
    TORCH_CHECK(self->n_averaged <= self->steps, "Averager: corrupt state (n_averaged = ", self->n_averaged,
                " exceeds steps = ", self->steps, ")");
    self->filled = self->n_averaged > 0 || (self->steps > 0 && self->plan(0, 0).first == 1);
    TORCH_CHECK(!self->filled || !self->views.empty(), "Averager: corrupt state (n_averaged = ", self->n_averaged,
                ", steps = ", self->steps, " say an average was written, but the state holds no buffers)");
    return self;
  }
};

}  // namespace asymvalley

TORCH_LIBRARY(asymvalley, m) {
  // Each op also mutates a top-level tensor or is called with lists that outlive the graph;
  // TorchScript's dead-code elimination may drop a call whose only effect is mutating a list
  // argument, so each schema also marks a top-level tensor (or is used on lists that outlive the graph).
  m.def("swa_update_(Tensor(a!)[] avg, Tensor[] params, Tensor(b!) n_averaged) -> ()");
  m.def("ema_update_(Tensor(a!)[] avg, Tensor[] params, Tensor(b!) n_averaged, float decay) -> ()");
  m.def("bias_toward_flat_(Tensor(a!)[] out, Tensor[] avg, Tensor[] anchor, float beta) -> ()");

  using asymvalley::Averager;
  m.class_<Averager>("Averager")
      .def(torch::init<std::string, double, std::string, double, double, double, int64_t, int64_t>(),
           "", {torch::arg("mode") = "swa", torch::arg("decay") = 0.999, torch::arg("warmup") = "none",
                torch::arg("inv_gamma") = 1.0, torch::arg("power") = 0.75, torch::arg("min_decay") = 0.0,
                torch::arg("update_after_step") = 0, torch::arg("update_every") = 1})
      .def("update", &Averager::update)
      .def("copy_to", &Averager::copy_to)
      .def("swap", &Averager::swap)
      .def("average", &Averager::average)
      .def("n_averaged", &Averager::get_n_averaged)
      .def("steps", &Averager::get_steps)
      .def("mode", [](const c10::intrusive_ptr<Averager>& self) { return self->mode; })
      .def_pickle([](const c10::intrusive_ptr<Averager>& self) { return self->get_state(); },
                  [](Averager::State st) { return Averager::from_state(std::move(st)); });
}

TORCH_LIBRARY_IMPL(asymvalley, CompositeExplicitAutograd, m) {
  m.impl("swa_update_", &asymvalley::swa_update_);
  m.impl("ema_update_", &asymvalley::ema_update_);
  m.impl("bias_toward_flat_", &asymvalley::bias_toward_flat_);
}

TORCH_LIBRARY_IMPL(asymvalley, Meta, m) {
  m.impl("swa_update_", &asymvalley::swa_update_meta);
  m.impl("ema_update_", &asymvalley::ema_update_meta);
  m.impl("bias_toward_flat_", &asymvalley::bias_toward_flat_meta);
}
