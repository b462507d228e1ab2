// Fused averaging kernels: one launch updates every averaged tensor of a model. Each parameter
// is read in its own dtype and each average is updated in its own dtype (fp32 for half models),
// so a bf16 model into an fp32 average moves 2 + 4 + 4 = 10 B/param.
//
// Grid: one block per plan block (plan.cuh); the block's threads stride over each segment.
// The weight is read from device memory (not a kernel argument) so that a captured CUDA graph
// replays with the weight of the current step, and nothing here allocates or synchronizes.
#include "plan.cuh"
#include <cuda_bf16.h>
#include <cuda_fp16.h>

// Dtype codes of the plan's per-tensor dtype tables.
enum AvDtype : unsigned char { AV_F32 = 0, AV_F64 = 1, AV_BF16 = 2, AV_F16 = 3 };

__device__ __forceinline__ double av_load(const void* p, unsigned char dt, av_u64 i) {
  switch (dt) {
    case AV_F64: return static_cast<const double*>(p)[i];
    case AV_BF16: return static_cast<double>(__bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]));
    case AV_F16: return static_cast<double>(__half2float(static_cast<const __half*>(p)[i]));
    default: return static_cast<double>(static_cast<const float*>(p)[i]);
  }
}

// Averages are fp32 or fp64 (half models average in fp32), so only those two are stored here.
__device__ __forceinline__ void av_store(void* p, unsigned char dt, av_u64 i, double v) {
  if (dt == AV_F64) {
    static_cast<double*>(p)[i] = v;
  } else {
    static_cast<float*>(p)[i] = static_cast<float>(v);
  }
}

// The per-tensor tables of one fused update, next to the layout.
struct AvTensors {
  void* const* avg;             // per tensor: average data (contiguous)
  const void* const* src;       // per tensor: parameter data (contiguous)
  const unsigned char* avg_dtype;
  const unsigned char* src_dtype;
};

// avg <- avg + w * (src - avg): EMA with w = 1 - decay (host-computed), SWA running mean with
// w = 1 / (n + 1); the first update copies (w = 1 gives avg = src exactly).
extern "C" __global__ void av_lerp(AvLayout l, AvTensors x, const float* weight) {
  const double w = static_cast<double>(*weight);
  AvCursor c = av_cursor_begin(l, blockIdx.x);
  AvSegment s;
  while (av_cursor_next(l, c, s)) {
    void* a = x.avg[s.tensor];
    const void* p = x.src[s.tensor];
    const unsigned char da = x.avg_dtype[s.tensor];
    const unsigned char dp = x.src_dtype[s.tensor];
    for (av_u64 k = threadIdx.x; k < s.len; k += blockDim.x) {
      const av_u64 i = s.offset + k;
      const double v = av_load(a, da, i);
      av_store(a, da, i, w == 1.0 ? av_load(p, dp, i) : v + w * (av_load(p, dp, i) - v));
    }
  }
}

// out <- avg + beta * (avg - anchor): the flat-side bias, written into `src` slots as outputs
// (x.src holds the anchors here and x.avg the averages; `out` has the averages' dtypes).
extern "C" __global__ void av_bias(AvLayout l, AvTensors x, void* const* out, const float* beta) {
  const double b = static_cast<double>(*beta);
  AvCursor c = av_cursor_begin(l, blockIdx.x);
  AvSegment s;
  while (av_cursor_next(l, c, s)) {
    const void* a = x.avg[s.tensor];
    const void* p = x.src[s.tensor];
    void* o = out[s.tensor];
    const unsigned char da = x.avg_dtype[s.tensor];
    const unsigned char dp = x.src_dtype[s.tensor];
    for (av_u64 k = threadIdx.x; k < s.len; k += blockDim.x) {
      const av_u64 i = s.offset + k;
      const double v = av_load(a, da, i);
      av_store(o, da, i, v + b * (v - av_load(p, dp, i)));
    }
  }
}

// Copy-out: model parameter (its own dtype) <- average (fp32/fp64), for swap-in/evaluation.
__device__ __forceinline__ void av_store_any(void* p, unsigned char dt, av_u64 i, double v) {
  switch (dt) {
    case AV_F64: static_cast<double*>(p)[i] = v; break;
    case AV_BF16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16(static_cast<float>(v)); break;
    case AV_F16: static_cast<__half*>(p)[i] = __float2half(static_cast<float>(v)); break;
    default: static_cast<float*>(p)[i] = static_cast<float>(v);
  }
}

extern "C" __global__ void av_copy_out(AvLayout l, AvTensors x) {
  AvCursor c = av_cursor_begin(l, blockIdx.x);
  AvSegment s;
  while (av_cursor_next(l, c, s)) {
    const void* a = x.avg[s.tensor];
    void* p = const_cast<void*>(x.src[s.tensor]);
    const unsigned char da = x.avg_dtype[s.tensor];
    const unsigned char dp = x.src_dtype[s.tensor];
    for (av_u64 k = threadIdx.x; k < s.len; k += blockDim.x) {
      const av_u64 i = s.offset + k;
      av_store_any(p, dp, i, av_load(a, da, i));
    }
  }
}
