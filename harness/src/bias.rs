//! The expected shifted loss `g(c) = E_δ f(c + δ)` and the bias it rewards.
//!
//! For a valley f and a symmetric shift law δ (THEOREMS.md §0: the test loss is the training loss
//! translated by δ), the expected test loss of the solution `c` is g(c). The bias theorem
//! (THEOREMS.md T1, from D1) says that when the flat side is + and δ is not degenerate,
//! `g'(0) < 0`, the minimiser `c*` of g is > 0, and g(c) < g(0) on (0, c_max).
//!
//! This module computes all of it for any [`Valley1d`] and any [`Shift`] by quadrature
//! ([`analyze`]) and by Monte Carlo ([`monte_carlo_g`]); [`crate::oracle`] has the closed forms.
use crate::quadrature::{bisect, golden_min};
use crate::shift::Shift;
use crate::valley::Valley1d;
use rand::SeedableRng;
use serde::Serialize;

/// Absolute tolerance of every quadrature here.
pub const QUAD_TOL: f64 = 1e-12;

/// What the bias theorem is about, for one valley and one shift law.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct BiasReport {
    /// g(0), the expected shifted loss of the empirical minimiser.
    pub g0: f64,
    /// g'(0) = E f'(δ) (D1).
    pub dg0: f64,
    /// The minimiser c* of g (on the side g'(0) points away from; 0 for a symmetric case).
    pub c_star: f64,
    /// g(c*).
    pub g_c_star: f64,
    /// The first c beyond 0, on c*'s side, with g(c) = g(0); g < g(0) strictly between 0 and it.
    pub c_max: f64,
}

/// Kinks of `δ ↦ f(c + δ)`: the valley's kinks shifted by −c.
fn shifted_kinks<V: Valley1d>(valley: &V, c: f64) -> Vec<f64> {
    valley.kinks().iter().map(|k| k - c).collect()
}

/// `g(c) = E_δ f(c + δ)` by quadrature.
pub fn g<V: Valley1d>(valley: &V, law: &Shift, c: f64) -> f64 {
    law.expect(|d| valley.value(c + d), &shifted_kinks(valley, c), QUAD_TOL)
}

/// `g'(c) = E_δ f'(c + δ)` (differentiation under E is fine: f' is continuous and of polynomial growth).
pub fn dg<V: Valley1d>(valley: &V, law: &Shift, c: f64) -> f64 {
    law.expect(
        |d| valley.derivative(c + d),
        &shifted_kinks(valley, c),
        QUAD_TOL,
    )
}

/// g'(0), c*, g(c*) and c_max for any valley and law, by quadrature plus a scan.
///
/// The scan walks from 0 in the direction −sign g'(0), with steps growing from scale/32 by 5 %,
/// until g returns to g(0); that brackets c_max (then bisection to 1e-13) and the grid minimum
/// brackets c* (then bisection on g', or golden section if g' has no sign change there).
/// A scan is used rather than convexity because [`crate::valley::SmoothBlend`] is not convex.
/// When |g'(0)| ≤ 1e-11 the case is symmetric: c* = c_max = 0 is reported.
pub fn analyze<V: Valley1d>(valley: &V, law: &Shift) -> BiasReport {
    let g0 = g(valley, law, 0.0);
    let dg0 = dg(valley, law, 0.0);
    if dg0.abs() <= 1e-11 * (1.0 + g0.abs()) {
        return BiasReport {
            g0,
            dg0,
            c_star: 0.0,
            g_c_star: g0,
            c_max: 0.0,
        };
    }
    let dir = -dg0.signum();
    let gd = |t: f64| g(valley, law, dir * t);
    let mut step = law.scale().max(1e-6) / 32.0;
    let mut grid = vec![(0.0, g0)];
    let mut t = 0.0;
    loop {
        t += step;
        step *= 1.05;
        let gt = gd(t);
        grid.push((t, gt));
        if gt >= g0 || grid.len() > 2000 {
            break;
        }
    }
    let n = grid.len();
    let (t_lo, t_hi) = (grid[n - 2].0, grid[n - 1].0);
    let t_max = bisect(|t| gd(t) - g0, t_lo, t_hi, 1e-13).unwrap_or(t_hi);
    let i = (1..n - 1)
        .min_by(|&a, &b| grid[a].1.total_cmp(&grid[b].1))
        .unwrap_or(1);
    let (a, b) = (grid[i - 1].0, grid[(i + 1).min(n - 1)].0);
    let dgd = |t: f64| dir * dg(valley, law, dir * t);
    let t_star = bisect(dgd, a, b, 1e-13).unwrap_or_else(|| golden_min(gd, a, b, 1e-10));
    BiasReport {
        g0,
        dg0,
        c_star: dir * t_star,
        g_c_star: gd(t_star),
        c_max: dir * t_max,
    }
}

/// Monte Carlo estimate of g(c) with its standard error, from `n` draws of δ (seeded).
///
/// Independent of the quadrature: it only uses [`Shift::sample`] and [`Valley1d::value`].
pub fn monte_carlo_g<V: Valley1d>(
    valley: &V,
    law: &Shift,
    c: f64,
    n: usize,
    seed: u64,
) -> (f64, f64) {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let (mut s1, mut s2) = (0.0, 0.0);
    for _ in 0..n {
        let v = valley.value(c + law.sample(&mut rng));
        s1 += v;
        s2 += v * v;
    }
    let nf = n as f64;
    let mean = s1 / nf;
    (mean, ((s2 / nf - mean * mean).max(0.0) / nf).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::{arb_asym_valley, arb_shift, arb_symmetric_valley};
    use crate::valley::AnyValley;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::proptest_config())]

        /// T1 (bias): flat side + and a non-degenerate symmetric δ ⇒ g'(0) < 0, c* > 0,
        /// g(c*) < g(0), and g(c) < g(0) at 40 points spread over (0, c_max), checked on a grid
        /// finer than and offset from the scan's. Also g'(0) = E f'(δ) (D1) against Monte Carlo.
        /// To fail, some family would need E f'(δ) ≥ 0, i.e. break D1's f'(x) < −f'(−x).
        #[test]
        fn bias_theorem_holds(v in arb_asym_valley(), law in arb_shift()) {
            let r = analyze(&v, &law);
            prop_assert!(r.dg0 < 0.0, "{:?}", r);
            prop_assert!(r.c_star > 0.0 && r.c_max > r.c_star, "{:?}", r);
            prop_assert!(r.g_c_star < r.g0);
            for j in 1..40 {
                let c = r.c_max * (j as f64 - 0.37) / 39.0;
                if c > 0.0 {
                    prop_assert!(g(&v, &law, c) < r.g0, "c = {} of c_max = {}", c, r.c_max);
                }
            }
            // Just beyond c_max the inequality fails (that is what c_max means).
            prop_assert!(g(&v, &law, r.c_max * 1.001) > r.g0);
            // c* is a minimiser: no grid point in (0, c_max] does better.
            for j in 1..=50 {
                prop_assert!(g(&v, &law, r.c_max * j as f64 / 50.0) >= r.g_c_star - 1e-10);
            }
            let (mc, se) = monte_carlo_g(&v, &law, r.c_star, 50_000, 11);
            prop_assert!((mc - r.g_c_star).abs() < 6.0 * se + 1e-9, "MC {} ± {} vs {}", mc, se, r.g_c_star);
        }

        /// Mirroring flips every sign: g_mirror(c) = g(−c), so dg0, c*, c_max change sign and g0, g(c*) stay.
        #[test]
        fn mirroring_flips_every_sign(v in arb_asym_valley(), law in arb_shift()) {
            let (r, m) = (analyze(&v, &law), analyze(&v.mirrored(), &law));
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-8 * (1.0 + a.abs());
            prop_assert!(close(m.g0, r.g0) && close(m.g_c_star, r.g_c_star));
            prop_assert!(close(m.dg0, -r.dg0) && close(m.c_star, -r.c_star) && close(m.c_max, -r.c_max), "{:?} vs {:?}", r, m);
            prop_assert!(m.c_star < 0.0);
        }

        /// A symmetric valley has c* = 0: g'(0) = 0, and a direct golden-section minimisation
        /// of g over [−3·scale, 3·scale] (which does not use `analyze`'s branch) lands on 0.
        #[test]
        fn symmetric_valley_has_no_bias(v in arb_symmetric_valley(), law in arb_shift()) {
            let r = analyze(&v, &law);
            prop_assert!(r.dg0.abs() < 1e-9 * (1.0 + r.g0));
            prop_assert_eq!(r.c_star, 0.0);
            let s = law.scale();
            let c = golden_min(|c| g(&v, &law, c), -3.0 * s, 2.9 * s, 1e-7);
            prop_assert!(c.abs() < 1e-4 * s, "argmin {}", c);
            if let AnyValley::Quadratic(_) | AnyValley::Power(_) = v {
                // Convex and even ⇒ g(c) ≥ g(0) everywhere.
                for j in -20..=20 {
                    prop_assert!(g(&v, &law, 0.1 * s * j as f64) >= r.g0 - 1e-12);
                }
            }
        }
    }
}
