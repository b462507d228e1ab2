//! One-dimensional asymmetric valleys: the minimum is at 0 and, by convention, the flat side is +.
//!
//! Three families, each written with its coefficient on the + side (`a_plus`) and on the − side
//! (`a_minus`). The constructors take `(a_flat, a_sharp)` and put the flat coefficient on +;
//! [`Valley1d::mirrored`] swaps the sides, and equal coefficients give a symmetric valley.
//!
//! | family | f(x) for x ≥ 0 | f(x) for x < 0 | smooth at 0 |
//! |---|---|---|---|
//! | [`PiecewiseQuadratic`] | ½a₊x² | ½a₋x² | C¹ (f'' jumps) |
//! | [`AsymPower`] | a₊xᵖ/p | a₋\|x\|ᵖ/p | C¹ for p > 1 |
//! | [`SmoothBlend`] | ½x²(a₊σ(kx) + a₋σ(−kx)) on all of ℝ | | C^∞ |
//!
//! All three satisfy the hypothesis of the first-order lemma D1 when a₊ < a₋:
//! `0 ≤ f'(x) < −f'(−x)` for every x > 0 (proved per family in `harness/THEOREMS.md`, tested below).
use serde::Serialize;

/// A one-dimensional loss with its minimum at 0 (f(0) = 0, f'(0) = 0).
pub trait Valley1d: Send + Sync + std::fmt::Debug {
    /// The loss f(x).
    fn value(&self, x: f64) -> f64;
    /// The derivative f'(x).
    fn derivative(&self, x: f64) -> f64;
    /// The same valley reflected, `x ↦ f(−x)`: the flat side moves to −.
    fn mirrored(&self) -> Self
    where
        Self: Sized;
    /// Points where f'' is discontinuous; quadrature splits its integrals there.
    fn kinks(&self) -> &'static [f64] {
        &[0.0]
    }
    /// True when the + side is no steeper than the − side: `f'(x) ≤ −f'(−x)` for x > 0.
    fn flat_side_is_plus(&self) -> bool;
}

/// `f(x) = ½a₊x²` for x ≥ 0 and `½a₋x²` for x < 0: the canonical toy of THEOREMS.md.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PiecewiseQuadratic {
    /// Curvature on the + side.
    pub a_plus: f64,
    /// Curvature on the − side.
    pub a_minus: f64,
}

impl PiecewiseQuadratic {
    /// The valley with its flat side (curvature `a_flat`) on + and its sharp side on −.
    pub fn new(a_flat: f64, a_sharp: f64) -> Self {
        Self {
            a_plus: a_flat,
            a_minus: a_sharp,
        }
    }
    /// The curvature on the side of x.
    #[inline]
    pub fn curvature(&self, x: f64) -> f64 {
        if x >= 0.0 {
            self.a_plus
        } else {
            self.a_minus
        }
    }
}

impl Valley1d for PiecewiseQuadratic {
    #[inline]
    fn value(&self, x: f64) -> f64 {
        0.5 * self.curvature(x) * x * x
    }
    #[inline]
    fn derivative(&self, x: f64) -> f64 {
        self.curvature(x) * x
    }
    fn mirrored(&self) -> Self {
        Self {
            a_plus: self.a_minus,
            a_minus: self.a_plus,
        }
    }
    fn flat_side_is_plus(&self) -> bool {
        self.a_plus <= self.a_minus
    }
}

/// `f(x) = a₊xᵖ/p` for x ≥ 0 and `a₋|x|ᵖ/p` for x < 0, with p > 1.
///
/// The `1/p` makes `f'(x) = a·sign(x)|x|^{p−1}`, so p = 2 is [`PiecewiseQuadratic`] exactly.
/// p > 1 keeps f' continuous, which the SGD identity D4 and `g' = E f'` need.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct AsymPower {
    /// Coefficient on the + side.
    pub a_plus: f64,
    /// Coefficient on the − side.
    pub a_minus: f64,
    /// Exponent p > 1.
    pub p: f64,
}

impl AsymPower {
    /// The valley with its flat side (coefficient `a_flat`) on +.
    pub fn new(a_flat: f64, a_sharp: f64, p: f64) -> Self {
        Self {
            a_plus: a_flat,
            a_minus: a_sharp,
            p,
        }
    }
}

impl Valley1d for AsymPower {
    #[inline]
    fn value(&self, x: f64) -> f64 {
        let a = if x >= 0.0 { self.a_plus } else { self.a_minus };
        a * x.abs().powf(self.p) / self.p
    }
    #[inline]
    fn derivative(&self, x: f64) -> f64 {
        let a = if x >= 0.0 { self.a_plus } else { self.a_minus };
        a * x.signum() * x.abs().powf(self.p - 1.0)
    }
    fn mirrored(&self) -> Self {
        Self {
            a_plus: self.a_minus,
            a_minus: self.a_plus,
            p: self.p,
        }
    }
    fn flat_side_is_plus(&self) -> bool {
        self.a_plus <= self.a_minus
    }
}

/// `f(x) = ½x²·(a₊σ(kx) + a₋σ(−kx))` with the logistic σ: a C^∞ valley with no kink at 0.
///
/// The curvature blends from a₋ (x ≪ −1/k) through (a₊+a₋)/2 at 0 to a₊ (x ≫ 1/k); as
/// k → ∞ it tends to [`PiecewiseQuadratic`]. f > 0 off 0 because the blended coefficient lies
/// in (min a, max a). It is not convex when a₋/a₊ is large (f'' dips below 0 near |x| ≈ 2/k),
/// which is why `c*` and `c_max` are found by scanning, not by assuming a convex g.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SmoothBlend {
    /// Curvature far on the + side.
    pub a_plus: f64,
    /// Curvature far on the − side.
    pub a_minus: f64,
    /// Sharpness of the blend, k > 0 (width of the transition ≈ 1/k).
    pub k: f64,
}

impl SmoothBlend {
    /// The valley with its flat side (far curvature `a_flat`) on +.
    pub fn new(a_flat: f64, a_sharp: f64, k: f64) -> Self {
        Self {
            a_plus: a_flat,
            a_minus: a_sharp,
            k,
        }
    }
}

impl SmoothBlend {
    /// The ratio a_sharp/a_flat above which the blend has a second local minimum (≈ 48.4707),
    /// whatever k (x ↦ kx only rescales f by 1/k²).
    ///
    /// Derivation, with a₊ = 1 (flat on +), r = a₋ and u = kx, s = σ(u), 1 − s = σ(−u):
    /// f ∝ h(u) = ½u²(s + r(1 − s)), and for u ≠ 0, h'(u) = 0 reads
    /// `s + r(1 − s) + ½u(1 − r)s(1 − s) = 0`, i.e.
    /// `r(u) = −eᵘ (1 + ½u(1 − s)) / (1 − ½us)`.
    /// Stationary points besides 0 exist exactly for the r that r(u) reaches; r(u) > 0 only for
    /// u > 0 with us > 2 (u > 2.21…), where it falls from +∞ to a minimum and then grows like eᵘ.
    /// That minimum is where a local maximum and a second local minimum are born together
    /// (a fold): below it 0 is the only stationary point. Computed by golden section.
    pub fn critical_ratio() -> f64 {
        let r = |u: f64| {
            let s = sigmoid(u);
            -u.exp() * (1.0 + 0.5 * u * (1.0 - s)) / (1.0 - 0.5 * u * s)
        };
        r(crate::quadrature::golden_min(r, 2.5, 8.0, 1e-12))
    }

    /// a_sharp/a_flat of this valley (≥ 1).
    pub fn ratio(&self) -> f64 {
        self.a_plus.max(self.a_minus) / self.a_plus.min(self.a_minus)
    }
}

/// The logistic function, written to avoid overflow of e^{−z} for very negative z.
#[inline]
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

impl Valley1d for SmoothBlend {
    #[inline]
    fn value(&self, x: f64) -> f64 {
        let s = sigmoid(self.k * x);
        0.5 * x * x * (self.a_plus * s + self.a_minus * (1.0 - s))
    }
    #[inline]
    fn derivative(&self, x: f64) -> f64 {
        // f' = x·a(x) + ½x²·a'(x) with a(x) = a₋ + (a₊ − a₋)σ(kx), a' = (a₊ − a₋)kσ(kx)σ(−kx).
        let s = sigmoid(self.k * x);
        let a = self.a_minus + (self.a_plus - self.a_minus) * s;
        let da = (self.a_plus - self.a_minus) * self.k * s * (1.0 - s);
        x * a + 0.5 * x * x * da
    }
    fn mirrored(&self) -> Self {
        Self {
            a_plus: self.a_minus,
            a_minus: self.a_plus,
            k: self.k,
        }
    }
    fn kinks(&self) -> &'static [f64] {
        &[]
    }
    fn flat_side_is_plus(&self) -> bool {
        self.a_plus <= self.a_minus
    }
}

/// Any of the three families, for code (the CLI, separable sums) that picks one at run time.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "family", rename_all = "kebab-case")]
pub enum AnyValley {
    /// [`PiecewiseQuadratic`].
    Quadratic(PiecewiseQuadratic),
    /// [`AsymPower`].
    Power(AsymPower),
    /// [`SmoothBlend`].
    Smooth(SmoothBlend),
}

impl Valley1d for AnyValley {
    #[inline]
    fn value(&self, x: f64) -> f64 {
        match self {
            AnyValley::Quadratic(v) => v.value(x),
            AnyValley::Power(v) => v.value(x),
            AnyValley::Smooth(v) => v.value(x),
        }
    }
    #[inline]
    fn derivative(&self, x: f64) -> f64 {
        match self {
            AnyValley::Quadratic(v) => v.derivative(x),
            AnyValley::Power(v) => v.derivative(x),
            AnyValley::Smooth(v) => v.derivative(x),
        }
    }
    fn mirrored(&self) -> Self {
        match self {
            AnyValley::Quadratic(v) => AnyValley::Quadratic(v.mirrored()),
            AnyValley::Power(v) => AnyValley::Power(v.mirrored()),
            AnyValley::Smooth(v) => AnyValley::Smooth(v.mirrored()),
        }
    }
    fn kinks(&self) -> &'static [f64] {
        match self {
            AnyValley::Smooth(v) => v.kinks(),
            _ => &[0.0],
        }
    }
    fn flat_side_is_plus(&self) -> bool {
        match self {
            AnyValley::Quadratic(v) => v.flat_side_is_plus(),
            AnyValley::Power(v) => v.flat_side_is_plus(),
            AnyValley::Smooth(v) => v.flat_side_is_plus(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::{arb_asym_valley, arb_valley};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::proptest_config())]

        /// The minimum is at 0, the derivative is the derivative (central difference oracle),
        /// and mirroring is the reflection x ↦ f(−x) (oracle: evaluate at −x).
        #[test]
        fn valley_minimum_derivative_and_mirror(v in arb_valley(), x in -5.0f64..5.0) {
            prop_assert_eq!(v.value(0.0), 0.0);
            prop_assert_eq!(v.derivative(0.0), 0.0);
            if x != 0.0 { prop_assert!(v.value(x) > 0.0); }
            let h = 1e-5 * (1.0 + x.abs());
            if x.abs() > 2.0 * h || matches!(v, AnyValley::Smooth(_)) {
                let fd = (v.value(x + h) - v.value(x - h)) / (2.0 * h);
                prop_assert!((fd - v.derivative(x)).abs() <= 1e-5 * (1.0 + v.derivative(x).abs()), "fd {} vs {}", fd, v.derivative(x));
            }
            let m = v.mirrored();
            prop_assert!((m.value(x) - v.value(-x)).abs() <= 1e-12 * (1.0 + v.value(x)));
            prop_assert!((m.derivative(x) + v.derivative(-x)).abs() <= 1e-12 * (1.0 + v.derivative(x).abs()));
            prop_assert_eq!(m.mirrored(), v);
        }

        /// D1's hypothesis: with the flat side on + and a₊ < a₋, 0 < f'(x) < −f'(−x) for x > 0.
        #[test]
        fn asymmetric_valley_satisfies_d1_hypothesis(v in arb_asym_valley(), x in 1e-3f64..10.0) {
            prop_assert!(v.flat_side_is_plus());
            prop_assert!(v.derivative(x) > 0.0);
            prop_assert!(v.derivative(x) < -v.derivative(-x));
            prop_assert!(v.value(x) < v.value(-x));
            prop_assert!(!v.mirrored().flat_side_is_plus());
        }
    }

    /// Equal coefficients give a symmetric valley for every family.
    #[test]
    fn equal_coefficients_are_symmetric() {
        let vs = [
            AnyValley::Quadratic(PiecewiseQuadratic::new(3.0, 3.0)),
            AnyValley::Power(AsymPower::new(2.0, 2.0, 1.7)),
            AnyValley::Smooth(SmoothBlend::new(1.5, 1.5, 4.0)),
        ];
        for v in vs {
            for i in 1..100 {
                let x = i as f64 * 0.07;
                assert!((v.value(x) - v.value(-x)).abs() < 1e-12, "{v:?}");
                assert!((v.derivative(x) + v.derivative(-x)).abs() < 1e-12);
            }
        }
        // p = 2 power is the piecewise quadratic.
        let (p, q) = (
            AsymPower::new(1.0, 10.0, 2.0),
            PiecewiseQuadratic::new(1.0, 10.0),
        );
        for i in -50..50 {
            let x = i as f64 * 0.1;
            assert!((p.value(x) - q.value(x)).abs() < 1e-12);
        }
    }
}
