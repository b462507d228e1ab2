//! Safe wrappers over the fused `at::_foreach_*` kernels of the C++ shim.
//!
//! tch binds no `_foreach_*` op, so a pure-tch update is one kernel launch per tensor; these
//! calls are one launch per group on CUDA (ATen loops per tensor on CPU, with no Rust overhead).
//! Callers validate lengths, shapes, dtypes and devices first: these functions only check the
//! list lengths (empty lists are a no-op, which ATen would refuse) and turn any C++ exception into [`Error::Shim`].
mod ffi;
pub mod jit;

use crate::error::{Error, Result};
use std::ffi::CStr;
use std::os::raw::c_char;
use tch::Tensor;
use torch_sys::C_tensor;

fn handles(tensors: &[Tensor]) -> Vec<*mut C_tensor> {
    tensors
        .iter()
        .map(|t| t.as_ptr() as *mut C_tensor)
        .collect()
}

fn check_lengths(op: &'static str, lens: &[(&'static str, usize)]) -> Result<()> {
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
fn status(op: &'static str, msg: *mut c_char) -> Result<()> {
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

/// `avg[i] ← avg[i] + weight·(src[i] − avg[i])`, fused; `src` may be half precision when `avg` is fp32.
pub fn foreach_lerp_(avg: &[Tensor], src: &[Tensor], weight: f64) -> Result<()> {
    check_lengths("foreach_lerp_", &[("avg", avg.len()), ("src", src.len())])?;
    if avg.is_empty() {
        return Ok(());
    }
    let (a, s) = (handles(avg), handles(src));
    // SAFETY: both arrays hold `a.len()` live tensor handles borrowed for the call's duration.
    status("foreach_lerp_", unsafe {
        ffi::asymvalley_foreach_lerp_(a.as_ptr(), s.as_ptr(), a.len(), weight)
    })
}

/// `dst[i] ← src[i]` (with dtype conversion), fused.
pub fn foreach_copy_(dst: &[Tensor], src: &[Tensor]) -> Result<()> {
    check_lengths("foreach_copy_", &[("dst", dst.len()), ("src", src.len())])?;
    if dst.is_empty() {
        return Ok(());
    }
    let (d, s) = (handles(dst), handles(src));
    // SAFETY: both arrays hold `d.len()` live tensor handles borrowed for the call's duration.
    status("foreach_copy_", unsafe {
        ffi::asymvalley_foreach_copy_(d.as_ptr(), s.as_ptr(), d.len())
    })
}

/// `out[i] ← avg[i] + β·(avg[i] − anchor[i])`, computed in `avg`'s dtype, fused.
pub fn foreach_bias_toward_flat(
    out: &[Tensor],
    avg: &[Tensor],
    anchor: &[Tensor],
    beta: f64,
) -> Result<()> {
    check_lengths(
        "bias_toward_flat",
        &[
            ("out", out.len()),
            ("avg", avg.len()),
            ("anchor", anchor.len()),
        ],
    )?;
    if out.is_empty() {
        return Ok(());
    }
    let (o, a, c) = (handles(out), handles(avg), handles(anchor));
    // SAFETY: the three arrays hold `o.len()` live tensor handles borrowed for the call.
    status("bias_toward_flat", unsafe {
        ffi::asymvalley_foreach_bias_toward_flat(o.as_ptr(), a.as_ptr(), c.as_ptr(), o.len(), beta)
    })
}
