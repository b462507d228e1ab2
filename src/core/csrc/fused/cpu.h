// The C entry points of the fused CPU pass (cpu.cpp) and the codes of their tables, for the C++
// callers (the op library, src/ops/csrc/fused_cpu.cpp). Rust declares the same functions in
// src/core/src/shim/ffi.rs; the codes must stay equal to theirs and average.cu's.
#pragma once

#include "plan.cuh"

// Dtype codes of the per-tensor dtype tables.
enum : unsigned char { AV_F32 = 0, AV_F64 = 1, AV_BF16 = 2, AV_F16 = 3 };

// What one pass does to each element (the formulas are in cpu.cpp).
enum AvOp : int { AV_OP_LERP = 0, AV_OP_COPY_IN = 1, AV_OP_COPY_OUT = 2, AV_OP_BIAS = 3 };

extern "C" {
// One parallel pass of `op` over every block: 0 on success, 1 if an exception was caught, 2 for
// an unknown `op`. Tables the op does not read may be null: `src` and `src_dtype` for copy-out,
// `out` and `out_dtype` for lerp and copy-in.
int av_cpu_apply(int op, AvLayout l, av_u64 blocks, void* const* avg, const void* const* src,
                 void* const* out, const unsigned char* avg_dtype, const unsigned char* src_dtype,
                 const unsigned char* out_dtype, double scalar);

// The lerp alone (what Rust's `lerp_cpu` calls).
int av_cpu_lerp(AvLayout l, av_u64 blocks, void* const* avg, const void* const* src,
                const unsigned char* avg_dtype, const unsigned char* src_dtype, double w);

// Which compiled variant the passes of this process use: 1 = AVX2+FMA, 0 = baseline.
int av_cpu_variant();
}
