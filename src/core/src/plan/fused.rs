//! A fused plan bound to one list of `(average, model)` tensor pairs, rebuilt when they change.
//!
//! The layout depends on the tensors' sizes; a device copy of the plan (the CUDA path) also holds
//! their data pointers and dtypes. A model's tensors can be replaced under the averager
//! (`set_data`, re-allocation, a dtype or device move), so every call first compares a
//! fingerprint of the tensors — `(data_ptr, numel, contiguity, dtype, device)` of each average and
//! model tensor, a few host calls per tensor and no device access — with the one the plan was
//! built from, and rebuilds on any difference. A stale pointer is therefore never handed to a
//! pass.
//!
//! The pass's scalar (the lerp weight `w` or the bias `β`) is a host number in the [`FusedOp`], or,
//! through [`FusedPlan::apply_with_device_scalar`], a 0-dim float64 tensor on the pairs' device that
//! the CUDA kernel reads when it runs: a weight computed on the device from a device counter
//! (`1/(n+1)`, no host read, no sync), and the current weight when a captured CUDA graph replays.
use super::{apply_cpu, FusedOp, Layout};
use crate::{Error, Result};
use tch::{Device, Kind, Tensor};

/// What the plan was built from, per `(average, model)` pair.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PairKey {
    avg_ptr: usize,
    model_ptr: usize,
    numel: i64,
    model_numel: i64,
    contiguous: bool,
    avg_kind: Kind,
    model_kind: Kind,
    avg_device: Device,
    model_device: Device,
}

impl PairKey {
    fn of(avg: &Tensor, model: &Tensor) -> Self {
        PairKey {
            avg_ptr: avg.data_ptr() as usize,
            model_ptr: model.data_ptr() as usize,
            numel: avg.numel() as i64,
            model_numel: model.numel() as i64,
            contiguous: avg.is_contiguous() && model.is_contiguous(),
            avg_kind: avg.kind(),
            model_kind: model.kind(),
            avg_device: avg.device(),
            model_device: model.device(),
        }
    }
}

/// The fingerprint of one call's `(average, model)` pairs: what a plan is built from
/// ([`FusedPlan::built_for`]); a few host calls per tensor, no device access.
#[derive(Debug, Clone, PartialEq)]
pub struct Fingerprint(Vec<PairKey>);

impl Fingerprint {
    /// The fingerprint of the pairs `(avg[t], model[t])` (the shorter list bounds them; the
    /// callers check the lengths first).
    pub fn of(avg: &[Tensor], model: &[Tensor]) -> Self {
        Fingerprint(
            avg.iter()
                .zip(model)
                .map(|(a, m)| PairKey::of(a, m))
                .collect(),
        )
    }
}

/// Checks a device scalar's metadata for `op` over pairs on `device` (`None`: no pairs): a
/// defined 0-dim float64 tensor on that device, for an op that has a scalar. Reads no data.
///
/// # Errors
/// [`Error::InvalidConfig`] naming `op` (a copy has no scalar) or the scalar (`weight` for a lerp,
/// `beta` for a bias) with what it is and what was expected.
pub fn check_device_scalar(
    op: FusedOp,
    kind: Option<Kind>,
    dims: usize,
    scalar_device: Device,
    device: Option<Device>,
) -> Result<()> {
    let field = match op {
        FusedOp::Lerp(_) => "weight",
        FusedOp::Bias(_) => "beta",
        FusedOp::CopyIn | FusedOp::CopyOut => {
            return Err(Error::invalid(
                "op",
                op.name(),
                "a lerp or a bias (a copy has no scalar to read from the device)",
            ))
        }
    };
    let expected = |d: Option<Device>| match d {
        Some(d) => format!("a 0-dim float64 tensor on {d:?}, the pairs' device"),
        None => "a 0-dim float64 tensor".to_string(),
    };
    match kind {
        None => Err(Error::invalid(
            field,
            "an undefined tensor",
            expected(device),
        )),
        Some(k) if k != Kind::Double => Err(Error::invalid(
            field,
            format!("a tensor of dtype {k:?}"),
            expected(device),
        )),
        Some(_) if dims != 0 => Err(Error::invalid(
            field,
            format!("a tensor of {dims} dimensions"),
            expected(device),
        )),
        Some(_) if device.is_some_and(|d| d != scalar_device) => Err(Error::invalid(
            field,
            format!("a tensor on {scalar_device:?}"),
            expected(device),
        )),
        Some(_) => Ok(()),
    }
}

/// Why a list of pairs cannot take the fused path (the caller then uses the per-tensor one).
#[derive(Debug, Clone, PartialEq)]
pub enum Ineligible {
    /// Some tensor is not contiguous.
    NotContiguous(usize),
    /// The tensors are not all on one device.
    MixedDevices,
    /// A dtype the pass does not read (or an average that is not fp32/fp64).
    Dtype(usize),
    /// The device has no fused pass here (CUDA without a usable driver and NVRTC, or another
    /// device type); the string says why.
    Device(String),
}

/// The layout (and, on CUDA, the device tables) of one fused update, with the fingerprint it was
/// built from.
#[derive(Debug)]
pub struct FusedPlan {
    block_elems: u64,
    align: u64,
    keys: Vec<PairKey>,
    layout: Option<Layout>,
    device: Option<Device>,
    builds: u64,
    /// The device tables and kernel, when the plan is on a CUDA device.
    cuda: Option<crate::shim::cuda::DevicePlan>,
}

impl FusedPlan {
    /// Elements per block of the default plan: 4096 (16 KiB of fp32 per tensor side), enough to
    /// amortize a CUDA block's start and small enough that ResNet-50 has thousands of blocks.
    pub const BLOCK_ELEMS: u64 = 4096;
    /// Alignment of the default plan, in elements: 4 (one 16-byte vector of fp32).
    pub const ALIGN: u64 = 4;

    /// An empty plan (built on first use) with the default block shape.
    pub fn new() -> Self {
        FusedPlan {
            block_elems: Self::BLOCK_ELEMS,
            align: Self::ALIGN,
            keys: Vec::new(),
            layout: None,
            device: None,
            builds: 0,
            cuda: None,
        }
    }

    /// How many times the plan has been (re)built.
    pub fn builds(&self) -> u64 {
        self.builds
    }

    /// The current layout, if built.
    pub fn layout(&self) -> Option<&Layout> {
        self.layout.as_ref()
    }

    /// Applies `op` to every `(avg[t], model[t])` pair in one pass, rebuilding the plan first if
    /// any tensor's storage, size, contiguity, dtype or device changed since the last call.
    ///
    /// Returns `Ok(Err(why))`, having changed nothing, when the pairs cannot take the fused path
    /// (the caller falls back to a per-tensor update); `Ok(Ok(()))` when applied.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when the lists differ in length; a refused scalar
    /// ([`FusedOp`]); errors of the pass itself. Nothing is modified when it errs.
    pub fn apply(
        &mut self,
        op: FusedOp,
        avg: &[Tensor],
        model: &[Tensor],
    ) -> Result<std::result::Result<(), Ineligible>> {
        self.apply_fingerprinted(op, avg, model, None, None)
    }

    /// [`FusedPlan::apply`] with the scalar of `op` (a [`FusedOp::Lerp`] weight or a
    /// [`FusedOp::Bias`] β; the number inside `op` is ignored) read from `scalar`, a 0-dim float64
    /// tensor on the pairs' device: on CUDA the kernel reads it when it runs (no host read, so no
    /// sync, and a captured launch replays with the tensor's current value); on the CPU it is read
    /// on the host. The value on a device cannot be checked without a sync: the caller guarantees
    /// a weight in `[0, 1]` (a finite β ≥ 0); on the CPU it is checked.
    ///
    /// # Errors
    /// As [`FusedPlan::apply`]; [`check_device_scalar`]'s refusals. Nothing is modified when it errs.
    pub fn apply_with_device_scalar(
        &mut self,
        op: FusedOp,
        avg: &[Tensor],
        model: &[Tensor],
        scalar: &Tensor,
    ) -> Result<std::result::Result<(), Ineligible>> {
        self.apply_fingerprinted(op, avg, model, Some(scalar), None)
    }

    /// The body of both `apply`s: [`FusedPlan::apply`] (`scalar` `None`) or
    /// [`FusedPlan::apply_with_device_scalar`], with the pairs' fingerprint when the caller has
    /// already computed it (a [`super::PlanCache`] looking for its plan), so it is taken once per call.
    pub(crate) fn apply_fingerprinted(
        &mut self,
        op: FusedOp,
        avg: &[Tensor],
        model: &[Tensor],
        scalar: Option<&Tensor>,
        fp: Option<Fingerprint>,
    ) -> Result<std::result::Result<(), Ineligible>> {
        Self::check_lengths(op, avg, model)?;
        let fp = fp.unwrap_or_else(|| Fingerprint::of(avg, model));
        let Some(scalar) = scalar else {
            op.check_scalar()?;
            return self.apply_keyed(op, avg, model, fp, None);
        };
        let kind = scalar.defined().then(|| scalar.kind());
        let dims = if scalar.defined() { scalar.dim() } else { 0 };
        let device = if scalar.defined() {
            scalar.device()
        } else {
            Device::Cpu
        };
        check_device_scalar(op, kind, dims, device, avg.first().map(Tensor::device))?;
        if device == Device::Cpu {
            // Host memory: reading it is no sync, and the value is checked like a host scalar.
            let v = scalar.f_double_value(&[])?;
            let op = match op {
                FusedOp::Bias(_) => FusedOp::Bias(v),
                _ => FusedOp::Lerp(v),
            };
            op.check_scalar()?;
            return self.apply_keyed(op, avg, model, fp, None);
        }
        self.apply_keyed(op, avg, model, fp, Some(scalar))
    }

    /// Whether the plan was built from `fp` (so an update of those pairs reuses it as it is).
    pub fn built_for(&self, fp: &Fingerprint) -> bool {
        self.layout.is_some() && self.keys == fp.0
    }

    fn check_lengths(op: FusedOp, avg: &[Tensor], model: &[Tensor]) -> Result<()> {
        if avg.len() != model.len() {
            return Err(Error::LengthMismatch {
                op: op.name(),
                expected_name: "avg",
                expected: avg.len(),
                name: "model",
                got: model.len(),
            });
        }
        Ok(())
    }

    /// The pass itself: lengths and a host scalar checked, `fp` the pairs' fingerprint,
    /// `scalar` a checked device scalar (read by the CUDA kernel) or `None`.
    pub(crate) fn apply_keyed(
        &mut self,
        op: FusedOp,
        avg: &[Tensor],
        model: &[Tensor],
        fp: Fingerprint,
        scalar: Option<&Tensor>,
    ) -> Result<std::result::Result<(), Ineligible>> {
        let keys = fp.0;
        if keys != self.keys || self.layout.is_none() {
            if let Err(why) = self.rebuild(keys, avg, model)? {
                return Ok(Err(why));
            }
        }
        let (Some(layout), Some(device)) = (self.layout.as_ref(), self.device) else {
            return Ok(Ok(()));
        };
        match device {
            Device::Cpu => apply_cpu(layout, op, avg, model)?,
            Device::Cuda(_) => match self.cuda.as_ref() {
                Some(plan) => plan.launch(op, scalar.map(|s| s.data_ptr() as *const f64))?,
                None => return Ok(Err(Ineligible::Device("no device plan was built".into()))),
            },
            other => {
                return Ok(Err(Ineligible::Device(format!(
                    "no fused pass for {other:?}"
                ))))
            }
        }
        Ok(Ok(()))
    }

    /// Builds the layout (and device tables) for `keys`; on refusal keeps the old plan intact.
    fn rebuild(
        &mut self,
        keys: Vec<PairKey>,
        avg: &[Tensor],
        model: &[Tensor],
    ) -> Result<std::result::Result<(), Ineligible>> {
        let device = keys.first().map(|k| k.avg_device);
        for (t, k) in keys.iter().enumerate() {
            if !k.contiguous {
                return Ok(Err(Ineligible::NotContiguous(t)));
            }
            if Some(k.avg_device) != device || Some(k.model_device) != device {
                return Ok(Err(Ineligible::MixedDevices));
            }
            let avg_ok = matches!(k.avg_kind, Kind::Float | Kind::Double);
            let model_ok = matches!(
                k.model_kind,
                Kind::Float | Kind::Double | Kind::BFloat16 | Kind::Half
            );
            if !avg_ok || !model_ok || k.numel != k.model_numel {
                return Ok(Err(Ineligible::Dtype(t)));
            }
        }
        let sizes: Vec<u64> = keys.iter().map(|k| k.numel as u64).collect();
        let layout = Layout::new(&sizes, self.block_elems, self.align)?;
        let mut cuda = None;
        match device {
            None | Some(Device::Cpu) => {}
            Some(Device::Cuda(index)) => {
                match crate::shim::cuda::DevicePlan::build(index, &layout, avg, model)? {
                    Ok(plan) => cuda = Some(plan),
                    Err(why) => return Ok(Err(Ineligible::Device(why))),
                }
            }
            Some(other) => {
                return Ok(Err(Ineligible::Device(format!(
                    "no fused pass for {other:?}"
                ))))
            }
        }
        self.keys = keys;
        self.cuda = cuda;
        self.layout = Some(layout);
        self.device = device;
        self.builds += 1;
        Ok(Ok(()))
    }
}

impl Default for FusedPlan {
    fn default() -> Self {
        Self::new()
    }
}
