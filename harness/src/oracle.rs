//! Closed forms for the expected shifted loss: the independent oracles of the quadrature.
//!
//! All for [`PiecewiseQuadratic`] unless named otherwise. Each formula is derived for c ≥ 0
//! and extended to c < 0 by the reflection `g_{a₊,a₋}(c) = g_{a₋,a₊}(−c)` (the law is symmetric).
//!
//! | law | source | g(c), 0 ≤ c |
//! |---|---|---|
//! | U[−s, s] | D2 | [a₋(s−c)³ + a₊(s+c)³]/(12s) for c ≤ s; a₊(c²/2 + s²/6) for c ≥ s |
//! | N(0, σ²) | D3 | ½a₊(c²+σ²) + ½(a₋−a₊)[(c²+σ²)Φ(−c/σ) − cσφ(c/σ)] |
//! | Laplace(b) | THEOREMS.md T6 (ours) | ½a₊(c²+2b²) + ½(a₋−a₊)b²e^{−c/b} |
//! | ±s | T6 (ours) | ½[f(c+s) + f(c−s)] |
//! | U[−s, s], power p | T6 (ours) | [F(c+s) − F(c−s)]/(2s), F' = f |
use crate::bias::BiasReport;
use crate::quadrature::bisect;
use crate::special::{normal_cdf, normal_pdf};
use crate::valley::{AsymPower, PiecewiseQuadratic, Valley1d};

/// Reflects a c ≥ 0 formula to all c.
fn reflect(q: &PiecewiseQuadratic, c: f64, half: impl Fn(f64, f64, f64) -> f64) -> f64 {
    if c >= 0.0 {
        half(q.a_plus, q.a_minus, c)
    } else {
        half(q.a_minus, q.a_plus, -c)
    }
}

/// D2: g(c) under δ ~ U[−s, s].
pub fn g_uniform(q: &PiecewiseQuadratic, s: f64, c: f64) -> f64 {
    reflect(q, c, |ap, am, c| {
        if c <= s {
            (am * (s - c).powi(3) + ap * (s + c).powi(3)) / (12.0 * s)
        } else {
            ap * (c * c / 2.0 + s * s / 6.0)
        }
    })
}

/// D2: c*, c_max and the values, with a₊ < a₋ or mirrored (k = a₋/a₊).
///
/// c* = s(√a₋ − √a₊)/(√a₋ + √a₊); c_max/s is the smaller root of (k−1)r² − 3(k+1)r + 3(k−1) = 0
/// when k ≤ 7 and √((k−1)/6) when k ≥ 7.
pub fn uniform(q: &PiecewiseQuadratic, s: f64) -> BiasReport {
    let (ap, am) = (q.a_plus, q.a_minus);
    let c_star = s * (am.sqrt() - ap.sqrt()) / (am.sqrt() + ap.sqrt());
    let k = am.max(ap) / am.min(ap);
    let r = if k == 1.0 {
        0.0
    } else if k <= 7.0 {
        (3.0 * (k + 1.0) - (9.0 * (k + 1.0).powi(2) - 12.0 * (k - 1.0).powi(2)).sqrt())
            / (2.0 * (k - 1.0))
    } else {
        ((k - 1.0) / 6.0).sqrt()
    };
    let c_max = s * r * if ap <= am { 1.0 } else { -1.0 };
    BiasReport {
        g0: g_uniform(q, s, 0.0),
        dg0: (ap - am) * s / 4.0,
        c_star,
        g_c_star: g_uniform(q, s, c_star),
        c_max,
    }
}

/// D3: g(c) under δ ~ N(0, σ²) (valid for every real c).
pub fn g_gaussian(q: &PiecewiseQuadratic, sigma: f64, c: f64) -> f64 {
    let (ap, am) = (q.a_plus, q.a_minus);
    let v = c * c + sigma * sigma;
    0.5 * ap * v
        + 0.5 * (am - ap) * (v * normal_cdf(-c / sigma) - c * sigma * normal_pdf(c / sigma))
}

/// D3: g'(c) = a₊c + (a₋ − a₊)[cΦ(−c/σ) − σφ(c/σ)].
pub fn dg_gaussian(q: &PiecewiseQuadratic, sigma: f64, c: f64) -> f64 {
    let (ap, am) = (q.a_plus, q.a_minus);
    ap * c + (am - ap) * (c * normal_cdf(-c / sigma) - sigma * normal_pdf(c / sigma))
}

/// Root-finds c* (g' = 0) and c_max (g = g(0)) from closed-form g and g' on a bracket that
/// is provably wide enough: g ≥ ½min(a)c² bounds c_max, and c* < c_max.
fn roots(g: impl Fn(f64) -> f64, dg: impl Fn(f64) -> f64, min_a: f64, dir: f64) -> (f64, f64) {
    let g0 = g(0.0);
    let hi = (2.0 * g0 / min_a).sqrt() * 1.01 + 1e-9;
    let c_max = bisect(|t| g(dir * t) - g0, hi * 1e-9, hi, 1e-14).unwrap_or(0.0);
    let c_star = bisect(|t| dir * dg(dir * t), 0.0, c_max, 1e-14).unwrap_or(0.0);
    (dir * c_star, dir * c_max)
}

fn report(
    g: impl Fn(f64) -> f64 + Copy,
    dg: impl Fn(f64) -> f64,
    q: &PiecewiseQuadratic,
) -> BiasReport {
    let dg0 = dg(0.0);
    let dir = if q.a_plus < q.a_minus { 1.0 } else { -1.0 };
    let (c_star, c_max) = if q.a_plus == q.a_minus {
        (0.0, 0.0)
    } else {
        roots(g, dg, q.a_plus.min(q.a_minus), dir)
    };
    BiasReport {
        g0: g(0.0),
        dg0,
        c_star,
        g_c_star: g(c_star),
        c_max,
    }
}

/// D3: g'(0) = −(a₋−a₊)σφ(0) exactly; c* and c_max by bisection on the closed forms.
pub fn gaussian(q: &PiecewiseQuadratic, sigma: f64) -> BiasReport {
    report(|c| g_gaussian(q, sigma, c), |c| dg_gaussian(q, sigma, c), q)
}

/// Laplace(b): g(c) = ½a₊(c²+2b²) + ½(a₋−a₊)b²e^{−c/b} for c ≥ 0 (ours, THEOREMS.md T6).
pub fn g_laplace(q: &PiecewiseQuadratic, b: f64, c: f64) -> f64 {
    reflect(q, c, |ap, am, c| {
        0.5 * ap * (c * c + 2.0 * b * b) + 0.5 * (am - ap) * b * b * (-c / b).exp()
    })
}

/// Laplace(b): c* = b·W((k−1)/2) with Lambert's W (k = a₋/a₊), g'(0) = −(a₋−a₊)b/2.
pub fn laplace(q: &PiecewiseQuadratic, b: f64) -> BiasReport {
    let (ap, am) = (q.a_plus.min(q.a_minus), q.a_plus.max(q.a_minus));
    let dir = if q.a_plus <= q.a_minus { 1.0 } else { -1.0 };
    let dg = |c: f64| {
        reflect(q, c, |ap, am, c| {
            ap * c - 0.5 * (am - ap) * b * (-c / b).exp()
        }) * if c >= 0.0 { 1.0 } else { -1.0 }
    };
    let mut r = report(|c| g_laplace(q, b, c), dg, q);
    r.c_star = dir * b * lambert_w0((am / ap - 1.0) / 2.0);
    r.g_c_star = g_laplace(q, b, r.c_star);
    r
}

/// Lambert's W₀(x) for x ≥ 0 (w e^w = x) by Halley's iteration from log1p(x).
pub fn lambert_w0(x: f64) -> f64 {
    let mut w = x.ln_1p();
    for _ in 0..100 {
        let ew = w.exp();
        let f = w * ew - x;
        let step = f / (ew * (w + 1.0) - (w + 2.0) * f / (2.0 * w + 2.0));
        w -= step;
        if step.abs() < 1e-15 * (1.0 + w.abs()) {
            break;
        }
    }
    w
}

/// Symmetric two-point δ = ±s: c* = s(a₋−a₊)/(a₋+a₊), g(c*) = s²a₊a₋/(a₊+a₋),
/// c_max = 2c* when k ≤ 3 and s√((k−1)/2) when k ≥ 3 (ours, THEOREMS.md T6).
pub fn two_point(q: &PiecewiseQuadratic, s: f64) -> BiasReport {
    let (ap, am) = (q.a_plus, q.a_minus);
    let c_star = s * (am - ap) / (am + ap);
    let k = am.max(ap) / am.min(ap);
    let mag = if k <= 3.0 {
        2.0 * c_star.abs()
    } else {
        s * ((k - 1.0) / 2.0).sqrt()
    };
    BiasReport {
        g0: 0.25 * (ap + am) * s * s,
        dg0: 0.5 * (ap - am) * s,
        c_star,
        g_c_star: s * s * ap * am / (ap + am),
        c_max: mag * c_star.signum(),
    }
}

/// Power valley under U[−s, s]: g(c) = [F(c+s) − F(c−s)]/(2s) with F(x) = a·sign(x)|x|^{p+1}/(p(p+1)).
pub fn g_power_uniform(v: &AsymPower, s: f64, c: f64) -> f64 {
    let big_f = |x: f64| {
        let a = if x >= 0.0 { v.a_plus } else { v.a_minus };
        a * x.signum() * x.abs().powf(v.p + 1.0) / (v.p * (v.p + 1.0))
    };
    (big_f(c + s) - big_f(c - s)) / (2.0 * s)
}

/// Power valley under U[−s, s]: g'(c) = [f(c+s) − f(c−s)]/(2s) vanishes where
/// a₊(s+c)ᵖ = a₋(s−c)ᵖ, so c* = s(k^{1/p} − 1)/(k^{1/p} + 1); c_max by bisection.
pub fn power_uniform(v: &AsymPower, s: f64) -> BiasReport {
    let k = v.a_minus / v.a_plus;
    let r = k.powf(1.0 / v.p);
    let c_star = s * (r - 1.0) / (r + 1.0);
    let g = |c: f64| g_power_uniform(v, s, c);
    let g0 = g(0.0);
    let dir = c_star.signum();
    // g(c) ≥ min(a)(c−s)ᵖ/p for c ≥ s bounds the bracket.
    let hi = s + (g0 * v.p / v.a_plus.min(v.a_minus)).powf(1.0 / v.p) + 1e-9;
    let c_max = if dir == 0.0 {
        0.0
    } else {
        dir * bisect(|t| g(dir * t) - g0, 1e-12 * s, hi, 1e-14).unwrap_or(0.0)
    };
    BiasReport {
        g0,
        dg0: (v.value(s) - v.value(-s)) / (2.0 * s),
        c_star,
        g_c_star: g(c_star),
        c_max,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bias::{analyze, g};
    use crate::shift::Shift;
    use proptest::prelude::*;

    fn close(a: &BiasReport, b: &BiasReport, tol: f64) -> bool {
        let c = |x: f64, y: f64| (x - y).abs() <= tol * (1.0 + x.abs());
        c(a.g0, b.g0)
            && c(a.dg0, b.dg0)
            && c(a.c_star, b.c_star)
            && c(a.g_c_star, b.g_c_star)
            && c(a.c_max, b.c_max)
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        /// Every closed form equals quadrature (two independent routes) for both orientations.
        #[test]
        fn closed_forms_match_quadrature(ap in 0.1f64..5.0, k in 1.05f64..40.0, s in 0.1f64..5.0,
                                          p in 1.2f64..4.0, mirror in any::<bool>(), c in -3.0f64..3.0) {
            let mut q = PiecewiseQuadratic::new(ap, ap * k);
            let mut pw = AsymPower::new(ap, ap * k, p);
            if mirror { q = q.mirrored(); pw = pw.mirrored(); }
            let cases: [(Shift, BiasReport); 4] = [
                (Shift::Uniform { half_width: s }, uniform(&q, s)),
                (Shift::Gaussian { sigma: s }, gaussian(&q, s)),
                (Shift::Laplace { b: s }, laplace(&q, s)),
                (Shift::TwoPoint { s }, two_point(&q, s)),
            ];
            for (law, want) in &cases {
                let got = analyze(&q, law);
                prop_assert!(close(&got, want, 1e-7), "{:?}\nquadrature {:?}\nclosed     {:?}", law, got, want);
            }
            let cs = c * s;
            let tol = 1e-9 * (1.0 + ap * k * s * s);
            prop_assert!((g_uniform(&q, s, cs) - g(&q, &cases[0].0, cs)).abs() < tol);
            prop_assert!((g_gaussian(&q, s, cs) - g(&q, &cases[1].0, cs)).abs() < tol);
            prop_assert!((g_laplace(&q, s, cs) - g(&q, &cases[2].0, cs)).abs() < tol);
            let law = Shift::Uniform { half_width: s };
            prop_assert!(close(&analyze(&pw, &law), &power_uniform(&pw, s), 1e-7));
            prop_assert!((g_power_uniform(&pw, s, cs) - g(&pw, &law, cs)).abs() < 1e-9 * (1.0 + g(&pw, &law, cs)));
        }
    }

    #[test]
    fn lambert_w_inverts_w_exp_w() {
        for i in 0..200 {
            let x = i as f64 * 0.37;
            let w = lambert_w0(x);
            assert!((w * w.exp() - x).abs() < 1e-12 * (1.0 + x));
        }
    }
}
