// The checks of validate.h. Order within a call: the lists (empty, lengths), then tensor by
// tensor (defined, usable layout, dtype, shape, device), the counter, the scalars, and last the
// memory overlap between arguments (the only check that looks at all tensors at once).
#include "validate.h"

#include <ATen/MemoryOverlap.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cfloat>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

namespace asymvalley::check {

std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kByte: return "torch.uint8";
    case at::kChar: return "torch.int8";
    case at::kShort: return "torch.int16";
    case at::kInt: return "torch.int32";
    case at::kLong: return "torch.int64";
    case at::kHalf: return "torch.float16";
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kComplexHalf: return "torch.complex32";
    case at::kComplexFloat: return "torch.complex64";
    case at::kComplexDouble: return "torch.complex128";
    case at::kBool: return "torch.bool";
    case at::kBFloat16: return "torch.bfloat16";
    default: return std::string("torch.") + c10::toString(t);
  }
}

namespace {

constexpr const char* kFloats =
    "a floating-point tensor (torch.float16, torch.bfloat16, torch.float32 or torch.float64)";

// A number as Rust prints it in the configuration errors: `NaN`, `inf`, shortest round trip.
std::string number(double x) {
  if (std::isnan(x)) return "NaN";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  char buf[32];
  auto res = std::to_chars(buf, buf + sizeof(buf), x);
  return std::string(buf, res.ptr);
}

// `name[i]` as the schema names the tensor (`avg[3]`), or `name` alone (i < 0) for one tensor.
std::string arg_name(const char* name, int64_t i) {
  return i < 0 ? std::string(name) : std::string(name) + "[" + std::to_string(i) + "]";
}

// The name as the pairing errors quote it: `avg[3] (in swa_update_)`.
std::string quoted(const char* name, int64_t i, const char* op) {
  return arg_name(name, i) + " (in " + op + ")";
}

bool is_float(at::ScalarType t) {
  return t == at::kHalf || t == at::kFloat || t == at::kDouble || t == at::kBFloat16;
}

// The one dtype policy, shared with the Rust `Averager` (src/core/src/average/flat.rs,
// `average_kind`): a source accumulates into its own dtype, into float64 from any floating dtype,
// or into float32 from a half-precision dtype (an fp32 average of a bf16 model). Everything else
// loses precision silently: float64 into float32 rounds every update, and a half-precision
// average of a float32 model (or a bf16 average with decay 0.9999) stops moving.
bool accumulates_into(at::ScalarType src, at::ScalarType dst) {
  if (src == dst || dst == at::kDouble) return true;
  return dst == at::kFloat && (src == at::kHalf || src == at::kBFloat16);
}

// What to do instead, for the refusal of `accumulates_into`.
std::string widening_hint(at::ScalarType src, at::ScalarType dst) {
  if (src == at::kDouble && dst == at::kFloat) {
    return "; a torch.float64 source would be rounded to torch.float32 at every update: keep the average in "
           "torch.float64, or convert the model to torch.float32";
  }
  return "; keep the average in torch.float32 or torch.float64";
}

bool symbolic(const at::Tensor& t) { return t.unsafeGetTensorImpl()->has_symbolic_sizes_strides(); }

// Whether two elements of `t` may share an address. ATen's `has_internal_overlap` answers
// "yes" for a stride-0 dimension and "no" for a non-overlapping dense tensor; for the other
// strided views (`as_strided`, slices with steps) this decides: with the dimensions of size > 1
// sorted by stride, each stride must exceed the reach of all smaller ones (the layout of any
// slice of a contiguous tensor). Anything else is refused as "may overlap".
bool may_self_overlap(const at::Tensor& t) {
  // A fake tensor with symbolic sizes (torch.compile with dynamic shapes) has no layout to check
  // yet; the real call checks its real tensors.
  if (symbolic(t) || t.numel() <= 1) return false;
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

// Refuses a tensor the kernels cannot use as given, whatever its dtype and shape: undefined, a
// non-strided layout (sparse, mkldnn) or quantized; and for a tensor the op writes, an inference
// tensor outside inference mode (ATen refuses that in-place write, but only when it reaches that
// tensor, after the earlier ones were written) and a layout whose elements overlap (an `expand`
// or `as_strided` view: the write would race with itself, or fail half-way through the list).
void usable(const char* op, const char* name, int64_t i, const at::Tensor& t, bool written) {
  TORCH_CHECK(t.defined(), "invalid ", arg_name(name, i), " = an undefined tensor (in ", op,
              "): expected a tensor");
  TORCH_CHECK(t.layout() == at::kStrided, "invalid ", arg_name(name, i), " = a tensor of layout ",
              t.layout(), " (in ", op, "): expected a dense tensor (layout torch.strided)");
  TORCH_CHECK(!t.is_quantized(), "invalid ", arg_name(name, i), " = a quantized tensor (in ", op,
              "): expected a floating-point tensor (dequantize() it first)");
  if (!written) return;
  TORCH_CHECK(!t.is_inference() || c10::InferenceMode::is_enabled(), "invalid ", arg_name(name, i),
              " = an inference tensor (made under torch.inference_mode()) (in ", op,
              "): expected a normal tensor; an inference tensor may be updated in place only inside "
              "torch.inference_mode()");
  if (!may_self_overlap(t)) return;
  for (int64_t k = 0; k < t.dim(); ++k) {
    TORCH_CHECK(t.stride(k) != 0 || t.size(k) <= 1, "invalid ", arg_name(name, i),
                " = a view with stride 0 in dimension ", k, " (sizes ", t.sizes(), ", strides ", t.strides(),
                ") (in ", op, "): expected a tensor whose elements have distinct addresses (an expand() "
                "view cannot be written in place; clone() it)");
  }
  TORCH_CHECK(false, "invalid ", arg_name(name, i), " = a view whose elements overlap in memory (sizes ",
              t.sizes(), ", strides ", t.strides(), ") (in ", op, "): expected a tensor whose elements have "
              "distinct addresses (an as_strided view cannot be written in place; clone() it)");
}

void require_nonempty(const char* op, const Arg& a) {
  TORCH_CHECK(!a.tensors.empty(), "invalid ", a.name, " = an empty list (in ", op,
              "): expected at least one tensor");
}

void require_length(const char* op, const Arg& dst, const Arg& src) {
  TORCH_CHECK(src.tensors.size() == dst.tensors.size(), op, ": ", src.name, " has ", src.tensors.size(),
              " tensors but ", dst.name, " has ", dst.tensors.size());
}

// `dst` and each source pair up element by element: every tensor usable, floating dtypes
// related by `rule`, equal shapes and devices. The lengths are checked by the caller.
void pairing(const char* op, const Arg& dst, std::initializer_list<Arg> srcs, Dtypes rule) {
  const auto n = static_cast<int64_t>(dst.tensors.size());
  for (int64_t i = 0; i < n; ++i) {
    const auto& d = dst.tensors[i];
    usable(op, dst.name, i, d, dst.written);
    const auto dt = d.scalar_type();
    TORCH_CHECK(is_float(dt), "dtype of `", quoted(dst.name, i, op), "`: got ", dtype_name(dt), ", expected ",
                kFloats);
    for (const auto& src : srcs) {
      const auto& s = src.tensors[i];
      usable(op, src.name, i, s, src.written);
      const auto st = s.scalar_type();
      TORCH_CHECK(is_float(st), "dtype of `", quoted(src.name, i, op), "`: got ", dtype_name(st), ", expected ",
                  kFloats);
      TORCH_CHECK(rule == Dtypes::Convert || accumulates_into(st, dt), "dtype of `", quoted(src.name, i, op),
                  "`: got ", dtype_name(st), ", expected ", dtype_name(dt), " (the dtype of ", arg_name(dst.name, i),
                  "; a torch.float32 ", dst.name, " also accepts torch.float16 and torch.bfloat16, a torch.float64 ",
                  dst.name, " any floating dtype", widening_hint(st, dt), ")");
      TORCH_CHECK(s.sizes().equals(d.sizes()), "shape of `", quoted(src.name, i, op), "`: got ", s.sizes(),
                  ", expected ", d.sizes(), " (the shape of ", arg_name(dst.name, i), ")");
      TORCH_CHECK(s.device() == d.device(), "device of `", quoted(src.name, i, op), "`: got ", s.device(),
                  ", expected ", d.device(), " (the device of ", arg_name(dst.name, i), ")");
    }
  }
}

// `n_averaged`: an int64 0-dim tensor (a narrower counter wraps: uint8 after 255 updates, and the
// next update would copy instead of averaging), on the CPU or avg[0]'s device, and on the CPU not
// negative (a negative count would act as weight 1, a copy). A device counter is not read: that
// would cost a sync per update.
void counter(const char* op, const at::Tensor& n, const at::Tensor& avg0) {
  usable(op, "n_averaged", -1, n, /*written=*/true);
  const auto t = n.scalar_type();
  const bool narrow = t == at::kByte || t == at::kChar || t == at::kShort || t == at::kInt || t == at::kBool;
  TORCH_CHECK(!narrow, "invalid n_averaged dtype = ", dtype_name(t), " (in ", op,
              "): expected torch.int64; a narrower counter wraps");
  TORCH_CHECK(n.dim() == 0 && t == at::kLong, "type of `n_averaged (in ", op, ")`: got a ", dtype_name(t),
              " tensor of shape ", n.sizes(), ", expected a 0-dim integer tensor (shape [], e.g. torch.tensor(0))");
  TORCH_CHECK(n.device().is_cpu() || n.device() == avg0.device(), "device of `n_averaged (in ", op, ")`: got ",
              n.device(), ", expected cpu or ", avg0.device(), " (the device of avg[0])");
  if (n.device().is_cpu()) {
    const int64_t v = n.item<int64_t>();  // a CPU read: no device sync
    TORCH_CHECK(v >= 0, "invalid n_averaged = ", v, " (in ", op, "): expected an integer >= 0");
  }
}

// The bytes one tensor's elements occupy, for the overlap sweep.
struct Span {
  uintptr_t start, end;
  const char* name;
  int64_t index;
  bool written;
};

void push_spans(std::vector<Span>& spans, const Arg& a) {
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const auto& t = a.tensors[i];
    // Meta and fake tensors have no memory: nothing to overlap.
    if (t.is_meta() || symbolic(t) || !t.has_storage() || t.numel() == 0) continue;
    const void* p = t.data_ptr();
    if (p == nullptr) continue;
    int64_t extent = 1;
    for (int64_t k = 0; k < t.dim(); ++k) extent += (t.size(k) - 1) * t.stride(k);
    const auto start = reinterpret_cast<uintptr_t>(p);
    spans.push_back(Span{start, start + static_cast<uintptr_t>(extent) * t.element_size(), a.name,
                         static_cast<int64_t>(i), a.written});
  }
}

// No tensor the op writes shares memory with any other tensor of the call. Sweeps the byte
// ranges in address order keeping the furthest-reaching range seen so far, over all tensors and
// over the written ones: every overlapping pair with a written member is caught when its
// later-starting member is reached. Overlaps among read-only tensors (tied weights) are allowed.
void no_shared_memory(const char* op, std::initializer_list<Arg> args) {
  thread_local std::vector<Span> spans;
  spans.clear();
  for (const auto& a : args) push_spans(spans, a);
  // std::sort, not stable_sort: no temporary buffer per call (equal spans are an overlap either way).
  std::sort(spans.begin(), spans.end(), [](const Span& x, const Span& y) {
    return x.start != y.start ? x.start < y.start : x.end < y.end;
  });
  const Span* any = nullptr;
  const Span* written = nullptr;
  for (const auto& s : spans) {
    const Span* hit = s.written ? (any != nullptr && s.start < any->end ? any : nullptr)
                                : (written != nullptr && s.start < written->end ? written : nullptr);
    TORCH_CHECK(hit == nullptr, "invalid aliasing = ", arg_name(hit->name, hit->index), " and ",
                arg_name(s.name, s.index), " share memory (in ", op,
                "): expected distinct tensors: a tensor the op writes must not overlap any other argument");
    if (any == nullptr || s.end > any->end) any = &s;
    if (s.written && (written == nullptr || s.end > written->end)) written = &s;
  }
}

// The single names below are lists of one tensor (the counter) for the sweep.
at::TensorList one(const at::Tensor* t) { return t == nullptr ? at::TensorList() : at::TensorList(*t); }

}  // namespace

void update_call(const char* op, at::TensorList avg, at::TensorList params, const at::Tensor* n_averaged,
                 std::optional<double> decay) {
  const Arg a{"avg", avg, true}, p{"params", params, false};
  require_nonempty(op, a);
  require_length(op, a, p);
  pairing(op, a, {p}, Dtypes::Accumulate);
  if (n_averaged != nullptr) counter(op, *n_averaged, avg[0]);
  if (decay.has_value()) {
    TORCH_CHECK(*decay > 0.0 && *decay < 1.0, "invalid decay = ", number(*decay), " (in ", op,
                "): expected a number in the open interval (0, 1)");
  }
  no_shared_memory(op, {a, p, Arg{"n_averaged", one(n_averaged), true}});
}

void bias_call(at::TensorList out, at::TensorList avg, at::TensorList anchor, double beta) {
  const char* op = "bias_toward_flat_";
  // `avg` is the reference list: `anchor` accumulates into its dtype, `out` takes any float.
  const Arg a{"avg", avg, false}, c{"anchor", anchor, false}, o{"out", out, true};
  require_nonempty(op, a);
  require_length(op, a, c);
  require_length(op, a, o);
  pairing(op, a, {c}, Dtypes::Accumulate);
  pairing(op, a, {o}, Dtypes::Convert);
  TORCH_CHECK(std::isfinite(beta), "invalid beta = ", number(beta), " (in ", op, "): expected a finite number");
  // The kernel scales by beta in the opmath type of each avg dtype (float for float16, bfloat16
  // and float32): ATen converts the scalar with an overflow check and would throw at the first
  // such group, after the float64 groups were written.
  for (size_t i = 0; i < avg.size(); ++i) {
    if (avg[i].scalar_type() == at::kDouble) continue;
    TORCH_CHECK(std::fabs(beta) <= static_cast<double>(FLT_MAX), "invalid beta = ", number(beta), " (in ", op,
                "): expected |beta| <= ", number(static_cast<double>(FLT_MAX)), " (the largest torch.float32: avg[",
                i, "] is ", dtype_name(avg[i].scalar_type()), ", computed in float32)");
    // A nonzero beta below the smallest normal float32 is flushed or rounded to a subnormal in
    // float32, so the result would not be `avg + beta (avg - anchor)` as asked; the Rust
    // `validate_beta_for` refuses the same range.
    TORCH_CHECK(beta == 0.0 || std::fabs(beta) >= static_cast<double>(FLT_MIN), "invalid beta = ", number(beta),
                " (in ", op, "): expected 0 or |beta| >= ", number(static_cast<double>(FLT_MIN)),
                " (the smallest normal torch.float32: avg[", i, "] is ", dtype_name(avg[i].scalar_type()),
                ", computed in float32)");
  }
  no_shared_memory(op, {o});
}

void write_call(const char* op, at::TensorList params, at::TensorList average, bool average_written) {
  const Arg p{"params", params, true}, a{"average", average, average_written};
  TORCH_CHECK(params.size() == average.size(), op, ": params has ", params.size(),
              " tensors but the averaged tensors has ", average.size());
  require_nonempty(op, p);
  pairing(op, p, {a}, Dtypes::Convert);
  no_shared_memory(op, {p, a});
}

}  // namespace asymvalley::check
