//! The fused update's C entry points (`csrc/fused/cpu.cpp`) and the layout as C sees it
//! (`AvLayout` of `csrc/fused/plan.cuh`; field order and types must match).
use std::os::raw::{c_int, c_uchar, c_uint, c_void};

/// `AvLayout`: borrowed views of a [`super::Layout`]'s tables.
#[repr(C)]
pub(crate) struct AvLayout {
    pub starts: *const u64,
    pub sizes: *const u64,
    pub first_tensor: *const c_uint,
    pub n_tensors: c_uint,
    pub total: u64,
    pub block_elems: u64,
}

/// Dtype codes shared with the C side.
pub(crate) const AV_F32: u8 = 0;
pub(crate) const AV_F64: u8 = 1;
pub(crate) const AV_BF16: u8 = 2;
pub(crate) const AV_F16: u8 = 3;

extern "C" {
    /// One parallel pass `avg <- avg + w (src - avg)` over every block; 0 on success, 1 if C++
    /// caught an exception.
    pub(crate) fn av_cpu_lerp(
        l: AvLayout,
        blocks: u64,
        avg: *const *mut c_void,
        src: *const *const c_void,
        avg_dtype: *const c_uchar,
        src_dtype: *const c_uchar,
        w: f64,
    ) -> c_int;
}
