//! Raw declarations of the crate's C and C++ code: the `_foreach` shim (`csrc/foreach.cpp`),
//! the TorchScript handle (`csrc/torchscript.cpp`) and the fused CPU pass (`csrc/fused/cpu.cpp`),
//! with the types that cross to C (`AvLayout`, the dtype and op codes). Only the modules of
//! [`crate::shim`] call them, each call under a SAFETY comment. (The CUDA driver and NVRTC are
//! not linked: [`super::cuda`] resolves their symbols at run time.)
use std::ffi::c_void;
use std::os::raw::{c_char, c_int, c_uchar, c_uint};
use torch_sys::C_tensor;

// The `_foreach` shim (csrc/foreach.cpp); every call returns NULL or an owned error message.
extern "C" {
    pub fn asymvalley_free_error(msg: *mut c_char);
    pub fn asymvalley_foreach_lerp_(
        avg: *const *mut C_tensor,
        src: *const *mut C_tensor,
        n: usize,
        weight: f64,
    ) -> *mut c_char;
    pub fn asymvalley_foreach_copy_(
        dst: *const *mut C_tensor,
        src: *const *mut C_tensor,
        n: usize,
    ) -> *mut c_char;
    pub fn asymvalley_foreach_bias_toward_flat(
        out: *const *mut C_tensor,
        avg: *const *mut C_tensor,
        anchor: *const *mut C_tensor,
        n: usize,
        beta: f64,
    ) -> *mut c_char;
}

// TorchScript module handle (csrc/torchscript.cpp)
extern "C" {
    pub fn asymvalley_jit_load(path: *const c_char, out: *mut *mut c_void) -> *mut c_char;
    pub fn asymvalley_jit_load_bytes(
        data: *const c_char,
        len: usize,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    pub fn asymvalley_jit_free(module: *mut c_void);
    pub fn asymvalley_jit_named(
        module: *mut c_void,
        buffers: c_int,
        data: *mut c_void,
        cb: extern "C" fn(*mut c_void, *const c_char, *mut C_tensor),
    ) -> *mut c_char;
    pub fn asymvalley_jit_forward(
        module: *mut c_void,
        input: *const C_tensor,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    pub fn asymvalley_jit_train(module: *mut c_void, on: c_int) -> *mut c_char;
    pub fn asymvalley_jit_to(module: *mut c_void, device: c_int) -> *mut c_char;
}

/// `AvLayout` of `csrc/fused/plan.cuh`: borrowed views of a [`crate::plan::Layout`]'s tables
/// (field order and types must match the C struct).
#[repr(C)]
pub(crate) struct AvLayout {
    pub starts: *const u64,
    pub sizes: *const u64,
    pub first_tensor: *const c_uint,
    pub n_tensors: c_uint,
    pub total: u64,
    pub block_elems: u64,
}

/// Dtype codes shared with `csrc/fused/cpu.cpp` and `average.cu`.
pub(crate) const AV_F32: u8 = 0;
pub(crate) const AV_F64: u8 = 1;
pub(crate) const AV_BF16: u8 = 2;
pub(crate) const AV_F16: u8 = 3;

/// `AvOp` of `cpu.cpp` (and the kernel's `op` argument): what one pass does to each element.
pub(crate) const AV_OP_LERP: c_int = 0;
pub(crate) const AV_OP_COPY_IN: c_int = 1;
pub(crate) const AV_OP_COPY_OUT: c_int = 2;
pub(crate) const AV_OP_BIAS: c_int = 3;

// The fused CPU pass (csrc/fused/cpu.cpp).
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
