//! The CPU fused update: one parallel pass over all tensors of a [`Layout`], the host-side run
//! of the kernel's indexing (`csrc/fused/plan.cuh`).
use super::ffi::{self, AvLayout};
use crate::plan::{FusedOp, Layout};
use crate::{Error, Result};
use std::os::raw::{c_int, c_void};
use tch::{Device, Kind, Tensor};

/// The dtype code the C side uses for `kind`, if it is one the pass reads.
pub(crate) fn dtype_code(kind: Kind) -> Option<u8> {
    match kind {
        Kind::Float => Some(ffi::AV_F32),
        Kind::Double => Some(ffi::AV_F64),
        Kind::BFloat16 => Some(ffi::AV_BF16),
        Kind::Half => Some(ffi::AV_F16),
        _ => None,
    }
}

/// Checks one tensor against its slot `t` of the layout; returns its dtype code.
fn check(x: &Tensor, role: &'static str, t: usize, size: u64, averages: bool) -> Result<u8> {
    let name = format!("{role}[{t}]");
    if x.device() != Device::Cpu {
        return Err(Error::Mismatch {
            what: "device of tensor",
            name,
            got: format!("{:?}", x.device()),
            expected: "Cpu".into(),
        });
    }
    if !x.is_contiguous() || x.numel() as u64 != size {
        return Err(Error::Mismatch {
            what: "layout of tensor",
            name,
            got: format!("{} elements, contiguous = {}", x.numel(), x.is_contiguous()),
            expected: format!("{size} contiguous elements"),
        });
    }
    let kind = x.kind();
    match dtype_code(kind) {
        Some(c) if !averages || c == ffi::AV_F32 || c == ffi::AV_F64 => Ok(c),
        _ => Err(Error::Mismatch {
            what: "dtype of tensor",
            name,
            got: format!("{kind:?}"),
            expected: if averages {
                "Float or Double"
            } else {
                "Float, Double, BFloat16 or Half"
            }
            .into(),
        }),
    }
}

/// Applies `op` to every `(avg[t], model[t])` pair of `layout`, in one parallel pass (see
/// [`FusedOp`] for the formulas). Each `model[t]` is read (and, for copy-out and bias, written) in
/// its own dtype (fp32, fp64, bf16, fp16); each `avg[t]` is fp32 or fp64. The results equal
/// libtorch's own `lerp_`, `copy_` and `add(·, ·, alpha)` bitwise (the formulas are ATen's, see
/// `csrc/fused/cpu.cpp`).
///
/// # Errors
/// Nothing is modified when an argument is refused: [`Error::LengthMismatch`] for list lengths,
/// [`Error::Mismatch`] for a tensor's device, size, contiguity or dtype,
/// [`Error::InvalidConfig`] for a weight outside `[0, 1]` or a β that is negative or not finite.
pub fn apply_cpu(layout: &Layout, op: FusedOp, avg: &[Tensor], model: &[Tensor]) -> Result<()> {
    let sizes = layout.sizes();
    for (name, got) in [("avg", avg.len()), ("model", model.len())] {
        if got != sizes.len() {
            return Err(Error::LengthMismatch {
                op: op.name(),
                expected_name: "layout",
                expected: sizes.len(),
                name,
                got,
            });
        }
    }
    op.check_scalar()?;
    let mut avg_dtype = Vec::with_capacity(sizes.len());
    let mut model_dtype = Vec::with_capacity(sizes.len());
    for (t, &n) in sizes.iter().enumerate() {
        avg_dtype.push(check(&avg[t], "avg", t, n, true)?);
        model_dtype.push(check(&model[t], "model", t, n, false)?);
    }
    let avg_ptr: Vec<*mut c_void> = avg.iter().map(|x| x.data_ptr()).collect();
    let model_ptr: Vec<*mut c_void> = model.iter().map(|x| x.data_ptr()).collect();
    let model_const: Vec<*const c_void> = model_ptr.iter().map(|&p| p as *const c_void).collect();
    let (code, scalar): (c_int, f64) = match op {
        FusedOp::Lerp(w) => (ffi::AV_OP_LERP, w),
        FusedOp::CopyIn => (ffi::AV_OP_COPY_IN, 0.0),
        FusedOp::CopyOut => (ffi::AV_OP_COPY_OUT, 0.0),
        FusedOp::Bias(b) => (ffi::AV_OP_BIAS, b),
    };
    // SAFETY: every table outlives the call; each pointer addresses `sizes[t]` contiguous CPU
    // elements of the dtype its code names (checked above), and the layout's blocks are disjoint.
    // The output table is the model's (copy-out and bias write the model in its dtype).
    let rc = unsafe {
        match op {
            FusedOp::Lerp(w) => ffi::av_cpu_lerp(
                c_layout(layout),
                layout.blocks(),
                avg_ptr.as_ptr(),
                model_const.as_ptr(),
                avg_dtype.as_ptr(),
                model_dtype.as_ptr(),
                w,
            ),
            _ => ffi::av_cpu_apply(
                code,
                c_layout(layout),
                layout.blocks(),
                avg_ptr.as_ptr(),
                model_const.as_ptr(),
                model_ptr.as_ptr(),
                avg_dtype.as_ptr(),
                model_dtype.as_ptr(),
                model_dtype.as_ptr(),
                scalar,
            ),
        }
    };
    if rc != 0 {
        return Err(Error::Shim {
            op: op.name(),
            msg: format!("the parallel pass failed (code {rc}: a C++ exception or an unknown op)"),
        });
    }
    Ok(())
}

/// The compiled variant the CPU pass runs in this process: `"avx2+fma"` where the CPU has both
/// (picked once, at first use), else `"baseline"`; `ASYMVALLEY_FUSED_CPU=baseline` forces the latter.
pub fn cpu_variant() -> &'static str {
    // SAFETY: no arguments; the C side catches everything.
    if unsafe { ffi::av_cpu_variant() } == 1 {
        "avx2+fma"
    } else {
        "baseline"
    }
}

/// The C view of `layout`'s tables (borrowed: valid while `layout` is).
pub(crate) fn c_layout(layout: &Layout) -> AvLayout {
    AvLayout {
        starts: layout.starts().as_ptr(),
        sizes: layout.sizes().as_ptr(),
        first_tensor: layout.first_tensor().as_ptr(),
        // Layout::new refuses more than u32::MAX tensors.
        n_tensors: layout.sizes().len() as u32,
        total: layout.total(),
        block_elems: layout.block_elems(),
    }
}

/// `avg[t] <- avg[t] + weight · (src[t] − avg[t])` for every tensor of `layout`, in one parallel
/// pass: [`apply_cpu`] with [`FusedOp::Lerp`]. EMA: `weight = 1 − decay`; SWA running mean:
/// `weight = 1 / (n + 1)`. Each `src[t]` is read in its own dtype (fp32, fp64, bf16, fp16); each
/// `avg[t]` is fp32 or fp64.
///
/// # Errors
/// As [`apply_cpu`]; nothing is modified when an argument is refused.
pub fn lerp_cpu(layout: &Layout, avg: &mut [Tensor], src: &[Tensor], weight: f64) -> Result<()> {
    apply_cpu(layout, FusedOp::Lerp(weight), avg, src)
}
