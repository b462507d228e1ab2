// torch.classes.asymvalley.Averager: SWA or EMA over flat fp32 buffers with host counters, for
// TorchScript users. Its rule is Rust's (src/ops/src/rule.rs), parsed once at construction; its
// calls are checked by the one validator (validate.h) before anything is written. On the CPU,
// `update` and `copy_to` are one fused pass (fused_cpu.h) over the buffers' views, whose layout
// the class keeps (refitted to the views' sizes at every call: a view returned by `average()`
// can be resized by its caller); `swap` stays on `_foreach` (it needs a saved copy either way).
#pragma once

#include <ATen/ATen.h>
#include <torch/custom_class.h>

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "kernels.h"
#include "rust_ffi.h"
#include "validate.h"

namespace asymvalley {

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
  // The fused CPU pass's block map over `views` (see the header comment).
  fused::HostLayout layout;
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

  void update(std::vector<at::Tensor> params) {
    std::lock_guard<std::mutex> lock(mu);
    // The buffers are float32, so the one validator below refuses float64 params (they would be
    // rounded at every update); a fresh buffer allocated for a refused call is dropped again.
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
        lerp_host(views, params, /*copy=*/true, 1.0, layout);
        break;
      case AsvAction::Lerp:
        lerp_host(views, params, /*copy=*/false, next.weight, layout);
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
    if (fused::copy_out(params, views, layout)) return;
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
