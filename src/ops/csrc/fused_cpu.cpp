// The op library's side of the fused CPU pass (see fused_cpu.h): eligibility, the host layout,
// the per-call pointer tables, and the call into the core's `av_cpu_apply`.
#include "fused_cpu.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "fused/cpu.h"

namespace asymvalley::fused {
namespace {

std::atomic<int64_t> g_passes{0};

// The pass's code for a dtype, or -1 for one it does not read.
int code_of(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return AV_F32;
    case at::kDouble: return AV_F64;
    case at::kBFloat16: return AV_BF16;
    case at::kHalf: return AV_F16;
    default: return -1;
  }
}

// Whether the pass can address `t` as `numel` dense elements of its dtype, on the CPU.
bool addressable(const at::Tensor& t) {
  return t.defined() && t.device().is_cpu() && t.layout() == at::kStrided && t.has_storage() && !t.is_neg() &&
         t.is_contiguous() && code_of(t.scalar_type()) >= 0;
}

bool is_average_dtype(at::ScalarType t) { return t == at::kFloat || t == at::kDouble; }

// One list's pointer and dtype tables, reused across calls on a thread (no allocation once warm).
struct Table {
  std::vector<void*> ptr;
  std::vector<unsigned char> dtype;

  // Fills the tables from `ts`; false if some tensor is not addressable (or, when `average`, not
  // float32/float64).
  bool fill(at::TensorList ts, bool average) {
    ptr.clear();
    dtype.clear();
    for (const auto& t : ts) {
      if (!addressable(t) || (average && !is_average_dtype(t.scalar_type()))) return false;
      ptr.push_back(t.data_ptr());
      dtype.push_back(static_cast<unsigned char>(code_of(t.scalar_type())));
    }
    return true;
  }
  const void* const* cptr() const { return const_cast<const void* const*>(ptr.data()); }
};

struct Scratch {
  Table avg, src, out;
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// Runs one pass; a failure here (an exception inside ATen's thread pool) is reported, never
// thrown across the C boundary, and may leave the tensors partly written: the validator has
// accepted the call, so only a failure of the pool itself gets here.
void run(int op, const HostLayout& layout, const Table* avg, const Table* src, const Table* out, double scalar,
         const char* what) {
  const int rc = av_cpu_apply(op, layout.view(), layout.blocks(), avg->ptr.data(),
                              src != nullptr ? src->cptr() : nullptr, out != nullptr ? out->ptr.data() : nullptr,
                              avg->dtype.data(), src != nullptr ? src->dtype.data() : nullptr,
                              out != nullptr ? out->dtype.data() : nullptr, scalar);
  TORCH_CHECK(rc == 0, what, ": the fused CPU pass failed (code ", rc,
              ": an exception inside the thread pool); the tensors may be partly updated");
  g_passes.fetch_add(1, std::memory_order_relaxed);
}

// A tensor's bytes, for the aliasing test of `bias`.
struct Span {
  uintptr_t start, end;
};

Span span_of(const at::Tensor& t) {
  const auto s = reinterpret_cast<uintptr_t>(t.data_ptr());
  return Span{s, s + static_cast<uintptr_t>(t.numel()) * t.element_size()};
}

}  // namespace

void HostLayout::fit(at::TensorList ts) {
  bool same = ts.size() == sizes_.size();
  for (size_t t = 0; same && t < ts.size(); ++t) same = static_cast<av_u64>(ts[t].numel()) == sizes_[t];
  if (same) return;
  sizes_.clear();
  starts_.clear();
  first_.clear();
  av_u64 next = 0;
  for (const auto& x : ts) {
    const auto n = static_cast<av_u64>(x.numel());
    starts_.push_back(next);
    sizes_.push_back(n);
    next = (next + n + kAlign - 1) & ~(kAlign - 1);
  }
  // The last tensor's padding belongs to no block.
  total_ = sizes_.empty() ? 0 : starts_.back() + sizes_.back();
  const av_u64 blocks = (total_ + kBlockElems - 1) / kBlockElems;
  first_.reserve(blocks);
  size_t t = 0;
  for (av_u64 b = 0; b < blocks; ++b) {
    const av_u64 lo = b * kBlockElems;
    while (t < sizes_.size() && starts_[t] + sizes_[t] <= lo) ++t;
    first_.push_back(static_cast<unsigned int>(t));
  }
}

AvLayout HostLayout::view() const {
  return AvLayout{starts_.data(), sizes_.data(), first_.data(), static_cast<unsigned int>(sizes_.size()), total_,
                  kBlockElems};
}

bool lerp(at::TensorList avg, at::TensorList params, bool copy, double weight, HostLayout& layout) {
  auto& s = scratch();
  if (!s.avg.fill(avg, /*average=*/true) || !s.src.fill(params, /*average=*/false)) return false;
  layout.fit(avg);
  run(copy ? AV_OP_COPY_IN : AV_OP_LERP, layout, &s.avg, &s.src, nullptr, weight, "update");
  return true;
}

bool copy_out(at::TensorList out, at::TensorList avg, HostLayout& layout) {
  auto& s = scratch();
  if (!s.avg.fill(avg, /*average=*/true) || !s.out.fill(out, /*average=*/false)) return false;
  layout.fit(avg);
  run(AV_OP_COPY_OUT, layout, &s.avg, nullptr, &s.out, 0.0, "copy_to");
  return true;
}

bool bias(at::TensorList out, at::TensorList avg, at::TensorList anchor, double beta, HostLayout& layout) {
  auto& s = scratch();
  if (!s.avg.fill(avg, /*average=*/true) || !s.src.fill(anchor, /*average=*/false) ||
      !s.out.fill(out, /*average=*/false) || !bias_aliasing_ok(out, avg, anchor)) {
    return false;
  }
  layout.fit(avg);
  run(AV_OP_BIAS, layout, &s.avg, &s.src, &s.out, beta, "bias_toward_flat_");
  return true;
}

// Whether every out[i] either shares no byte with any avg or anchor tensor, or is anchor[i]
// itself (same address, dtype and size: the pass reads each element before writing it). The
// read spans are sorted once; for each out, the spans starting before its end are a prefix, and a
// running maximum of their ends stops the backward walk at the first one that cannot reach it,
// so a call without aliasing costs O(n log n).
bool bias_aliasing_ok(at::TensorList out, at::TensorList avg, at::TensorList anchor) {
  struct Read {
    Span s;
    int64_t anchor_of;  // the index i when this is anchor[i], else -1
  };
  thread_local std::vector<Read> reads;
  thread_local std::vector<uintptr_t> reach;
  reads.clear();
  reach.clear();
  for (size_t i = 0; i < avg.size(); ++i) {
    if (avg[i].numel() > 0) reads.push_back(Read{span_of(avg[i]), -1});
    if (anchor[i].numel() > 0) reads.push_back(Read{span_of(anchor[i]), static_cast<int64_t>(i)});
  }
  std::sort(reads.begin(), reads.end(), [](const Read& x, const Read& y) { return x.s.start < y.s.start; });
  uintptr_t far = 0;
  for (const auto& r : reads) reach.push_back(far = std::max(far, r.s.end));
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i].numel() == 0) continue;
    const Span o = span_of(out[i]);
    auto k = std::lower_bound(reads.begin(), reads.end(), o.end,
                              [](const Read& r, uintptr_t e) { return r.s.start < e; }) -
             reads.begin();
    for (auto j = k - 1; j >= 0 && reach[j] > o.start; --j) {
      const Read& r = reads[j];
      if (r.s.end <= o.start) continue;
      const bool own_anchor = r.anchor_of == static_cast<int64_t>(i) && r.s.start == o.start && r.s.end == o.end &&
                              anchor[i].scalar_type() == out[i].scalar_type();
      if (!own_anchor) return false;
    }
  }
  return true;
}

int64_t passes() { return g_passes.load(std::memory_order_relaxed); }

std::string variant() { return av_cpu_variant() == 1 ? "avx2+fma" : "baseline"; }

}  // namespace asymvalley::fused
