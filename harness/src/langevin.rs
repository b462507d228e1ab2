//! The small-η (Langevin) prediction of SGD's stationary law (THEOREMS.md D5).
//!
//! SGD with step η and gradient noise of variance σ² moves by −ηf'(x) ± ησ per step: over a
//! time h = η that is drift −f'·h and variance h·(ησ²), the Euler scheme of
//! `dX = −f'(X)dt + √(ησ²) dW`, whose stationary density is ∝ exp(−2f(x)/(ησ²)). The
//! "temperature" is `T = ησ²`. The approximation ignores O(η) discretisation effects: the
//! simulated bias exceeds it by roughly a factor 1 + η (THEOREMS.md D5 table; tested in `sgd`).
use crate::quadrature::integrate_pieces;
use crate::valley::{PiecewiseQuadratic, Valley1d};
use serde::Serialize;

/// Moments of the Gibbs density ∝ exp(−2f/T).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LangevinPrediction {
    /// E[x].
    pub mean: f64,
    /// P(x > 0).
    pub frac_pos: f64,
    /// E[x⁺].
    pub e_pos: f64,
    /// E[x⁻].
    pub e_neg: f64,
}

/// D5 in closed form for the piecewise quadratic, with temperature `t = ησ²`:
/// E[x] = √(T/π)(a₊^{−½} − a₋^{−½}), P(x > 0) = √a₋/(√a₊ + √a₋), E[x^±] = (T/(2a_±))/Z with
/// Z = ½√(πT)(a₊^{−½} + a₋^{−½}) (each half is a half-Gaussian of variance T/(2a_±)).
pub fn langevin_quadratic(q: &PiecewiseQuadratic, t: f64) -> LangevinPrediction {
    let (ip, im) = (q.a_plus.powf(-0.5), q.a_minus.powf(-0.5));
    let z = 0.5 * (std::f64::consts::PI * t).sqrt() * (ip + im);
    LangevinPrediction {
        mean: (t / std::f64::consts::PI).sqrt() * (ip - im),
        frac_pos: ip / (ip + im),
        e_pos: t / (2.0 * q.a_plus) / z,
        e_neg: t / (2.0 * q.a_minus) / z,
    }
}

/// D5 for any valley, by quadrature of exp(−2f/T) over the region where 2f/T < 100
/// (found by doubling outwards; the mass beyond is below e^{−100}).
pub fn langevin<V: Valley1d>(v: &V, t: f64) -> LangevinPrediction {
    let reach = |sign: f64| {
        let mut r = t.sqrt().max(1e-6);
        while 2.0 * v.value(sign * r) / t < 100.0 && r < 1e12 {
            r *= 2.0;
        }
        r
    };
    let (lo, hi) = (-reach(-1.0), reach(1.0));
    let w = |x: f64| (-2.0 * v.value(x) / t).exp();
    // Quarter-scale breakpoints keep each piece smooth and of modest width.
    let breaks: Vec<f64> = (-16..=16).map(|i| i as f64 * hi.max(-lo) / 16.0).collect();
    let int = |h: &dyn Fn(f64) -> f64| integrate_pieces(|x| h(x) * w(x), lo, hi, &breaks, 1e-14);
    let z = int(&|_| 1.0);
    let e_pos = int(&|x| x.max(0.0)) / z;
    let e_neg = int(&|x| (-x).max(0.0)) / z;
    LangevinPrediction {
        mean: e_pos - e_neg,
        frac_pos: int(&|x| if x > 0.0 { 1.0 } else { 0.0 }) / z,
        e_pos,
        e_neg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::proptest_config())]

        /// Closed form vs quadrature, and the mean is on the flat side (it equals
        /// √(T/π)(a₊^{-½} − a₋^{-½}) > 0 iff a₊ < a₋); D4's identity holds exactly for the
        /// Gibbs law too: a₊E[x⁺] = a₋E[x⁻] (both equal T/(2Z)).
        #[test]
        fn langevin_closed_form_matches_quadrature(ap in 0.1f64..5.0, k in 1.0f64..50.0, t in 1e-4f64..1.0) {
            let q = PiecewiseQuadratic::new(ap, ap * k);
            let (c, n) = (langevin_quadratic(&q, t), langevin(&q, t));
            let tol = 1e-9 * (1.0 + c.e_pos);
            prop_assert!((c.mean - n.mean).abs() < tol && (c.e_pos - n.e_pos).abs() < tol && (c.e_neg - n.e_neg).abs() < tol);
            prop_assert!((c.frac_pos - n.frac_pos).abs() < 1e-9);
            prop_assert!((q.a_plus * c.e_pos - q.a_minus * c.e_neg).abs() < 1e-12 * (1.0 + c.e_pos));
            if k > 1.0 { prop_assert!(c.mean > 0.0 && c.frac_pos > 0.5); }
        }
    }

    /// THEOREMS.md §8 claim 7 / D5: the coefficient a₊^{-½} − a₋^{-½} = 0.68377 for a = (1, 10),
    /// and the predictions 0.03858, 0.08626, 0.12199 at η = 0.01, 0.05, 0.1 (σ = 1), P = 0.760.
    #[test]
    fn reference_d5_predictions() {
        let q = PiecewiseQuadratic::new(1.0, 10.0);
        let coef = langevin_quadratic(&q, std::f64::consts::PI).mean;
        assert!((coef - 0.68377).abs() < 5e-6);
        for (eta, want) in [(0.01, 0.03858), (0.05, 0.08626), (0.10, 0.12199)] {
            assert!((langevin_quadratic(&q, eta).mean - want).abs() < 5e-6);
        }
        assert!((langevin_quadratic(&q, 0.05).frac_pos - 0.760).abs() < 5e-4);
    }
}
