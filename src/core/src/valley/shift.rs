//! The shift scale between training and held-out loss, estimated from profiles along the same
//! directions (the random-shift assumption: the held-out loss is the training loss moved by δ).
//!
//! Per direction, δ is [`estimate_shift`]: the horizontal offset that best lays the training
//! profile onto the held-out one (`L_test(t) ≈ L_train(t + δ) + v`), so δ locates the held-out
//! profile's minimum relative to the training one. Under the assumption δ has mean 0, and its
//! scale is the root mean square `s = √(Σ δ_i²/n)` (the σ of a Gaussian shift). A two-sided
//! exact sign test asks whether the δ_i are centred on 0: `p = min(1, 2·P(X ≤ min(k₊, k₋)))`,
//! X ~ Binomial(k₊ + k₋, ½), zeros dropped. A small p says the held-out minimum sits
//! systematically to one side, which a zero-mean shift does not explain.
use super::bias::estimate_shift;
use crate::error::{Error, Result};

/// The shift scale estimated from train and held-out profiles.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ShiftEstimate {
    /// δ per direction, in offset units (`L_test(t) ≈ L_train(t + δ)`).
    pub shifts: Vec<f64>,
    /// The root mean square of the δ: the scale used for the bias c*.
    pub scale: f64,
    /// The mean δ.
    pub mean: f64,
    /// Directions with δ > 0.
    pub positive: usize,
    /// Directions with δ < 0.
    pub negative: usize,
    /// Two-sided exact sign test of "δ centred on 0".
    pub sign_test_p: f64,
}

/// Two-sided exact sign test: `min(1, 2·P(X ≤ min(k₊, k₋)))`, X ~ Binomial(k₊ + k₋, ½).
pub fn sign_test(positive: usize, negative: usize) -> f64 {
    let n = positive + negative;
    let k = positive.min(negative);
    // Σ_{j ≤ k} C(n, j)/2^n, term by term in floating point (C(n, j+1) = C(n, j)(n−j)/(j+1)).
    let mut term = 0.5f64.powi(n as i32);
    let mut tail = 0.0;
    for j in 0..=k {
        tail += term;
        term *= (n - j) as f64 / (j + 1) as f64;
    }
    (2.0 * tail).min(1.0)
}

/// Estimates the shift from `(train, test)` loss profiles on `offsets`, δ searched within
/// ±`max_shift`.
pub fn estimate_shift_scale(
    offsets: &[f64],
    profiles: &[(&[f64], &[f64])],
    max_shift: f64,
) -> Result<ShiftEstimate> {
    if profiles.is_empty() {
        return Err(Error::invalid(
            "profiles",
            0,
            "at least one pair of train and held-out profiles",
        ));
    }
    if !(max_shift > 0.0 && max_shift.is_finite()) {
        return Err(Error::invalid(
            "max_shift",
            max_shift,
            "a finite number > 0",
        ));
    }
    let shifts = profiles
        .iter()
        .map(|(train, test)| estimate_shift(offsets, train, test, max_shift))
        .collect::<Result<Vec<f64>>>()?;
    let n = shifts.len() as f64;
    let positive = shifts.iter().filter(|&&d| d > 0.0).count();
    let negative = shifts.iter().filter(|&&d| d < 0.0).count();
    Ok(ShiftEstimate {
        scale: (shifts.iter().map(|d| d * d).sum::<f64>() / n).sqrt(),
        mean: shifts.iter().sum::<f64>() / n,
        positive,
        negative,
        sign_test_p: sign_test(positive, negative),
        shifts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against hand-computed binomial tails: 10 of 10 gives 2/1024; 3 of 10 gives
    /// 2·(1 + 10 + 45 + 120)/1024; balanced counts give 1.
    #[test]
    fn sign_test_matches_binomial_tails() {
        assert!((sign_test(10, 0) - 2.0 / 1024.0).abs() < 1e-15);
        assert!((sign_test(3, 7) - 2.0 * 176.0 / 1024.0).abs() < 1e-12);
        assert!((sign_test(7, 3) - sign_test(3, 7)).abs() < 1e-15);
        assert_eq!(sign_test(5, 5), 1.0);
        assert_eq!(sign_test(0, 0), 1.0);
    }
}
