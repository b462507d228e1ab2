//! Symmetric, mean-zero laws: the random shift δ between training and test loss (THEOREMS.md §0)
//! and the gradient noise ε of the SGD simulator.
//!
//! Every law here satisfies δ =ᵈ −δ. [`Shift::expect`] computes `E h(δ)` by quadrature (or a
//! finite sum for discrete laws); [`Shift::sample`] draws from it for Monte Carlo and SGD.
use crate::quadrature::integrate_pieces;
use rand::{Rng, RngCore};
use serde::Serialize;
use std::sync::Arc;

/// A user-given continuous symmetric law: sampling plus a density for quadrature.
///
/// Implementors promise `density(x) == density(−x)` and that `sample` draws from `density`;
/// [`Shift::custom`] checks the first on a grid and the unit tests check both for the example.
pub trait SymmetricLaw: Send + Sync + std::fmt::Debug {
    /// One draw.
    fn sample(&self, rng: &mut dyn RngCore) -> f64;
    /// The density at x.
    fn density(&self, x: f64) -> f64;
    /// A half-width R such that the mass outside [−R, R] (times the integrands' growth) is negligible.
    fn quadrature_range(&self) -> f64;
    /// Points where the density is not smooth (0 and support edges, say): quadrature splits there.
    fn breakpoints(&self) -> Vec<f64> {
        vec![0.0]
    }
    /// Var δ = E δ².
    fn variance(&self) -> f64;
}

/// A symmetric, mean-zero law.
#[derive(Clone, Debug)]
pub enum Shift {
    /// Uniform on [−s, s] (`half_width` = s); variance s²/3.
    Uniform {
        /// s > 0.
        half_width: f64,
    },
    /// N(0, σ²).
    Gaussian {
        /// σ > 0.
        sigma: f64,
    },
    /// Laplace with density e^{−|x|/b}/(2b); variance 2b².
    Laplace {
        /// b > 0.
        b: f64,
    },
    /// ±s with probability ½ each; variance s².
    TwoPoint {
        /// s > 0.
        s: f64,
    },
    /// A finite symmetric law: atom `(x, w)` puts mass w/2 on +x and w/2 on −x; weights sum to 1.
    Atoms(Vec<(f64, f64)>),
    /// Any user-given continuous symmetric law.
    Custom(Arc<dyn SymmetricLaw>),
}

/// The name and scale of a law, for reports.
#[derive(Clone, Debug, Serialize)]
pub struct ShiftSummary {
    /// `uniform`, `gaussian`, `laplace`, `two-point`, `atoms` or `custom`.
    pub law: &'static str,
    /// The law's usual scale (half-width, σ, b, s), or its standard deviation for the others.
    pub scale: f64,
    /// Its standard deviation.
    pub std_dev: f64,
}

impl Shift {
    /// Wraps a user-given law after checking that its density is symmetric on a grid.
    pub fn custom(law: Arc<dyn SymmetricLaw>) -> Result<Self, String> {
        let r = law.quadrature_range();
        for i in 1..=64 {
            let x = r * i as f64 / 64.0;
            let (p, q) = (law.density(x), law.density(-x));
            if (p - q).abs() > 1e-12 * (1.0 + p.abs()) {
                return Err(format!("density is not symmetric at x = {x}: {p} vs {q}"));
            }
        }
        Ok(Shift::Custom(law))
    }

    /// Var δ.
    pub fn variance(&self) -> f64 {
        match self {
            Shift::Uniform { half_width: s } => s * s / 3.0,
            Shift::Gaussian { sigma } => sigma * sigma,
            Shift::Laplace { b } => 2.0 * b * b,
            Shift::TwoPoint { s } => s * s,
            Shift::Atoms(a) => a.iter().map(|(x, w)| w * x * x).sum(),
            Shift::Custom(l) => l.variance(),
        }
    }

    /// The law's usual scale: half-width, σ, b or s; the standard deviation for the others.
    pub fn scale(&self) -> f64 {
        match self {
            Shift::Uniform { half_width } => *half_width,
            Shift::Gaussian { sigma } => *sigma,
            Shift::Laplace { b } => *b,
            Shift::TwoPoint { s } => *s,
            _ => self.variance().sqrt(),
        }
    }

    /// Name, scale and standard deviation.
    pub fn summary(&self) -> ShiftSummary {
        let law = match self {
            Shift::Uniform { .. } => "uniform",
            Shift::Gaussian { .. } => "gaussian",
            Shift::Laplace { .. } => "laplace",
            Shift::TwoPoint { .. } => "two-point",
            Shift::Atoms(_) => "atoms",
            Shift::Custom(_) => "custom",
        };
        ShiftSummary {
            law,
            scale: self.scale(),
            std_dev: self.variance().sqrt(),
        }
    }

    /// The same law scaled by `factor` (δ ↦ factor·δ).
    pub fn scaled(&self, factor: f64) -> Shift {
        match self {
            Shift::Uniform { half_width } => Shift::Uniform {
                half_width: half_width * factor,
            },
            Shift::Gaussian { sigma } => Shift::Gaussian {
                sigma: sigma * factor,
            },
            Shift::Laplace { b } => Shift::Laplace { b: b * factor },
            Shift::TwoPoint { s } => Shift::TwoPoint { s: s * factor },
            Shift::Atoms(a) => Shift::Atoms(a.iter().map(|&(x, w)| (x * factor, w)).collect()),
            Shift::Custom(l) => Shift::Custom(Arc::new(ScaledLaw {
                inner: l.clone(),
                factor,
            })),
        }
    }

    /// One draw. Cheap enough for the SGD inner loop: no allocation, one branch on the variant.
    #[inline]
    pub fn sample<R: Rng>(&self, rng: &mut R) -> f64 {
        match self {
            Shift::Uniform { half_width } => half_width * (2.0 * rng.gen::<f64>() - 1.0),
            Shift::Gaussian { sigma } => sigma * rng.sample::<f64, _>(rand_distr::StandardNormal),
            Shift::Laplace { b } => {
                // |δ| ~ Exp(1/b) with a fair random sign.
                let e: f64 = rng.sample(rand_distr::Exp1);
                if rng.gen::<bool>() {
                    b * e
                } else {
                    -b * e
                }
            }
            Shift::TwoPoint { s } => {
                if rng.gen::<bool>() {
                    *s
                } else {
                    -*s
                }
            }
            Shift::Atoms(atoms) => {
                let mut u: f64 = rng.gen();
                let sign = if rng.gen::<bool>() { 1.0 } else { -1.0 };
                for &(x, w) in atoms {
                    if u < w {
                        return sign * x;
                    }
                    u -= w;
                }
                sign * atoms.last().map_or(0.0, |a| a.0)
            }
            Shift::Custom(l) => l.sample(rng),
        }
    }

    /// `E h(δ)`, by quadrature for continuous laws (splitting at `breaks`, where h may kink)
    /// and by the finite sum for discrete ones. `tol` is the absolute quadrature tolerance.
    ///
    /// Tails: Gaussian laws are cut at ±40σ and Laplace laws at ±60b; the mass beyond is below
    /// e^{−800} and e^{−60} ≈ 10⁻²⁶, negligible against `tol` for integrands of polynomial growth.
    pub fn expect(&self, h: impl Fn(f64) -> f64, breaks: &[f64], tol: f64) -> f64 {
        match self {
            Shift::Uniform { half_width: s } => {
                integrate_pieces(|x| h(x) / (2.0 * s), -s, *s, breaks, tol)
            }
            Shift::Gaussian { sigma } => {
                let pdf = |x: f64| crate::special::normal_pdf(x / sigma) / sigma;
                let mut br = breaks.to_vec();
                // Extra breakpoints keep each piece a few σ wide, where K15 is very accurate.
                br.extend((-8..=8).map(|i| i as f64 * sigma));
                integrate_pieces(|x| h(x) * pdf(x), -40.0 * sigma, 40.0 * sigma, &br, tol)
            }
            Shift::Laplace { b } => {
                let mut br = breaks.to_vec();
                br.extend((-12..=12).map(|i| i as f64 * b));
                let pdf = |x: f64| (-x.abs() / b).exp() / (2.0 * b);
                integrate_pieces(|x| h(x) * pdf(x), -60.0 * b, 60.0 * b, &br, tol)
            }
            Shift::TwoPoint { s } => 0.5 * (h(*s) + h(-s)),
            Shift::Atoms(atoms) => atoms.iter().map(|&(x, w)| 0.5 * w * (h(x) + h(-x))).sum(),
            Shift::Custom(l) => {
                let r = l.quadrature_range();
                let mut br = breaks.to_vec();
                br.extend(l.breakpoints());
                integrate_pieces(|x| h(x) * l.density(x), -r, r, &br, tol)
            }
        }
    }

    /// `E[(δ)⁺] = ½E|δ|`, the constant in D1's `g'(0) = (a₊ − a₋)E[δ⁺]`.
    pub fn mean_positive_part(&self) -> f64 {
        self.expect(|x| x.max(0.0), &[0.0], 1e-13)
    }

    /// True when the law is not the point mass at 0 (the bias theorem needs this).
    pub fn is_non_degenerate(&self) -> bool {
        self.variance() > 0.0
    }
}

/// `factor·δ` for a custom law.
#[derive(Debug)]
struct ScaledLaw {
    inner: Arc<dyn SymmetricLaw>,
    factor: f64,
}

impl SymmetricLaw for ScaledLaw {
    fn sample(&self, rng: &mut dyn RngCore) -> f64 {
        self.factor * self.inner.sample(rng)
    }
    fn density(&self, x: f64) -> f64 {
        self.inner.density(x / self.factor) / self.factor.abs()
    }
    fn quadrature_range(&self) -> f64 {
        self.inner.quadrature_range() * self.factor.abs()
    }
    fn breakpoints(&self) -> Vec<f64> {
        self.inner
            .breakpoints()
            .into_iter()
            .map(|x| x * self.factor)
            .collect()
    }
    fn variance(&self) -> f64 {
        self.factor * self.factor * self.inner.variance()
    }
}

/// The triangular law on [−w, w] (the mean of two independent U[−w, w] draws, scaled by 2/2),
/// density (w − |x|)/w²: a worked example of a user-given law, used in tests and the CLI table.
#[derive(Clone, Copy, Debug)]
pub struct Triangular {
    /// Half-width w > 0.
    pub w: f64,
}

impl SymmetricLaw for Triangular {
    fn sample(&self, rng: &mut dyn RngCore) -> f64 {
        // The sum of two U[−w/2, w/2] has exactly this density.
        let u = rng.gen::<f64>() + rng.gen::<f64>() - 1.0;
        u * self.w
    }
    fn density(&self, x: f64) -> f64 {
        ((self.w - x.abs()) / (self.w * self.w)).max(0.0)
    }
    fn quadrature_range(&self) -> f64 {
        self.w
    }
    fn breakpoints(&self) -> Vec<f64> {
        vec![-self.w, 0.0, self.w]
    }
    fn variance(&self) -> f64 {
        self.w * self.w / 6.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::arb_shift;
    use proptest::prelude::*;
    use rand::SeedableRng;

    proptest! {
        #![proptest_config(crate::proptest_config())]

        /// Quadrature gives total mass 1, mean 0 and the closed-form variance; Monte Carlo
        /// (2·10⁵ draws) agrees on mean, variance and E δ⁺ within 6 standard errors. Failing
        /// would take a wrong density, a wrong sampler or a biased sign.
        #[test]
        fn law_is_symmetric_normalised_and_sampled_right(law in arb_shift(), seed in 0u64..1000) {
            let mass = law.expect(|_| 1.0, &[], 1e-12);
            prop_assert!((mass - 1.0).abs() < 1e-9, "mass {}", mass);
            let mean = law.expect(|x| x, &[], 1e-12);
            prop_assert!(mean.abs() < 1e-9 * (1.0 + law.scale()));
            let var = law.expect(|x| x * x, &[], 1e-12);
            prop_assert!((var - law.variance()).abs() < 1e-8 * (1.0 + var));
            let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
            let n = 200_000;
            let (mut s1, mut s2, mut sp, mut sp2) = (0.0, 0.0, 0.0, 0.0);
            for _ in 0..n {
                let d = law.sample(&mut rng);
                s1 += d; s2 += d * d; sp += d.max(0.0); sp2 += d.max(0.0).powi(2);
            }
            let nf = n as f64;
            let sd = law.variance().sqrt();
            prop_assert!((s1 / nf).abs() < 6.0 * sd / nf.sqrt());
            let m4 = law.expect(|x| x.powi(4), &[], 1e-10);
            let var_se = ((m4 - var * var) / nf).sqrt();
            prop_assert!((s2 / nf - var).abs() < 6.0 * var_se + 1e-9 * var);
            let ep = law.mean_positive_part();
            let ep_se = ((sp2 / nf - (sp / nf).powi(2)) / nf).sqrt();
            prop_assert!((sp / nf - ep).abs() < 6.0 * ep_se + 1e-12);
        }
    }

    /// Closed forms of E δ⁺ = ½E|δ|: s/4 (uniform), σ/√(2π) (Gaussian), b/2 (Laplace), s/2.
    #[test]
    fn mean_positive_part_closed_forms() {
        let cases = [
            (Shift::Uniform { half_width: 2.0 }, 0.5),
            (
                Shift::Gaussian { sigma: 1.5 },
                1.5 * crate::special::INV_SQRT_2PI,
            ),
            (Shift::Laplace { b: 0.7 }, 0.35),
            (Shift::TwoPoint { s: 3.0 }, 1.5),
            (Shift::Custom(Arc::new(Triangular { w: 3.0 })), 0.5),
        ];
        for (law, want) in cases {
            assert!((law.mean_positive_part() - want).abs() < 1e-11, "{law:?}");
        }
        assert!(Shift::custom(Arc::new(Triangular { w: 1.0 })).is_ok());
    }
}
