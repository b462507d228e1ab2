//! The flat-side bias: move the average further from an anchor, through the average.
//!
//! `w̃ = w̄ + β·(w̄ − w_anchor)`, β ≥ 0. With the anchor at the last SGD iterate, SGD spends more
//! time on the flat side of an asymmetric valley, so `w̄ − w_sgd` points (on average) toward the
//! flat side, and β > 0 extrapolates along it (He, Huang & Yuan, NeurIPS 2019, "Asymmetric
//! Valleys", Fig. 1(b)–(c)). β = 0 is the average itself; w̃ is affine in β.
use crate::error::{Error, Result};
use crate::shim;
use tch::{Kind, Tensor};

/// Checks that β is finite and ≥ 0.
pub fn validate_beta(beta: f64) -> Result<()> {
    if beta >= 0.0 && beta.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid("beta", beta, "a finite number >= 0"))
    }
}

/// Checks β for an average kept in `kind`: [`validate_beta`], and for an average that is not
/// float64 (the pass computes in float32 there) β = 0 or β in [`f32::MIN_POSITIVE`], [`f32::MAX`]:
/// a larger β overflows to inf, a smaller nonzero one is flushed toward zero, and neither gives
/// `w̄ + β(w̄ − w)`. The op library's `bias_toward_flat_` refuses the same range.
pub fn validate_beta_for(beta: f64, kind: Kind) -> Result<()> {
    validate_beta(beta)?;
    if kind == Kind::Double || beta == 0.0 {
        return Ok(());
    }
    let (lo, hi) = (f64::from(f32::MIN_POSITIVE), f64::from(f32::MAX));
    if (lo..=hi).contains(&beta) {
        Ok(())
    } else {
        Err(Error::invalid(
            "beta",
            beta,
            format!(
                "0 or a number in [{lo:e}, {hi:e}] (the normal range of torch.float32, in which an \
                 average of dtype {kind:?} is computed)"
            ),
        ))
    }
}

/// `out[i] ← avg[i] + β·(avg[i] − anchor[i])` for every i, fused. `out` may alias `anchor`
/// (writing the biased weights into the model whose current weights are the anchor).
///
/// The caller guarantees matching shapes and devices (the [`Averager`](crate::average::Averager)
/// checks them); lengths and β are checked here.
pub fn bias_toward_flat(
    out: &[Tensor],
    avg: &[Tensor],
    anchor: &[Tensor],
    beta: f64,
) -> Result<()> {
    validate_beta(beta)?;
    for a in avg {
        validate_beta_for(beta, a.kind())?;
    }
    let _guard = tch::no_grad_guard();
    shim::foreach_bias_toward_flat(out, avg, anchor, beta)
}
