// Fused averaging kernel: one launch updates every averaged tensor of a model. Each model tensor
// is read (or written) in its own dtype and each average in its own dtype (fp32 for half
// models), so a bf16 model into an fp32 average moves 2 + 4 + 4 = 10 B/param, fp32 12 B/param.
//
// The per-element formulas are the CPU pass's (cpu.cpp) and ATen's, in the average's dtype A,
// with the model's value m widened to A and every scalar cast to A:
//   lerp:     a <- w < 0.5 ? fma(w, m - a, a) : fma(w - 1, m - a, m)
//   copy-in:  a <- m
//   copy-out: m <- a                      (rounded to m's dtype, nearest even)
//   bias:     m <- fma(beta, a - m, a)    (rounded to m's dtype)
//
// Grid: one thread block per plan block (plan.cuh); the block's threads stride over each segment,
// with 16-byte vector loads where the segment's pointers allow (every segment starts at a tensor
// offset that is a multiple of 4 elements). The scalar is a kernel argument, or, when
// `scalar_ptr` is not null, read from device memory, so that a captured CUDA graph replays with
// the current step's weight. Nothing here allocates or synchronizes.
//
// Compiled at run time by NVRTC (src/core/src/shim/cuda.rs), with plan.cuh given as an in-memory
// header and the options of nvrtc_options.txt.
#include "plan.cuh"
#include <cuda_bf16.h>
#include <cuda_fp16.h>

// Dtype codes of the plan's per-tensor dtype tables (as in cpu.cpp and src/core/src/shim/ffi.rs).
enum AvDtype : unsigned char { AV_F32 = 0, AV_F64 = 1, AV_BF16 = 2, AV_F16 = 3 };
// Operation codes (as in cpu.cpp and src/core/src/shim/ffi.rs).
enum AvOp : int { AV_OP_LERP = 0, AV_OP_COPY_IN = 1, AV_OP_COPY_OUT = 2, AV_OP_BIAS = 3 };

// The per-tensor tables of one fused update (device memory), next to the layout.
struct AvTensors {
  void* const* avg;                  // per tensor: the average's data (fp32 or fp64, contiguous)
  void* const* model;                // per tensor: the model tensor's data (contiguous)
  const unsigned char* avg_dtype;
  const unsigned char* model_dtype;
};

__device__ __forceinline__ float av_fma(float a, float b, float c) { return __fmaf_rn(a, b, c); }
__device__ __forceinline__ double av_fma(double a, double b, double c) { return __fma_rn(a, b, c); }

// The model's value in the average's dtype A.
template <typename A> __device__ __forceinline__ A av_widen(float x) { return static_cast<A>(x); }
template <typename A> __device__ __forceinline__ A av_widen(double x) {
  return static_cast<A>(x);
}
template <typename A> __device__ __forceinline__ A av_widen(__nv_bfloat16 x) {
  return static_cast<A>(__bfloat162float(x));
}
template <typename A> __device__ __forceinline__ A av_widen(__half x) {
  return static_cast<A>(__half2float(x));
}

// The average's value rounded to the model's dtype M (fp64 -> half goes through fp32, as on CPU).
template <typename M> struct AvNarrow;
template <> struct AvNarrow<float> {
  template <typename A> __device__ __forceinline__ static float of(A x) { return static_cast<float>(x); }
};
template <> struct AvNarrow<double> {
  template <typename A> __device__ __forceinline__ static double of(A x) { return static_cast<double>(x); }
};
template <> struct AvNarrow<__nv_bfloat16> {
  template <typename A> __device__ __forceinline__ static __nv_bfloat16 of(A x) {
    return __float2bfloat16_rn(static_cast<float>(x));
  }
};
template <> struct AvNarrow<__half> {
  template <typename A> __device__ __forceinline__ static __half of(A x) {
    return __float2half_rn(static_cast<float>(x));
  }
};

template <typename A>
__device__ __forceinline__ A av_lerp1(A x, A y, A coeff, bool small) {
  return av_fma(coeff, y - x, small ? x : y);
}

// 16-byte vector lerp for the two common cases (fp32 average; fp32 or bf16 model): 4 elements
// per thread per step. Returns the number of elements it handled (a multiple of 4).
__device__ __forceinline__ av_u64 av_lerp_vec(float* a, const float* m, av_u64 n, float coeff, bool small) {
  if (((reinterpret_cast<unsigned long long>(a) | reinterpret_cast<unsigned long long>(m)) & 15) != 0) return 0;
  const av_u64 n4 = n / 4;
  float4* a4 = reinterpret_cast<float4*>(a);
  const float4* m4 = reinterpret_cast<const float4*>(m);
  for (av_u64 k = threadIdx.x; k < n4; k += blockDim.x) {
    float4 x = a4[k];
    const float4 y = m4[k];
    x.x = av_lerp1(x.x, y.x, coeff, small);
    x.y = av_lerp1(x.y, y.y, coeff, small);
    x.z = av_lerp1(x.z, y.z, coeff, small);
    x.w = av_lerp1(x.w, y.w, coeff, small);
    a4[k] = x;
  }
  return n4 * 4;
}

__device__ __forceinline__ av_u64 av_lerp_vec(float* a, const __nv_bfloat16* m, av_u64 n, float coeff,
                                              bool small) {
  if ((reinterpret_cast<unsigned long long>(a) & 15) != 0 || (reinterpret_cast<unsigned long long>(m) & 7) != 0)
    return 0;
  const av_u64 n4 = n / 4;
  float4* a4 = reinterpret_cast<float4*>(a);
  const uint2* m4 = reinterpret_cast<const uint2*>(m);
  for (av_u64 k = threadIdx.x; k < n4; k += blockDim.x) {
    float4 x = a4[k];
    const uint2 raw = m4[k];
    // bf16 -> fp32 is the upper half of the fp32 bit pattern (exact).
    const float y0 = __uint_as_float(raw.x << 16), y1 = __uint_as_float(raw.x & 0xffff0000u);
    const float y2 = __uint_as_float(raw.y << 16), y3 = __uint_as_float(raw.y & 0xffff0000u);
    x.x = av_lerp1(x.x, y0, coeff, small);
    x.y = av_lerp1(x.y, y1, coeff, small);
    x.z = av_lerp1(x.z, y2, coeff, small);
    x.w = av_lerp1(x.w, y3, coeff, small);
    a4[k] = x;
  }
  return n4 * 4;
}

template <typename A, typename M>
__device__ __forceinline__ av_u64 av_lerp_vec(A*, const M*, av_u64, A, bool) {
  return 0;
}

template <typename A, typename M>
__device__ __forceinline__ void av_segment(int op, A* a, M* m, av_u64 n, double scalar) {
  switch (op) {
    case AV_OP_LERP: {
      const A w = static_cast<A>(scalar);
      const bool small = w < A(0.5);
      const A coeff = small ? w : w - A(1);
      const av_u64 done = av_lerp_vec(a, static_cast<const M*>(m), n, coeff, small);
      for (av_u64 i = done + threadIdx.x; i < n; i += blockDim.x) {
        a[i] = av_lerp1(a[i], av_widen<A>(m[i]), coeff, small);
      }
      break;
    }
    case AV_OP_COPY_IN:
      for (av_u64 i = threadIdx.x; i < n; i += blockDim.x) a[i] = av_widen<A>(m[i]);
      break;
    case AV_OP_COPY_OUT:
      for (av_u64 i = threadIdx.x; i < n; i += blockDim.x) m[i] = AvNarrow<M>::of(a[i]);
      break;
    case AV_OP_BIAS: {
      const A beta = static_cast<A>(scalar);
      for (av_u64 i = threadIdx.x; i < n; i += blockDim.x) {
        const A x = a[i];
        m[i] = AvNarrow<M>::of(av_fma(beta, x - av_widen<A>(m[i]), x));
      }
      break;
    }
    default:
      break;
  }
}

template <typename A>
__device__ __forceinline__ void av_segment_model(int op, unsigned char dm, A* a, void* m, av_u64 off,
                                                 av_u64 n, double scalar) {
  switch (dm) {
    case AV_F64: av_segment(op, a, static_cast<double*>(m) + off, n, scalar); break;
    case AV_BF16: av_segment(op, a, static_cast<__nv_bfloat16*>(m) + off, n, scalar); break;
    case AV_F16: av_segment(op, a, static_cast<__half*>(m) + off, n, scalar); break;
    default: av_segment(op, a, static_cast<float*>(m) + off, n, scalar);
  }
}

// One fused pass of `op` over every block of the plan.
extern "C" __global__ void av_apply(AvLayout l, AvTensors x, int op, double scalar, const double* scalar_ptr) {
  const double s = scalar_ptr != nullptr ? *scalar_ptr : scalar;
  AvCursor c = av_cursor_begin(l, blockIdx.x);
  AvSegment seg;
  while (av_cursor_next(l, c, seg)) {
    void* a = x.avg[seg.tensor];
    void* m = x.model[seg.tensor];
    const unsigned char dm = x.model_dtype[seg.tensor];
    if (x.avg_dtype[seg.tensor] == AV_F64) {
      av_segment_model(op, dm, static_cast<double*>(a) + seg.offset, m, seg.offset, seg.len, s);
    } else {
      av_segment_model(op, dm, static_cast<float*>(a) + seg.offset, m, seg.offset, seg.len, s);
    }
  }
}
