//! The fused-update plan: how one kernel launch (or one CPU parallel pass) covers every averaged
//! tensor of a model, whatever their number, sizes and dtypes.
//!
//! [`layout::Layout`] is the indexing: the tensors are laid end to end in one *virtual* element
//! space, each starting at a multiple of the vector width, and the space is cut into equal blocks.
//! A block is one CUDA thread block (or one CPU task); it walks the tensors its range touches, so
//! the 64-element BatchNorm vectors of a ResNet share a block instead of costing one each. The
//! same arithmetic is written once more in C (`csrc/fused/plan.cuh`) for the kernel; the tests of
//! this module are the exhaustive check of both forms' contract.
//!
//! This module is pure indexing and bookkeeping; the passes that run a plan (the CPU pass through
//! `csrc/fused/cpu.cpp`, the CUDA kernel through NVRTC and the driver API) are FFI, and live in
//! [`crate::shim`] with the crate's other `unsafe` code: [`crate::shim::fused_cpu`] and
//! [`crate::shim::cuda`].
pub mod cache;
pub mod fused;
pub mod layout;
pub mod op;

pub use crate::shim::fused_cpu::{apply_cpu, cpu_variant, lerp_cpu};
pub use cache::PlanCache;
pub use layout::{Layout, Segment};
pub use op::FusedOp;
