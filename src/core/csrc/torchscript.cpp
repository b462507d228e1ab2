// A minimal TorchScript module handle for src/shim/jit.rs (used by src/valley/torchscript.rs). tch 0.24's `CModule`
// exposes `named_parameters` but not buffers, so BatchNorm running statistics of a scripted
// model cannot be reset or read through it; this handle exposes both (as aliases).
//
// Every extern "C" function returns NULL on success or a malloc'ed message freed with
// `asymvalley_free_error` (foreach.cpp); no C++ exception crosses into Rust.
#include <ATen/ATen.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/serialization/import.h>

#include <sstream>
#include <string>
#include <vector>

#include "guard.h"

using asymvalley::ffi::guarded;

extern "C" {

char* asymvalley_jit_load(const char* path, void** out) {
  return guarded([&] {
    auto module = torch::jit::load(std::string(path));
    module.eval();
    *out = new torch::jit::Module(std::move(module));
  });
}

// The same from the bytes of a `torch.jit.save` (a Python caller's module, never on disk).
char* asymvalley_jit_load_bytes(const char* data, size_t len, void** out) {
  return guarded([&] {
    std::istringstream in(std::string(data, len));
    auto module = torch::jit::load(in);
    module.eval();
    *out = new torch::jit::Module(std::move(module));
  });
}

void asymvalley_jit_free(void* module) { delete static_cast<torch::jit::Module*>(module); }

// Calls `cb(data, name, new at::Tensor alias)` for every parameter (buffers = 0) or buffer
// (buffers = 1); the Rust side owns each new handle.
char* asymvalley_jit_named(void* module, int buffers, void* data,
                           void (*cb)(void*, const char*, at::Tensor*)) {
  return guarded([&] {
    auto* m = static_cast<torch::jit::Module*>(module);
    if (buffers != 0) {
      for (const auto& b : m->named_buffers(true)) cb(data, b.name.c_str(), new at::Tensor(b.value));
    } else {
      for (const auto& p : m->named_parameters(true))
        cb(data, p.name.c_str(), new at::Tensor(p.value));
    }
  });
}

char* asymvalley_jit_forward(void* module, at::Tensor* input, at::Tensor** out) {
  return guarded([&] {
    auto* m = static_cast<torch::jit::Module*>(module);
    std::vector<c10::IValue> args{*input};
    auto result = m->forward(args);
    if (result.isTuple() && !result.toTupleRef().elements().empty()) {
      result = result.toTupleRef().elements()[0];
    }
    TORCH_CHECK(result.isTensor(), "the model's forward returned ", result.tagKind(),
                ", expected a Tensor (or a tuple whose first element is one)");
    *out = new at::Tensor(result.toTensor());
  });
}

char* asymvalley_jit_train(void* module, int on) {
  return guarded([&] { static_cast<torch::jit::Module*>(module)->train(on != 0); });
}

// Moves every parameter and buffer to `device`: tch's encoding, -1 for the CPU, k >= 0 for CUDA
// device k. Aliases handed out before the move keep pointing at the old tensors.
char* asymvalley_jit_to(void* module, int device) {
  return guarded([&] {
    auto target = device < 0 ? at::Device(at::kCPU)
                             : at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device));
    static_cast<torch::jit::Module*>(module)->to(target);
  });
}

}  // extern "C"
