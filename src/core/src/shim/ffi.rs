//! Raw declarations of the C++ shim in `src/csrc/foreach.cpp`. The only `unsafe` in the crate
//! outside tensor-pointer borrowing lives next to these declarations.
use std::os::raw::c_char;
use torch_sys::C_tensor;

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
