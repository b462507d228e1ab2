//! The theorem-optimal bias of a fitted valley (He et al. 2019, Theorem (a); harness/THEOREMS.md T1 and D1–D3).
//!
//! The fitted two-sided model `f(x) = c±|x|^p` (see [`crate::valley::asymmetry`]) is handed to the
//! harness as `AsymPower { a± = p·c±, p }` (its `a|x|^p/p`); under a symmetric random shift δ of
//! scale s, the expected test loss of the point x = c is `g(c) = E_δ f(c + δ)`. The harness
//! (`harness::bias::analyze`, quadrature plus a bracketing scan) returns `c* = argmin g`, which
//! lies on the flat side, and `c_max`, the end of the interval `(0, c_max)` where `g(c) < g(0)`.
//! No maths is repeated here.
use super::asymmetry::TwoSidedFit;
use crate::error::{Error, Result};
use harness::shift::Shift;
use harness::valley::AsymPower;

/// The law of the shift δ between training and test loss (symmetric, mean 0).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShiftLaw {
    /// δ ~ N(0, s²).
    Gaussian,
    /// δ ~ U[−s, s].
    Uniform,
}

impl ShiftLaw {
    fn shift(self, scale: f64) -> Shift {
        match self {
            ShiftLaw::Gaussian => Shift::Gaussian { sigma: scale },
            ShiftLaw::Uniform => Shift::Uniform { half_width: scale },
        }
    }
}

/// The optimal bias of a fitted valley under a shift.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct ValleyBias {
    /// The shift's law.
    pub law: ShiftLaw,
    /// Its scale s (σ or half-width), in the profile's offset units.
    pub scale: f64,
    /// g(0): the expected shifted loss rise of the probed point.
    pub g0: f64,
    /// g'(0) (< 0 when the flat side is +).
    pub dg0: f64,
    /// c*, the expected-loss-optimal offset (same sign as the flat side).
    pub c_star: f64,
    /// g(c*).
    pub g_c_star: f64,
    /// `g(c) < g(0)` for c strictly between 0 and c_max.
    pub c_max: f64,
}

/// `c*` and `c_max` for `fit` under `law` with scale `scale` (> 0), by the harness's quadrature.
pub fn optimal_bias(fit: &TwoSidedFit, law: ShiftLaw, scale: f64) -> Result<ValleyBias> {
    if !(scale > 0.0 && scale.is_finite()) {
        return Err(Error::invalid("shift scale", scale, "a finite number > 0"));
    }
    // p ≤ 1 makes f' discontinuous or unbounded at 0, where g' = E f' and the harness's bracketing
    // assume p > 1 (harness AsymPower docs).
    if !(fit.exponent > 1.0 && fit.exponent.is_finite()) {
        return Err(Error::invalid(
            "fit exponent",
            fit.exponent,
            "an exponent > 1 (refit with a fixed exponent, e.g. 2)",
        ));
    }
    let valley = AsymPower {
        a_plus: fit.exponent * fit.c_plus,
        a_minus: fit.exponent * fit.c_minus,
        p: fit.exponent,
    };
    let r = harness::bias::analyze(&valley, &law.shift(scale));
    for (what, v) in [("g(0)", r.g0), ("c*", r.c_star), ("c_max", r.c_max)] {
        if !v.is_finite() {
            return Err(Error::NotFinite {
                what: format!("optimal bias: {what}"),
                value: v,
            });
        }
    }
    Ok(ValleyBias {
        law,
        scale,
        g0: r.g0,
        dg0: r.dg0,
        c_star: r.c_star,
        g_c_star: r.g_c_star,
        c_max: r.c_max,
    })
}

/// Estimates the shift between a training and a held-out profile on the same grid: the
/// horizontal offset δ minimizing `Σ_i (L_test(t_i) − L_train(t_i + δ) − v)²` over δ on a grid
/// of step `(t₁ − t₀)/20` within ±`max_shift`, v fitted (a vertical offset is not a shift),
/// `L_train` linearly interpolated; points whose `t_i + δ` leaves the grid are dropped.
/// Positive δ: the held-out curve is the training curve moved left (`L_test(t) ≈ L_train(t+δ)`).
pub fn estimate_shift(offsets: &[f64], train: &[f64], test: &[f64], max_shift: f64) -> Result<f64> {
    if offsets.len() < 3 || train.len() != offsets.len() || test.len() != offsets.len() {
        return Err(Error::invalid(
            "profiles",
            format!(
                "{} offsets, {} train, {} test",
                offsets.len(),
                train.len(),
                test.len()
            ),
            "three or more offsets with one train and one test loss each",
        ));
    }
    let step = (offsets[1] - offsets[0]).abs() / 20.0;
    let interp = |t: f64| -> Option<f64> {
        let i = offsets.windows(2).position(|w| w[0] <= t && t <= w[1])?;
        let (a, b) = (offsets[i], offsets[i + 1]);
        let u = if b > a { (t - a) / (b - a) } else { 0.0 };
        Some(train[i] + u * (train[i + 1] - train[i]))
    };
    let steps = (max_shift / step).ceil() as i64;
    let mut best = (f64::INFINITY, 0.0);
    for k in -steps..=steps {
        let d = k as f64 * step;
        let pairs: Vec<(f64, f64)> = offsets
            .iter()
            .zip(test)
            .filter_map(|(&t, &y)| interp(t + d).map(|x| (y, x)))
            .collect();
        if pairs.len() < offsets.len() / 2 {
            continue;
        }
        let v = pairs.iter().map(|(y, x)| y - x).sum::<f64>() / pairs.len() as f64;
        let sse = pairs.iter().map(|(y, x)| (y - x - v).powi(2)).sum::<f64>() / pairs.len() as f64;
        if sse < best.0 {
            best = (sse, d);
        }
    }
    Ok(best.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The quadratic fit a₊ = 1, a₋ = 10 under U[−1, 1] gives c* = 0.519494 (harness/THEOREMS.md D2).
    #[test]
    fn optimal_bias_matches_d2() {
        let fit = TwoSidedFit {
            c_plus: 0.5,
            c_minus: 5.0,
            exponent: 2.0,
            ratio: 0.1,
            rms_log_residual: 0.0,
            points: [1, 1],
        };
        let b = optimal_bias(&fit, ShiftLaw::Uniform, 1.0).unwrap();
        assert!((b.c_star - 0.519494).abs() < 1e-5, "{b:?}");
        assert!((b.c_max - 1.224745).abs() < 1e-5);
        let g = optimal_bias(&fit, ShiftLaw::Gaussian, 1.0).unwrap();
        assert!((g.c_star - 0.90146).abs() < 1e-4, "{g:?}");
        // Mirrored: the bias points the other way.
        let m = TwoSidedFit {
            c_plus: 5.0,
            c_minus: 0.5,
            ratio: 10.0,
            ..fit
        };
        assert!((optimal_bias(&m, ShiftLaw::Uniform, 1.0).unwrap().c_star + 0.519494).abs() < 1e-5);
    }

    /// A known shift is recovered from two shifted copies of a curve.
    #[test]
    fn estimate_shift_recovers_known_shift() {
        let t: Vec<f64> = (0..=100).map(|i| -2.0 + i as f64 * 0.05).collect();
        let f = |x: f64| if x >= 0.0 { 0.5 * x * x } else { 3.0 * x * x };
        let train: Vec<f64> = t.iter().map(|&x| f(x)).collect();
        let test: Vec<f64> = t.iter().map(|&x| f(x + 0.3) + 0.1).collect();
        let d = estimate_shift(&t, &train, &test, 1.0).unwrap();
        assert!((d - 0.3).abs() < 0.01, "{d}");
    }
}

crate::names::from_kebab_str!(ShiftLaw, "shift-law", "gaussian, uniform");
