//! Safe wrappers over the fused `at::_foreach_*` kernels of the C++ shim (`csrc/foreach.cpp`).
//!
//! tch binds no `_foreach_*` op, so a pure-tch update is one kernel launch per tensor; these
//! calls are one launch per group on CUDA (ATen loops per tensor on CPU, with no Rust overhead).
//! Callers validate lengths, shapes, dtypes and devices first: these functions only check the
//! list lengths (empty lists are a no-op, which ATen would refuse) and turn any C++ exception into
//! [`crate::Error::Shim`].
use super::{check_lengths, ffi, handles, status};
use crate::error::Result;
use tch::Tensor;

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
