// The CPU form of the fused update: one parallel pass over the plan's blocks (the same plan.cuh
// indexing the kernel runs), instead of one OpenMP region per tensor.
//
// Per element, with `a` the average (fp32 or fp64), `p` the parameter widened (or, from fp64 into
// an fp32 average, rounded) to the average's dtype, and every scalar cast to that dtype:
//   lerp:     a <- w < 0.5 ? fma(w, p - a, a) : fma(w - 1, p - a, p)
//   copy-in:  a <- p                      (the first SWA update: a + 1*(p - a) is not always p)
//   copy-out: out <- a                    (rounded to out's dtype, nearest-even, as Tensor::copy_)
//   bias:     out <- fma(beta, a - p, a)  (computed in a's dtype, then rounded to out's dtype,
//                                          any of the four: the model's, or the average's)
// These are ATen's own CPU formulas: `lerp` is `a + w(p - a)` below one half and
// `p - (p - a)(1 - w)` above, and its vectorized kernel evaluates each as one fused multiply-add
// (1 - w is exact there), as does `add(a, d, alpha)`. So the pass equals `torch.lerp` and
// `torch.add` bitwise, on fp32 and fp64, and on half parameters widened to fp32 first.
//
// Speed: the pass is memory bound, but only if the loops are vectorized. The library is built for
// the baseline x86-64 (SSE2, no FMA: an `fmaf` there is a libm call), so the block loop is compiled
// twice, once for AVX2+FMA, and `__builtin_cpu_supports` picks the variant once per process.
#include "cpu.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>

#if defined(__GNUC__)
#define AV_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define AV_ALWAYS_INLINE inline
#endif

namespace {

// ATen uses a block of 32768 elements as the smallest unit worth a thread (at::internal::GRAIN_SIZE).
constexpr int64_t kGrainElems = 32768;

AV_ALWAYS_INLINE float fused_mul_add(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
AV_ALWAYS_INLINE double fused_mul_add(double a, double b, double c) { return __builtin_fma(a, b, c); }

// The parameter's value in the average's dtype A.
template <typename A, typename S>
AV_ALWAYS_INLINE A widen(S x) {
  return static_cast<A>(static_cast<float>(x));
}
template <>
AV_ALWAYS_INLINE float widen<float, float>(float x) { return x; }
template <>
AV_ALWAYS_INLINE float widen<float, double>(double x) { return static_cast<float>(x); }
template <>
AV_ALWAYS_INLINE double widen<double, double>(double x) { return x; }
template <>
AV_ALWAYS_INLINE double widen<double, float>(float x) { return x; }

// The average's value rounded to the destination's dtype O (round to nearest even).
template <typename O, typename A>
AV_ALWAYS_INLINE O narrow(A x) {
  return static_cast<O>(static_cast<float>(x));
}
template <>
AV_ALWAYS_INLINE float narrow<float, float>(float x) { return x; }
template <>
AV_ALWAYS_INLINE double narrow<double, float>(float x) { return x; }
template <>
AV_ALWAYS_INLINE double narrow<double, double>(double x) { return x; }
template <>
AV_ALWAYS_INLINE float narrow<float, double>(double x) { return static_cast<float>(x); }

// The branch on w is taken once per segment, so each loop body is branch-free and vectorizes.
template <bool kSmallWeight, typename A, typename S>
AV_ALWAYS_INLINE void lerp_loop(A* __restrict a, const S* __restrict p, av_u64 n, A coeff) {
  for (av_u64 i = 0; i < n; ++i) {
    const A x = a[i];
    const A y = widen<A>(p[i]);
    a[i] = fused_mul_add(coeff, y - x, kSmallWeight ? x : y);
  }
}

template <typename A, typename S>
AV_ALWAYS_INLINE void copy_in_loop(A* __restrict a, const S* __restrict p, av_u64 n) {
  for (av_u64 i = 0; i < n; ++i) a[i] = widen<A>(p[i]);
}

template <typename A, typename O>
AV_ALWAYS_INLINE void copy_out_loop(O* __restrict out, const A* __restrict a, av_u64 n) {
  for (av_u64 i = 0; i < n; ++i) out[i] = narrow<O>(a[i]);
}

// `out` may alias `p` (the anchor is the model, and the model is the destination; then O == S):
// each element is read before it is written, at the same index, so no __restrict between those
// two. `out` never aliases `a`.
template <typename A, typename S, typename O>
AV_ALWAYS_INLINE void bias_loop(O* out, const A* __restrict a, const S* p, av_u64 n, A beta) {
  for (av_u64 i = 0; i < n; ++i) {
    const A x = a[i];
    out[i] = narrow<O>(fused_mul_add(beta, x - widen<A>(p[i]), x));
  }
}

// What one pass applies, and to which tables (indexed by tensor).
struct Args {
  AvLayout l;
  int op;
  void* const* avg;
  const void* const* src;
  void* const* out;
  const unsigned char* avg_dtype;
  const unsigned char* src_dtype;
  const unsigned char* out_dtype;
  double scalar;
};

template <typename A, typename S>
AV_ALWAYS_INLINE void bias_typed(const Args& x, const AvSegment& s) {
  const A* a = static_cast<const A*>(x.avg[s.tensor]) + s.offset;
  const S* p = static_cast<const S*>(x.src[s.tensor]) + s.offset;
  void* o = x.out[s.tensor];
  const A beta = static_cast<A>(x.scalar);
  switch (x.out_dtype[s.tensor]) {
    case AV_F64: bias_loop(static_cast<double*>(o) + s.offset, a, p, s.len, beta); break;
    case AV_BF16: bias_loop(static_cast<c10::BFloat16*>(o) + s.offset, a, p, s.len, beta); break;
    case AV_F16: bias_loop(static_cast<c10::Half*>(o) + s.offset, a, p, s.len, beta); break;
    default: bias_loop(static_cast<float*>(o) + s.offset, a, p, s.len, beta);
  }
}

template <typename A, typename S>
AV_ALWAYS_INLINE void segment_typed(const Args& x, const AvSegment& s) {
  A* a = static_cast<A*>(x.avg[s.tensor]) + s.offset;
  switch (x.op) {
    case AV_OP_LERP: {
      const S* p = static_cast<const S*>(x.src[s.tensor]) + s.offset;
      const A w = static_cast<A>(x.scalar);
      if (w < A(0.5)) {
        lerp_loop<true>(a, p, s.len, w);
      } else {
        lerp_loop<false>(a, p, s.len, w - A(1));
      }
      break;
    }
    case AV_OP_COPY_IN:
      copy_in_loop(a, static_cast<const S*>(x.src[s.tensor]) + s.offset, s.len);
      break;
    case AV_OP_BIAS:
      bias_typed<A, S>(x, s);
      break;
    default:
      break;
  }
}

template <typename A>
AV_ALWAYS_INLINE void copy_out_typed(const Args& x, const AvSegment& s) {
  const A* a = static_cast<const A*>(x.avg[s.tensor]) + s.offset;
  void* o = x.out[s.tensor];
  switch (x.out_dtype[s.tensor]) {
    case AV_F64: copy_out_loop(static_cast<double*>(o) + s.offset, a, s.len); break;
    case AV_BF16: copy_out_loop(static_cast<c10::BFloat16*>(o) + s.offset, a, s.len); break;
    case AV_F16: copy_out_loop(static_cast<c10::Half*>(o) + s.offset, a, s.len); break;
    default: copy_out_loop(static_cast<float*>(o) + s.offset, a, s.len);
  }
}

template <typename A>
AV_ALWAYS_INLINE void segment_avg(const Args& x, const AvSegment& s) {
  if (x.op == AV_OP_COPY_OUT) {
    copy_out_typed<A>(x, s);
    return;
  }
  switch (x.src_dtype[s.tensor]) {
    case AV_F64: segment_typed<A, double>(x, s); break;
    case AV_BF16: segment_typed<A, c10::BFloat16>(x, s); break;
    case AV_F16: segment_typed<A, c10::Half>(x, s); break;
    default: segment_typed<A, float>(x, s);
  }
}

// The body both variants compile: blocks [b0, b1) of the plan, segment by segment.
AV_ALWAYS_INLINE void blocks_body(const Args& x, int64_t b0, int64_t b1) {
  for (int64_t b = b0; b < b1; ++b) {
    AvCursor c = av_cursor_begin(x.l, static_cast<av_u64>(b));
    AvSegment s;
    while (av_cursor_next(x.l, c, s)) {
      if (x.avg_dtype[s.tensor] == AV_F64) {
        segment_avg<double>(x, s);
      } else {
        segment_avg<float>(x, s);
      }
    }
  }
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
__attribute__((target("avx2,fma"))) void blocks_avx2(const Args& x, int64_t b0, int64_t b1) {
  blocks_body(x, b0, b1);
}

bool cpu_has_avx2_fma() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif

void blocks_default(const Args& x, int64_t b0, int64_t b1) { blocks_body(x, b0, b1); }

using BlocksFn = void (*)(const Args&, int64_t, int64_t);

// ASYMVALLEY_FUSED_CPU=baseline forces the baseline variant (read once, at the first pass): the
// tests use it to hold that variant to the same bitwise results on a machine with AVX2.
BlocksFn pick_variant() {
  const char* force = std::getenv("ASYMVALLEY_FUSED_CPU");
  if (force != nullptr && std::strcmp(force, "baseline") == 0) return blocks_default;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  if (cpu_has_avx2_fma()) return blocks_avx2;
#endif
  return blocks_default;
}

BlocksFn variant_once() {
  static const BlocksFn variant = pick_variant();
  return variant;
}

int run(const Args& x, av_u64 blocks) {
  try {
    const BlocksFn variant = variant_once();
    // A task takes at least kGrainElems elements, so neighbouring small tensors (BatchNorm
    // vectors, biases) stay on one thread instead of costing a task each.
    const int64_t block_elems = static_cast<int64_t>(x.l.block_elems);
    const int64_t grain = block_elems >= kGrainElems ? 1 : kGrainElems / block_elems;
    at::parallel_for(0, static_cast<int64_t>(blocks), grain,
                     [&](int64_t b0, int64_t b1) { variant(x, b0, b1); });
    return 0;
  } catch (const std::exception&) {
    return 1;
  } catch (...) {
    return 1;
  }
}

}  // namespace

// Returns 0 on success, 1 if an exception was caught (nothing crosses the FFI boundary).
// The caller (Rust) has checked every pointer, size and dtype against the layout.
extern "C" int av_cpu_lerp(AvLayout l, av_u64 blocks, void* const* avg, const void* const* src,
                           const unsigned char* avg_dtype, const unsigned char* src_dtype,
                           double w) {
  const Args x{l, AV_OP_LERP, avg, src, nullptr, avg_dtype, src_dtype, nullptr, w};
  return run(x, blocks);
}

// Which compiled variant the passes of this process use: 1 = AVX2+FMA, 0 = baseline.
extern "C" int av_cpu_variant() {
  try {
    return variant_once() == blocks_default ? 0 : 1;
  } catch (...) {
    return 0;
  }
}

// One pass of `op` (AvOp) over every block. Tables the op does not read may be null: `src` and
// `src_dtype` for copy-out, `out` and `out_dtype` for lerp and copy-in. For bias, `out[t]` has
// the dtype `out_dtype[t]` (Rust passes the model's: the destination is the anchor's tensor; the
// op library may pass fresh fp32 tensors for a bf16 anchor).
extern "C" int av_cpu_apply(int op, AvLayout l, av_u64 blocks, void* const* avg,
                            const void* const* src, void* const* out,
                            const unsigned char* avg_dtype, const unsigned char* src_dtype,
                            const unsigned char* out_dtype, double scalar) {
  if (op < AV_OP_LERP || op > AV_OP_BIAS) return 2;
  const Args x{l, op, avg, src, out, avg_dtype, src_dtype, out_dtype, scalar};
  return run(x, blocks);
}
