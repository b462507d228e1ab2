// The op library's CPU updates through the core's fused pass (`av_cpu_apply`,
// src/core/csrc/fused/cpu.cpp): one parallel pass over every tensor of a call, each tensor read
// in its own dtype, instead of one ATen call (and one OpenMP region) per tensor, plus a converted
// copy of every half-precision parameter.
//
// Each function returns false, having written nothing, when some tensor of the call cannot take
// the pass; the caller then runs the `_foreach` path, which gives the same values:
// - a tensor not on the CPU (the CUDA path stays on `_foreach`), not contiguous (a valid strided
//   view: the pass indexes elements 0..numel of a dense buffer), or a negative view (`_neg_view`:
//   its raw memory holds -x; the dispatcher materializes those before a kernel runs, checked
//   here anyway);
// - an average (the written side of an update) that is not float32/float64: the pass keeps half
//   averages out (ATen lerps them in fp32 opmath, then rounds, a formula the pass does not have);
// - for `bias`, an `out` tensor that shares memory with an `avg`, or with an `anchor` other than
//   its own (the pass writes `out` block by block, in parallel, so only an element-wise in-place
//   anchor is safe).
// Callers validate first (validate.h): the pass assumes equal shapes and no written overlap.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "fused/plan.cuh"

namespace asymvalley::fused {

// The block -> (tensor, offset) map of one pass over a list of tensors, built by the arithmetic
// of the core's `Layout` (src/core/src/plan/layout.rs, whose tests check that every element is
// covered exactly once): tensor t occupies [start_t, start_t + n_t) with
// start_{t+1} = round_up(start_t + n_t, kAlign), and block b covers [b * kBlockElems, (b + 1) *
// kBlockElems) from first_tensor[b], the first tensor whose range ends after the block's start.
class HostLayout {
 public:
  // The core's `FusedPlan` defaults: 4096 elements a block (8 blocks make one ATen grain of
  // 32768, so small tensors share a task) and starts aligned to 4 elements (one 16-byte vector).
  static constexpr av_u64 kBlockElems = 4096;
  static constexpr av_u64 kAlign = 4;

  // Rebuilds the tables for the element counts of `ts`, unless they are those already held (the
  // layout depends on sizes only; pointers are read at every call, never cached).
  void fit(at::TensorList ts);
  av_u64 blocks() const { return first_.size(); }
  AvLayout view() const;

 private:
  std::vector<av_u64> sizes_, starts_;
  std::vector<unsigned int> first_;
  av_u64 total_ = 0;
};

// avg[t] <- lerp(avg[t], params[t], weight) (or params[t], converted, when `copy`), each params[t]
// read in its own dtype. `layout` is the caller's cache (the class's), refitted here.
bool lerp(at::TensorList avg, at::TensorList params, bool copy, double weight, HostLayout& layout);

// out[t] <- avg[t], rounded to out[t]'s dtype (`Averager.copy_to`).
bool copy_out(at::TensorList out, at::TensorList avg, HostLayout& layout);

// out[t] <- avg[t] + beta * (avg[t] - anchor[t]), computed in avg[t]'s dtype, rounded to out[t]'s.
bool bias(at::TensorList out, at::TensorList avg, at::TensorList anchor, double beta, HostLayout& layout);

// Whether every out[i] either shares no byte with any avg or anchor tensor, or is anchor[i]
// itself (same address, dtype and size): what a pass that writes `out` in place, block by block,
// needs (the CPU pass here, the CUDA kernel in fused_cuda.h).
bool bias_aliasing_ok(at::TensorList out, at::TensorList avg, at::TensorList anchor);

// How many fused passes this process has run (every successful call above adds one): the tests
// read it to hold the ops to the fused path. `torch.ops.asymvalley._fused_cpu_passes()`.
int64_t passes();

// The pass's compiled variant: "avx2+fma" or "baseline". `torch.ops.asymvalley._cpu_variant()`.
std::string variant();

}  // namespace asymvalley::fused
