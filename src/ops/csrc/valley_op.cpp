// `torch.ops.asymvalley.valley_asymmetry(offsets, losses) -> Tensor`, whose body is Rust
// (`asymvalley_valley_asymmetry_raw` in src/ops/src/ffi.rs, over src/ops/src/valley.rs): the same computation the CLI uses.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>
#include <string>
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

}  // namespace

TORCH_LIBRARY_FRAGMENT(asymvalley, m) {
  m.def("valley_asymmetry(Tensor offsets, Tensor losses) -> Tensor");
}

TORCH_LIBRARY_IMPL(asymvalley, CompositeExplicitAutograd, m) {
  m.impl("valley_asymmetry", &valley_asymmetry_cpu);
}

TORCH_LIBRARY_IMPL(asymvalley, Meta, m) {
  m.impl("valley_asymmetry", &valley_asymmetry_meta);
}

