//! Adaptive Gauss–Kronrod quadrature and bracketing root finding.
//!
//! Every expectation the harness does not know in closed form goes through [`integrate`]: the
//! 15-point Kronrod rule with its embedded 7-point Gauss rule (QUADPACK's `qk15`), bisecting
//! any interval whose |K15 − G7| exceeds its share of the tolerance. On a smooth piece the error
//! of K15 is far below |K15 − G7|, so the returned value is usually accurate to well under
//! `tol`; callers split integrals at kinks ([`integrate_pieces`]) so every piece is smooth.

/// Kronrod nodes on [−1, 1] (non-negative half; QUADPACK `xgk`).
const XGK: [f64; 8] = [
    0.991_455_371_120_812_6,
    0.949_107_912_342_758_5,
    0.864_864_423_359_769_1,
    0.741_531_185_599_394_4,
    0.586_087_235_467_691_1,
    0.405_845_151_377_397_2,
    0.207_784_955_007_898_5,
    0.0,
];
/// Kronrod weights (QUADPACK `wgk`).
const WGK: [f64; 8] = [
    0.022_935_322_010_529_22,
    0.063_092_092_629_978_55,
    0.104_790_010_322_250_18,
    0.140_653_259_715_525_92,
    0.169_004_726_639_267_9,
    0.190_350_578_064_785_4,
    0.204_432_940_075_298_9,
    0.209_482_141_084_727_83,
];
/// Gauss weights for the nodes XGK[1], XGK[3], XGK[5], XGK[7] (QUADPACK `wg`).
const WG: [f64; 4] = [
    0.129_484_966_168_869_7,
    0.279_705_391_489_276_7,
    0.381_830_050_505_118_9,
    0.417_959_183_673_469_4,
];

/// One K15/G7 pair on [a, b]: returns (K15, |K15 − G7|).
fn kronrod15(f: &dyn Fn(f64) -> f64, a: f64, b: f64) -> (f64, f64) {
    let centre = 0.5 * (a + b);
    let half = 0.5 * (b - a);
    let fc = f(centre);
    let mut k = WGK[7] * fc;
    let mut g = WG[3] * fc;
    for j in 0..7 {
        let dx = half * XGK[j];
        let s = f(centre - dx) + f(centre + dx);
        k += WGK[j] * s;
        if j % 2 == 1 {
            g += WG[j / 2] * s;
        }
    }
    (k * half, ((k - g) * half).abs())
}

/// The most intervals one [`integrate`] call may bisect: 2¹⁶ K15 pairs (≈ 2·10⁶ evaluations),
/// far above what a smooth piece needs (tens) and small enough to finish in well under a second.
const MAX_INTERVALS: usize = 1 << 16;

/// Bisects until each piece meets its share of `tol`. Returns NaN, which every caller reports
/// as a failed computation, when an estimate is not finite (the integrand overflowed: no amount
/// of bisection helps) or when the interval budget runs out.
fn adapt(
    f: &dyn Fn(f64) -> f64,
    a: f64,
    b: f64,
    whole: (f64, f64),
    tol: f64,
    depth: u32,
    budget: &mut usize,
) -> f64 {
    let (k, err) = whole;
    if !k.is_finite() || !err.is_finite() {
        return f64::NAN;
    }
    // Depth 48 halves an interval below 1e-14 of its length: past that the error is rounding.
    if err <= tol || depth >= 48 || (b - a).abs() < 1e-14 * (a.abs() + b.abs()) {
        return k;
    }
    if *budget == 0 {
        return f64::NAN;
    }
    *budget -= 1;
    let m = 0.5 * (a + b);
    let left = kronrod15(f, a, m);
    let right = kronrod15(f, m, b);
    let l = adapt(f, a, m, left, 0.5 * tol, depth + 1, budget);
    if l.is_nan() {
        return l;
    }
    l + adapt(f, m, b, right, 0.5 * tol, depth + 1, budget)
}

/// `∫_a^b f(x) dx` by adaptive Gauss–Kronrod (G7/K15) to absolute tolerance `tol`.
///
/// `f` should be smooth on (a, b); split at kinks with [`integrate_pieces`]. Returns NaN when
/// the integrand is not finite somewhere it is sampled or the bisection budget
/// (`MAX_INTERVALS`) runs out: the loop is bounded whatever the input.
pub fn integrate(f: impl Fn(f64) -> f64, a: f64, b: f64, tol: f64) -> f64 {
    if a == b {
        return 0.0;
    }
    if !(a.is_finite() && b.is_finite() && tol.is_finite()) {
        return f64::NAN;
    }
    let whole = kronrod15(&f, a, b);
    let mut budget = MAX_INTERVALS;
    adapt(&f, a, b, whole, tol, 0, &mut budget)
}

/// `∫_a^b f` split at every breakpoint inside (a, b), so each piece is smooth.
pub fn integrate_pieces(f: impl Fn(f64) -> f64, a: f64, b: f64, breaks: &[f64], tol: f64) -> f64 {
    let mut points: Vec<f64> = breaks.iter().copied().filter(|&x| x > a && x < b).collect();
    points.push(a);
    points.push(b);
    points.sort_by(f64::total_cmp);
    points.dedup();
    let pieces = (points.len() - 1) as f64;
    points
        .windows(2)
        .map(|w| integrate(&f, w[0], w[1], tol / pieces))
        .sum()
}

/// A root of `f` in [lo, hi] by bisection, given `f(lo)` and `f(hi)` of opposite signs (or zero).
///
/// Returns `None` when the bracket holds no sign change. Bisection is chosen over faster
/// methods because `f` here is itself a quadrature, only piecewise smooth, and robustness
/// matters more than the ~60 evaluations it costs.
pub fn bisect(f: impl Fn(f64) -> f64, mut lo: f64, mut hi: f64, xtol: f64) -> Option<f64> {
    let mut flo = f(lo);
    let fhi = f(hi);
    if flo == 0.0 {
        return Some(lo);
    }
    if fhi == 0.0 {
        return Some(hi);
    }
    if flo.signum() == fhi.signum() || !flo.is_finite() || !fhi.is_finite() {
        return None;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if hi - lo <= xtol || mid == lo || mid == hi {
            break;
        }
        let fm = f(mid);
        if fm == 0.0 {
            return Some(mid);
        }
        if fm.signum() == flo.signum() {
            lo = mid;
            flo = fm;
        } else {
            hi = mid;
        }
    }
    Some(0.5 * (lo + hi))
}

/// The minimiser of a unimodal `f` on [lo, hi] by golden-section search, to `xtol`.
///
/// At most 400 steps: each shrinks the bracket by 0.618, so 400 steps take any finite bracket
/// below its own rounding (0.618⁴⁰⁰ ≈ 10⁻⁸⁴), which is where a too-small `xtol` would
/// otherwise loop forever. Returns NaN for a bracket that is not finite.
pub fn golden_min(f: impl Fn(f64) -> f64, mut lo: f64, mut hi: f64, xtol: f64) -> f64 {
    if !(lo.is_finite() && hi.is_finite()) {
        return f64::NAN;
    }
    let r = 0.5 * (5f64.sqrt() - 1.0);
    let mut x1 = hi - r * (hi - lo);
    let mut x2 = lo + r * (hi - lo);
    let (mut f1, mut f2) = (f(x1), f(x2));
    let mut steps = 0;
    while hi - lo > xtol && steps < 400 {
        steps += 1;
        if f1 <= f2 {
            hi = x2;
            x2 = x1;
            f2 = f1;
            x1 = hi - r * (hi - lo);
            f1 = f(x1);
        } else {
            lo = x1;
            x1 = x2;
            f1 = f2;
            x2 = lo + r * (hi - lo);
            f2 = f(x2);
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::proptest_config())]

        /// Polynomials of degree ≤ 15 are integrated exactly by K15 (up to rounding); the oracle
        /// is the antiderivative.
        #[test]
        fn quadrature_integrates_polynomials(c in proptest::collection::vec(-3.0f64..3.0, 1..10),
                                              a in -5.0f64..0.0, len in 0.1f64..10.0) {
            let b = a + len;
            let p = |x: f64| c.iter().rev().fold(0.0, |acc, &ci| acc * x + ci);
            let antider = |x: f64| c.iter().enumerate().map(|(i, ci)| ci * x.powi(i as i32 + 1) / (i as f64 + 1.0)).sum::<f64>();
            let want = antider(b) - antider(a);
            let got = integrate(p, a, b, 1e-10);
            prop_assert!((got - want).abs() <= 1e-9 * (1.0 + want.abs()), "{got} vs {want}");
        }

        /// Kinked integrands: ∫|x − m| over [a, b] with the kink given as a breakpoint.
        #[test]
        fn quadrature_handles_kinks_at_breakpoints(m in -2.0f64..2.0) {
            let got = integrate_pieces(|x| (x - m).abs(), -3.0, 3.0, &[m], 1e-12);
            let want = 0.5 * ((m + 3.0).powi(2) + (3.0 - m).powi(2));
            prop_assert!((got - want).abs() < 1e-10);
        }

        /// Roots of a cubic with a known root, by bisection and golden section.
        #[test]
        fn bisect_and_golden_find_known_points(r in -1.0f64..1.0) {
            let root = bisect(|x| (x - r) * (1.0 + x * x), -2.0, 2.0, 1e-13).unwrap();
            prop_assert!((root - r).abs() < 1e-12);
            let min = golden_min(|x| (x - r).powi(2), -2.0, 2.0, 1e-9);
            prop_assert!((min - r).abs() < 1e-8);
        }
    }

    #[test]
    fn quadrature_of_smooth_transcendental() {
        // ∫₀^π sin = 2, ∫₀¹ e^x = e − 1, ∫₋₈⁸ e^{−x²} = √π·erf(8) = √π to 1e-28.
        assert!((integrate(f64::sin, 0.0, std::f64::consts::PI, 1e-13) - 2.0).abs() < 1e-13);
        assert!((integrate(f64::exp, 0.0, 1.0, 1e-13) - (1f64.exp() - 1.0)).abs() < 1e-13);
        let g = integrate(|x| (-x * x).exp(), -8.0, 8.0, 1e-13);
        assert!((g - std::f64::consts::PI.sqrt()).abs() < 1e-12);
        assert!(bisect(|x| x * x + 1.0, -1.0, 1.0, 1e-9).is_none());
    }

    /// The loops are bounded: an overflowing integrand gives NaN at once (it used to bisect
    /// 2⁴⁸ times), an integrand that never meets the tolerance stops at the budget, and golden
    /// section on a bracket near 1e300 stops although its width can never fall below `xtol`.
    #[test]
    fn loops_stop_on_overflow_and_impossible_tolerances() {
        let start = std::time::Instant::now();
        assert!(integrate(|x| if x > 0.3 { f64::INFINITY } else { x }, 0.0, 1.0, 1e-12).is_nan());
        assert!(integrate(|x| x * 1e300 * 1e300, 0.0, 1.0, 1e-12).is_nan());
        // Noise of amplitude 1 can never be integrated to 1e-30: the budget ends it.
        let noisy = |x: f64| ((x * 1e6).sin() * 1e9).sin();
        assert!(integrate(noisy, 0.0, 1.0, 1e-30).is_nan());
        let m = golden_min(|x: f64| (x - 1e300).abs(), 0.5e300, 2e300, 1e-9);
        assert!((m / 1e300 - 1.0).abs() < 1e-6, "{m}");
        assert!(golden_min(|x| x, f64::NEG_INFINITY, 0.0, 1e-9).is_nan());
        // Bounded, not merely eventually: well under the seconds a user would wait.
        assert!(start.elapsed().as_secs() < 20, "{:?}", start.elapsed());
    }
}
