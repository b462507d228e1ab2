// The schemas and registrations of the op library: `torch.ops.asymvalley.{swa_update_,
// ema_update_, bias_toward_flat_}` with their CompositeExplicitAutograd and Meta kernels, and
// `torch.classes.asymvalley.Averager` (`valley_asymmetry` registers itself in valley_op.cpp), and
// the fused CPU pass's two diagnostics `_fused_cpu_passes()` and `_cpu_variant()`, and the fused
// CUDA path's switch and counters (`_fused_cuda`, `_set_fused_cuda`, `_fused_cuda_launches/builds`).
#include <torch/custom_class.h>
#include <torch/library.h>

#include "averager_class.h"
#include "fused_cuda.h"
#include "kernels.h"

TORCH_LIBRARY(asymvalley, m) {
  // Each op also mutates a top-level tensor or is called with lists that outlive the graph;
  // TorchScript's dead-code elimination may drop a call whose only effect is mutating a list
  // argument, so each schema also marks a top-level tensor (or is used on lists that outlive the graph).
  m.def("swa_update_(Tensor(a!)[] avg, Tensor[] params, Tensor(b!) n_averaged) -> ()");
  m.def("ema_update_(Tensor(a!)[] avg, Tensor[] params, Tensor(b!) n_averaged, float decay) -> ()");
  m.def("bias_toward_flat_(Tensor(a!)[] out, Tensor[] avg, Tensor[] anchor, float beta) -> ()");
  // Diagnostics of the fused CPU pass (fused_cpu.h): how many passes ran, and which compiled variant.
  m.def("_fused_cpu_passes() -> int", &asymvalley::fused::passes);
  m.def("_cpu_variant() -> str", &asymvalley::fused::variant);
  // The fused CUDA path's switch (fused_cuda.h: ASYMVALLEY_OP_FUSED_CUDA, off by default) and counters.
  m.def("_fused_cuda() -> bool", &asymvalley::fused_cuda::enabled);
  m.def("_set_fused_cuda(bool on) -> ()", &asymvalley::fused_cuda::set_enabled);
  m.def("_fused_cuda_launches() -> int", &asymvalley::fused_cuda::launches);
  m.def("_fused_cuda_builds() -> int", &asymvalley::fused_cuda::builds);

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
