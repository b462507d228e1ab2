//! The crate's one FFI boundary: every `extern "C"` declaration, every `unsafe` block and the
//! passing of C++ error messages are here, each `unsafe` under a SAFETY comment saying why it
//! holds. The rest of the crate is `#![deny(unsafe_code)]` (see `lib.rs`) and calls only the safe
//! functions below, which check what the C side relies on (lengths, devices, dtypes, sizes)
//! before crossing, and turn every C++ exception into [`Error::Shim`].
//!
//! - [`ffi`]: the raw declarations and the `#[repr(C)]` types that cross.
//! - [`foreach`]: the fused `at::_foreach_*` kernels (tch binds none of them).
//! - [`fused_cpu`]: the plan's one parallel CPU pass (`csrc/fused/cpu.cpp`).
//! - [`cuda`]: the plan's CUDA kernel, compiled by NVRTC and launched through the driver API,
//!   both `dlopen`ed at run time.
//! - [`jit`]: an owned `torch::jit::Module` with its buffers (tch exposes none).
#![allow(unsafe_code)]
pub mod cuda;
mod ffi;
mod foreach;
pub mod fused_cpu;
pub mod jit;

pub use foreach::{foreach_bias_toward_flat, foreach_copy_, foreach_lerp_};

use crate::error::{Error, Result};
use std::ffi::CStr;
use std::os::raw::c_char;
use tch::Tensor;
use torch_sys::C_tensor;

pub(crate) fn handles(tensors: &[Tensor]) -> Vec<*mut C_tensor> {
    tensors
        .iter()
        .map(|t| t.as_ptr() as *mut C_tensor)
        .collect()
}

pub(crate) fn check_lengths(op: &'static str, lens: &[(&'static str, usize)]) -> Result<()> {
    let (first_name, first) = lens[0];
    for &(name, len) in &lens[1..] {
        if len != first {
            return Err(Error::LengthMismatch {
                op,
                expected_name: first_name,
                expected: first,
                name,
                got: len,
            });
        }
    }
    Ok(())
}

/// Turns the shim's status (NULL or an owned C string) into a `Result`.
pub(crate) fn status(op: &'static str, msg: *mut c_char) -> Result<()> {
    if msg.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null status is a NUL-terminated string malloc'ed by the shim, owned by us
    // until handed back to `asymvalley_free_error`.
    let text = unsafe { CStr::from_ptr(msg) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: `msg` came from the shim and is freed exactly once.
    unsafe { ffi::asymvalley_free_error(msg) };
    Err(Error::Shim { op, msg: text })
}
