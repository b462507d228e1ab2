//! Raw declarations of the C++ shim (`csrc/foreach.cpp`, `csrc/torchscript.cpp`). The only `unsafe` in the crate
//! outside tensor-pointer borrowing lives next to these declarations.
use std::ffi::c_void;
use std::os::raw::{c_char, c_int};
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

// TorchScript module handle (csrc/torchscript.cpp)
extern "C" {
    pub fn asymvalley_jit_load(path: *const c_char, out: *mut *mut c_void) -> *mut c_char;
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
