// The CPU form of the fused update: one parallel pass over the plan's blocks (the same
// plan.cuh indexing the kernel runs), instead of one OpenMP region per tensor.
// avg <- avg + w * (src - avg) per element, computed in the average's dtype (fp32 or fp64).
#include "plan.cuh"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <exception>

namespace {

// Dtype codes shared with average.cu and src/core/src/plan/ffi.rs.
enum : unsigned char { AV_F32 = 0, AV_F64 = 1, AV_BF16 = 2, AV_F16 = 3 };

inline double load(const void* p, unsigned char dt, av_u64 i) {
  switch (dt) {
    case AV_F64: return static_cast<const double*>(p)[i];
    case AV_BF16: return static_cast<float>(static_cast<const c10::BFloat16*>(p)[i]);
    case AV_F16: return static_cast<float>(static_cast<const c10::Half*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

// fp32 averages compute in fp32 (as torch's lerp does): the loop then vectorizes, where a
// double round trip halved the SIMD width and left the pass 1.4x off the flat-lerp floor.
template <typename S>
void lerp_segment(float* a, const S* p, av_u64 n, double w) {
  const float wf = static_cast<float>(w);
  for (av_u64 i = 0; i < n; ++i) {
    const float v = a[i];
    a[i] = v + wf * (static_cast<float>(p[i]) - v);
  }
}

}  // namespace

// Returns 0 on success, 1 if an exception was caught (nothing crosses the FFI boundary).
// The caller (Rust) has checked every pointer, size and dtype against the layout.
extern "C" int av_cpu_lerp(AvLayout l, av_u64 blocks, void* const* avg, const void* const* src,
                           const unsigned char* avg_dtype, const unsigned char* src_dtype,
                           double w) {
  try {
    at::parallel_for(0, static_cast<int64_t>(blocks), 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        AvCursor c = av_cursor_begin(l, static_cast<av_u64>(b));
        AvSegment s;
        while (av_cursor_next(l, c, s)) {
          const unsigned char da = avg_dtype[s.tensor];
          const unsigned char dp = src_dtype[s.tensor];
          const void* p = src[s.tensor];
          if (w == 1.0) {
            // The first SWA update copies: v + 1 * (p - v) is not exactly p in floating point.
            for (av_u64 i = 0; i < s.len; ++i) {
              const double v = load(p, dp, s.offset + i);
              if (da == AV_F64) {
                static_cast<double*>(avg[s.tensor])[s.offset + i] = v;
              } else {
                static_cast<float*>(avg[s.tensor])[s.offset + i] = static_cast<float>(v);
              }
            }
            continue;
          }
          if (da == AV_F64) {
            double* a = static_cast<double*>(avg[s.tensor]) + s.offset;
            if (dp == AV_F64) {
              // fp64 parameters keep full precision (no float round trip).
              const double* q = static_cast<const double*>(p) + s.offset;
              for (av_u64 i = 0; i < s.len; ++i) a[i] = a[i] + w * (q[i] - a[i]);
            } else {
              for (av_u64 i = 0; i < s.len; ++i) a[i] = a[i] + w * (load(p, dp, s.offset + i) - a[i]);
            }
          } else {
            float* a = static_cast<float*>(avg[s.tensor]) + s.offset;
            switch (dp) {
              case AV_BF16: lerp_segment(a, static_cast<const c10::BFloat16*>(p) + s.offset, s.len, w); break;
              case AV_F16: lerp_segment(a, static_cast<const c10::Half*>(p) + s.offset, s.len, w); break;
              case AV_F32: lerp_segment(a, static_cast<const float*>(p) + s.offset, s.len, w); break;
              default:
                for (av_u64 i = 0; i < s.len; ++i)
                  a[i] = static_cast<float>(a[i] + w * (load(p, dp, s.offset + i) - a[i]));
            }
          }
        }
      }
    });
    return 0;
  } catch (const std::exception&) {
    return 1;
  }
}
