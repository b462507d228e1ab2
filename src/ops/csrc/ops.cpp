// The TorchScript op library: `torch.ops.asymvalley.*` and `torch.classes.asymvalley.Averager`.
//
// This file registers the schemas and the kernels; validate.cpp checks every call before a
// tensor is touched, and Rust (src/ops/src/rule.rs) decides what an Averager update does. The kernels call `at::_foreach_*`,
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
// Validation: every op and class method first calls the one validator (validate.h), which reads
// only TensorImpl fields and words every error; nothing is written before it accepts.
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
#include <torch/custom_class.h>
#include <torch/library.h>

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

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
  check::update_call("swa_update_", avg, params, &n_averaged, std::nullopt);
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
  check::update_call("ema_update_", avg, params, &n_averaged, decay);
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
void bias_toward_flat_(at::TensorList out, at::TensorList avg, at::TensorList anchor, double beta) {
  check::bias_call(out, avg, anchor, beta);
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
  check::update_call("swa_update_", avg, params, &n_averaged, std::nullopt);
}
void ema_update_meta(at::TensorList avg, at::TensorList params, const at::Tensor& n_averaged,
                     double decay) {
  check::update_call("ema_update_", avg, params, &n_averaged, decay);
}
void bias_toward_flat_meta(at::TensorList out, at::TensorList avg, at::TensorList anchor, double beta) {
  check::bias_call(out, avg, anchor, beta);
}

// ---------------------------------------------------------------------------------------------
// torch.classes.asymvalley.Averager: SWA or EMA over flat fp32 buffers with host counters.
// ---------------------------------------------------------------------------------------------
struct Averager : torch::CustomClassHolder {
  // The constructor's strings, kept for pickling and `mode()`; `rule` is what they parse to.
  std::string mode, warmup;
  AsvRule rule{};
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
      : mode(std::move(mode_)), warmup(std::move(warmup_)) {
    // Parsed and validated once; every update passes the parsed rule back to Rust.
    raise_if(asymvalley_op_rule_parse(mode.c_str(), warmup.c_str(), decay_, inv_gamma_, power_, min_decay_,
                                      update_after_step_, update_every_, &rule));
  }

  AsvPlan plan(int64_t s, int64_t n) const {
    AsvPlan p{AsvAction::Skip, 0.0};
    raise_if(asymvalley_op_rule_plan(&rule, s, n, &p));
    return p;
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
    const AsvPlan next = plan(steps, n_averaged);
    const bool fresh = views.empty();
    if (fresh) {
      TORCH_CHECK(!params.empty(), "invalid params = an empty list (in Averager.update): expected at least one tensor");
      allocate_like(params);
    }
    try {
      check::update_call("Averager.update", views, params, nullptr, std::nullopt);
    } catch (...) {
      if (fresh) {
        flats.clear();
        views.clear();
        owner.clear();
      }
      throw;
    }
    at::NoGradGuard no_grad;
    switch (next.action) {
      case AsvAction::Skip:
        break;
      case AsvAction::Mirror:
      case AsvAction::Copy:
        lerp_host(views, params, /*copy=*/true, 1.0);
        break;
      case AsvAction::Lerp:
        lerp_host(views, params, /*copy=*/false, next.weight);
        break;
    }
    if (next.action != AsvAction::Skip) filled = true;
    if (next.action == AsvAction::Copy || next.action == AsvAction::Lerp) n_averaged += 1;
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
    check::write_call("Averager.copy_to", params, views, /*average_written=*/false);
    at::NoGradGuard no_grad;
    at::_foreach_copy_(params, views, /*non_blocking=*/false);
  }

  // Exchanges the average and params (evaluate the average, then swap back). With half-precision
  // params the average comes back rounded to their dtype, so swap twice only with fp32 params.
  void swap(std::vector<at::Tensor> params) {
    std::lock_guard<std::mutex> lock(mu);
    require_average("swap");
    check::write_call("Averager.swap", params, views, /*average_written=*/true);
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
    return State{mode,
                 warmup,
                 {rule.decay, rule.inv_gamma, rule.power, rule.min_decay},
                 {1, static_cast<int64_t>(rule.update_after_step), static_cast<int64_t>(rule.update_every), steps,
                  n_averaged},
                 flats,
                 layout};
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
    self->filled = self->n_averaged > 0 || (self->steps > 0 && self->plan(0, 0).action == AsvAction::Mirror);
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
