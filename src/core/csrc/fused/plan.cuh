// The fused update's indexing, in C for the kernel (and, later, a C++ host pass): the same
// arithmetic as src/core/src/plan/layout.rs, whose tests check the contract exhaustively.
//
// Tensor t occupies virtual positions [starts[t], starts[t] + sizes[t]), starts aligned to the
// vector width; block b covers [b * block_elems, min((b + 1) * block_elems, total)) and walks the
// tensors from first_tensor[b] while their start is below its end. All positions are 64-bit, so
// tensors and totals past 2^31 elements do not overflow.
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define AV_HD __host__ __device__ __forceinline__
#else
#define AV_HD inline
#endif

typedef unsigned long long av_u64;

// One piece of a block's work: len elements of tensor `tensor` from element `offset`.
struct AvSegment {
  unsigned int tensor;
  av_u64 offset;
  av_u64 len;
};

// The plan's tables (device memory on CUDA), built once per averager.
struct AvLayout {
  const av_u64* starts;            // per tensor: virtual start
  const av_u64* sizes;             // per tensor: elements
  const unsigned int* first_tensor;  // per block: first tensor whose range ends after the block start
  unsigned int n_tensors;
  av_u64 total;                    // end of the virtual space
  av_u64 block_elems;
};

// Cursor over block b's segments: av_cursor_begin, then av_cursor_next until it returns false.
struct AvCursor {
  av_u64 lo, hi;
  unsigned int t;
};

AV_HD AvCursor av_cursor_begin(const AvLayout& l, av_u64 b) {
  AvCursor c;
  c.lo = b * l.block_elems;
  av_u64 end = c.lo + l.block_elems;
  c.hi = end < l.total ? end : l.total;
  c.t = l.first_tensor[b];
  return c;
}

AV_HD bool av_cursor_next(const AvLayout& l, AvCursor& c, AvSegment& out) {
  while (c.t < l.n_tensors && l.starts[c.t] < c.hi) {
    unsigned int t = c.t++;
    av_u64 s = l.starts[t];
    av_u64 a = c.lo > s ? c.lo : s;
    av_u64 e = s + l.sizes[t];
    if (c.hi < e) e = c.hi;
    if (e > a) {
      out.tensor = t;
      out.offset = a - s;
      out.len = e - a;
      return true;
    }
  }
  return false;
}
