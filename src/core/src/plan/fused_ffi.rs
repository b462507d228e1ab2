//! The C entry point of the generic CPU pass (`csrc/fused/cpu.cpp`, `av_cpu_apply`): the fused
//! copy-in, copy-out and bias, next to the lerp of `ffi.rs`. Kept apart from `ffi.rs` so that the
//! two can be merged into the shim's extern block in one move.
use super::ffi::AvLayout;
use std::os::raw::{c_int, c_uchar, c_void};

/// `AvOp` of `cpu.cpp`: what one pass does to each element.
pub(crate) const AV_OP_LERP: c_int = 0;
pub(crate) const AV_OP_COPY_IN: c_int = 1;
pub(crate) const AV_OP_COPY_OUT: c_int = 2;
pub(crate) const AV_OP_BIAS: c_int = 3;

extern "C" {
    /// The CPU pass's compiled variant in use: 1 = AVX2+FMA, 0 = baseline x86-64.
    pub(crate) fn av_cpu_variant() -> c_int;

    /// One parallel pass of `op` over every block: 0 on success, 1 if C++ caught an exception,
    /// 2 for an unknown `op`. Tables an op does not read may be null.
    pub(crate) fn av_cpu_apply(
        op: c_int,
        l: AvLayout,
        blocks: u64,
        avg: *const *mut c_void,
        src: *const *const c_void,
        out: *const *mut c_void,
        avg_dtype: *const c_uchar,
        src_dtype: *const c_uchar,
        out_dtype: *const c_uchar,
        scalar: f64,
    ) -> c_int;
}
