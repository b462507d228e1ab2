// `torch.ops.asymvalley.valley_asymmetry(offsets, losses) -> Tensor`, whose body is Rust
// (`asymvalley_valley_asymmetry_raw` in src/ops/src/ffi.rs, over src/ops/src/valley.rs): the same computation the CLI uses.
// `torch.ops.asymvalley.valley_probe(...) -> (str, Tensor[])`: the CLI's whole probe
// (`asymvalley_valley_probe_raw`, over src/ops/src/probe.rs) on a module given as bytes.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "rust_ffi.h"

namespace {

at::Tensor valley_asymmetry_cpu(const at::Tensor& offsets, const at::Tensor& losses) {
  TORCH_CHECK(offsets.dim() == 1, "valley_asymmetry: offsets must be 1-D [P], got ",
              offsets.sizes());
  TORCH_CHECK(losses.dim() == 1 || losses.dim() == 2,
              "valley_asymmetry: losses must be [P] or [B, P], got ", losses.sizes());
  const int64_t p = offsets.size(0);
  // Checked here, before the reshape below, which would fail with a message about -1 instead.
  TORCH_CHECK(p > 0, "valley_asymmetry: offsets is [] (empty); expected at least 3 offsets "
              "(0 and a pair +-r)");
  TORCH_CHECK(losses.size(-1) == p, "valley_asymmetry: losses' last dimension (",
              losses.size(-1), ") must equal the number of offsets (", p, ")");
  TORCH_CHECK(offsets.is_floating_point() && losses.is_floating_point(),
              "valley_asymmetry: offsets and losses must be floating point");
  const auto fields = static_cast<int64_t>(asymvalley_valley_asymmetry_fields());
  auto o = offsets.detach().to(at::kCPU, at::kDouble).contiguous();
  auto l = losses.detach().to(at::kCPU, at::kDouble).contiguous().reshape({-1, p});
  const int64_t b = l.size(0);
  auto out = at::empty({b, fields}, at::TensorOptions().dtype(at::kDouble));
  for (int64_t i = 0; i < b; ++i) {
    char* err = asymvalley_valley_asymmetry_raw(o.data_ptr<double>(), l[i].data_ptr<double>(),
                                                static_cast<size_t>(p),
                                                out[i].data_ptr<double>(),
                                                static_cast<size_t>(fields));
    asymvalley::raise_if(err, "valley_asymmetry");
  }
  if (losses.dim() == 1) out = out.reshape({fields});
  return out.to(losses.device());
}

at::Tensor valley_asymmetry_meta(const at::Tensor& offsets, const at::Tensor& losses) {
  TORCH_CHECK(losses.dim() == 1 || losses.dim() == 2,
              "valley_asymmetry: losses must be [P] or [B, P]");
  const auto fields = static_cast<int64_t>(asymvalley_valley_asymmetry_fields());
  std::vector<int64_t> shape;
  if (losses.dim() == 2) shape.push_back(losses.size(0));
  shape.push_back(fields);
  return at::empty(shape, losses.options().dtype(at::kDouble));
}

void collect_tensor(void* data, const at::Tensor* t) {
  static_cast<std::vector<at::Tensor>*>(data)->push_back(*t);
}

// Every tensor is detached (the probe differentiates the module's own parameters, never the
// data) and handed to Rust as a fresh handle that Rust owns and frees.
std::tuple<std::string, std::vector<at::Tensor>> valley_probe(
    const at::Tensor& module, const at::Tensor& inputs, const at::Tensor& targets,
    const std::optional<at::Tensor>& test_inputs, const std::optional<at::Tensor>& test_targets,
    at::TensorList between_a, at::TensorList between_b, at::TensorList directions,
    const std::string& request) {
  TORCH_CHECK(module.dim() == 1 && module.scalar_type() == at::kByte && module.device().is_cpu(),
              "valley_probe: module must be a 1-D uint8 CPU tensor (the bytes of torch.jit.save), got ",
              module.scalar_type(), " ", module.sizes(), " on ", module.device());
  TORCH_CHECK(test_inputs.has_value() == test_targets.has_value(),
              "valley_probe: test_inputs and test_targets must be given together");
  TORCH_CHECK(between_a.size() == between_b.size(), "valley_probe: between_a has ", between_a.size(),
              " tensors, between_b ", between_b.size(), "; expected the same names in both");
  auto bytes = module.contiguous();
  std::vector<at::Tensor*> handles;
  auto add = [&handles](const at::Tensor& t) { handles.push_back(new at::Tensor(t.detach())); };
  add(inputs);
  add(targets);
  const bool has_test = test_inputs.has_value();
  if (has_test) {
    add(*test_inputs);
    add(*test_targets);
  }
  for (const auto& t : between_a) add(t);
  for (const auto& t : between_b) add(t);
  for (const auto& t : directions) add(t);
  char* json = nullptr;
  std::vector<at::Tensor> out;
  char* err = asymvalley_valley_probe_raw(bytes.data_ptr<uint8_t>(), static_cast<size_t>(bytes.numel()),
                                          handles.data(), handles.size(), has_test ? 1 : 0,
                                          request.c_str(), &json, &collect_tensor, &out);
  asymvalley::raise_if(err, "valley_probe");
  std::string reply = json == nullptr ? std::string() : std::string(json);
  asymvalley_op_free_error(json);
  return {reply, out};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(asymvalley, m) {
  m.def("valley_asymmetry(Tensor offsets, Tensor losses) -> Tensor");
  m.def(
      "valley_probe(Tensor module, Tensor inputs, Tensor targets, Tensor? test_inputs, "
      "Tensor? test_targets, Tensor[] between_a, Tensor[] between_b, Tensor[] directions, str request) "
      "-> (str, Tensor[])");
}

// valley_probe has no Meta kernel: its result is a string and a list whose length depends on the
// module's parameters (known only once the bytes are loaded), so no shape can be inferred
// without running it; it is a measurement, not a step of a traced graph.
TORCH_LIBRARY_IMPL(asymvalley, CompositeExplicitAutograd, m) {
  m.impl("valley_asymmetry", &valley_asymmetry_cpu);
  m.impl("valley_probe", &valley_probe);
}

TORCH_LIBRARY_IMPL(asymvalley, Meta, m) {
  m.impl("valley_asymmetry", &valley_asymmetry_meta);
}

