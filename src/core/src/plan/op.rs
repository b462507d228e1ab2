//! What one fused pass does to each `(average, model)` pair of tensors.
//!
//! Every pass runs over the same two lists, so one plan (one pointer table on a device) serves
//! all four: `avg[t]` is the average (fp32 or fp64) and `model[t]` the model's tensor in its own
//! dtype (fp32, fp64, bf16, fp16).

/// The per-element operation of a fused pass. All arithmetic is in the average's dtype.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FusedOp {
    /// `avg ← avg + w·(model − avg)`, ATen's `lerp` formula: `fma(w, model − avg, avg)` for
    /// `w < ½`, `fma(w − 1, model − avg, model)` otherwise. EMA: `w = 1 − decay`; SWA running mean:
    /// `w = 1/(n + 1)`. `w` must lie in `[0, 1]`.
    Lerp(f64),
    /// `avg ← model` (the first update: `avg + 1·(model − avg)` is not exactly `model` in general).
    CopyIn,
    /// `model ← avg`, rounded to the model's dtype (nearest even, as `Tensor::copy_`).
    CopyOut,
    /// `model ← avg + β·(avg − model)` (the flat-side bias with the model as anchor), computed as
    /// `fma(β, avg − model, avg)` and rounded to the model's dtype. `β` must be finite and ≥ 0.
    Bias(f64),
}

impl FusedOp {
    /// The op's name in error messages.
    pub fn name(self) -> &'static str {
        match self {
            FusedOp::Lerp(_) => "fused lerp",
            FusedOp::CopyIn => "fused copy-in",
            FusedOp::CopyOut => "fused copy-out",
            FusedOp::Bias(_) => "fused bias",
        }
    }

    /// Checks the op's scalar, naming it (`weight` or `beta`) and its value when refused.
    pub(crate) fn check_scalar(self) -> crate::Result<()> {
        match self {
            FusedOp::Lerp(w) if !(0.0..=1.0).contains(&w) => Err(crate::Error::InvalidConfig {
                field: "weight",
                value: w.to_string(),
                expected: "a finite number in [0, 1]".into(),
            }),
            FusedOp::Bias(b) if !(b.is_finite() && b >= 0.0) => Err(crate::Error::InvalidConfig {
                field: "beta",
                value: b.to_string(),
                expected: "a finite number >= 0".into(),
            }),
            _ => Ok(()),
        }
    }
}
