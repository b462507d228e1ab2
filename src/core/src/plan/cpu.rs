//! The CPU fused update: one parallel pass over all tensors of a [`Layout`], the host-side run
//! of the kernel's indexing (`csrc/fused/plan.cuh`).
use super::ffi::{self, AvLayout};
use super::Layout;
use crate::{Error, Result};
use std::os::raw::c_void;
use tch::{Device, Kind, Tensor};

fn code(kind: Kind) -> Option<u8> {
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
    match code(kind) {
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

/// `avg[t] <- avg[t] + weight · (src[t] − avg[t])` for every tensor of `layout`, in one parallel
/// pass. EMA: `weight = 1 − decay`; SWA running mean: `weight = 1 / (n + 1)`. Each `src[t]` is
/// read in its own dtype (fp32, fp64, bf16, fp16); each `avg[t]` is fp32 or fp64.
///
/// # Errors
/// Nothing is modified when an argument is refused: [`Error::LengthMismatch`] for list lengths,
/// [`Error::Mismatch`] for a tensor's device, size, contiguity or dtype,
/// [`Error::InvalidConfig`] for a weight outside `[0, 1]`.
pub fn lerp_cpu(layout: &Layout, avg: &mut [Tensor], src: &[Tensor], weight: f64) -> Result<()> {
    let sizes = layout.sizes();
    for (name, got) in [("avg", avg.len()), ("src", src.len())] {
        if got != sizes.len() {
            return Err(Error::LengthMismatch {
                op: "lerp_cpu",
                expected_name: "layout",
                expected: sizes.len(),
                name,
                got,
            });
        }
    }
    if !(0.0..=1.0).contains(&weight) {
        return Err(Error::InvalidConfig {
            field: "weight",
            value: weight.to_string(),
            expected: "a finite number in [0, 1]".into(),
        });
    }
    let mut avg_dtype = Vec::with_capacity(sizes.len());
    let mut src_dtype = Vec::with_capacity(sizes.len());
    for (t, &n) in sizes.iter().enumerate() {
        avg_dtype.push(check(&avg[t], "avg", t, n, true)?);
        src_dtype.push(check(&src[t], "src", t, n, false)?);
    }
    let avg_ptr: Vec<*mut c_void> = avg.iter().map(|x| x.data_ptr()).collect();
    let src_ptr: Vec<*const c_void> = src.iter().map(|x| x.data_ptr() as *const c_void).collect();
    let l = AvLayout {
        starts: layout.starts().as_ptr(),
        sizes: sizes.as_ptr(),
        first_tensor: layout.first_tensor().as_ptr(),
        // Layout::new refuses more than u32::MAX tensors.
        n_tensors: sizes.len() as u32,
        total: layout.total(),
        block_elems: layout.block_elems(),
    };
    // SAFETY: every table outlives the call; each pointer addresses `sizes[t]` contiguous CPU
    // elements of the dtype its code names (checked above), and the layout's blocks are disjoint.
    let rc = unsafe {
        ffi::av_cpu_lerp(
            l,
            layout.blocks(),
            avg_ptr.as_ptr(),
            src_ptr.as_ptr(),
            avg_dtype.as_ptr(),
            src_dtype.as_ptr(),
            weight,
        )
    };
    if rc != 0 {
        return Err(Error::Shim {
            op: "lerp_cpu",
            msg: "the parallel pass threw a C++ exception".into(),
        });
    }
    Ok(())
}
