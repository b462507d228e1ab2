//! d-dimensional valleys (THEOREMS.md D7) and the d-dimensional SGD simulator.
//!
//! * [`Separable`]: `f(w) = Σᵢ fᵢ(wᵢ)`. With independent noise coordinates, each coordinate is
//!   its own 1-D chain, so D4 holds coordinatewise: E[w̄ᵢ] has the sign of fᵢ's flat side.
//! * [`Rotated`]: `f(w) = h(⟨u, w⟩) + ½λ‖P⊥w‖²` with u a uniformly random unit vector (the
//!   first column of a random rotation; the complement is isotropic, so the rest of the rotation
//!   does not matter). The gradient is `h'(⟨u,w⟩)u + λP⊥w`, whose u-component is h' alone, so
//!   z = ⟨u, w⟩ follows the 1-D chain z ← z − η(h'(z) + ⟨u, ε⟩). ⟨u, ε⟩ is i.i.d. mean-0 for
//!   any i.i.d. noise, so D4 holds along u; for isotropic Gaussian ε it is N(0, σ²) exactly,
//!   the same law as the 1-D run, which the tests use as an oracle.
use crate::error::HarnessError;
use crate::sgd::{Estimate, SgdConfig};
use crate::shift::Shift;
use crate::valley::{AnyValley, Valley1d};
use rand::SeedableRng;
use serde::Serialize;

/// A valley in ℝᵈ with its minimum at 0.
pub trait ValleyNd: Send + Sync + std::fmt::Debug {
    /// d.
    fn dim(&self) -> usize;
    /// f(w).
    fn value(&self, w: &[f64]) -> f64;
    /// Writes ∇f(w) into `out` (no allocation: this runs once per SGD step).
    fn gradient(&self, w: &[f64], out: &mut [f64]);
}

/// `f(w) = Σᵢ fᵢ(wᵢ)`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Separable {
    /// One 1-D valley per coordinate.
    pub coords: Vec<AnyValley>,
}

impl ValleyNd for Separable {
    fn dim(&self) -> usize {
        self.coords.len()
    }
    fn value(&self, w: &[f64]) -> f64 {
        self.coords.iter().zip(w).map(|(f, x)| f.value(*x)).sum()
    }
    #[inline]
    fn gradient(&self, w: &[f64], out: &mut [f64]) {
        for ((o, f), x) in out.iter_mut().zip(&self.coords).zip(w) {
            *o = f.derivative(*x);
        }
    }
}

/// `f(w) = h(⟨u, w⟩) + ½λ‖w − ⟨u, w⟩u‖²` with a unit vector u.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rotated {
    /// The asymmetric profile along u.
    pub h: AnyValley,
    /// The asymmetric direction, unit norm.
    pub u: Vec<f64>,
    /// Curvature λ > 0 of the quadratic complement.
    pub lambda: f64,
}

impl Rotated {
    /// u drawn uniformly on the unit sphere of ℝᵈ (a normalised standard Gaussian vector).
    pub fn random(h: AnyValley, dim: usize, lambda: f64, seed: u64) -> Self {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let mut u: Vec<f64> = (0..dim)
            .map(|_| rand::Rng::sample(&mut rng, rand_distr::StandardNormal))
            .collect();
        let norm = u.iter().map(|x| x * x).sum::<f64>().sqrt();
        u.iter_mut().for_each(|x| *x /= norm);
        Self { h, u, lambda }
    }
    /// ⟨u, w⟩.
    #[inline]
    pub fn project(&self, w: &[f64]) -> f64 {
        self.u.iter().zip(w).map(|(a, b)| a * b).sum()
    }
}

impl ValleyNd for Rotated {
    fn dim(&self) -> usize {
        self.u.len()
    }
    fn value(&self, w: &[f64]) -> f64 {
        let z = self.project(w);
        let perp2: f64 = w
            .iter()
            .zip(&self.u)
            .map(|(x, u)| (x - z * u).powi(2))
            .sum();
        self.h.value(z) + 0.5 * self.lambda * perp2
    }
    #[inline]
    fn gradient(&self, w: &[f64], out: &mut [f64]) {
        let z = self.project(w);
        let dh = self.h.derivative(z);
        for ((o, x), u) in out.iter_mut().zip(w).zip(&self.u) {
            *o = dh * u + self.lambda * (x - z * u);
        }
    }
}

/// The result of [`simulate_nd`]: batch means of every coordinate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SgdNdReport {
    /// Per batch, the mean iterate (a d-vector).
    pub batches: Vec<Vec<f64>>,
}

impl SgdNdReport {
    /// The averaged iterate's coordinate i with its batch-means SE.
    pub fn coord(&self, i: usize) -> Estimate {
        self.along(&unit(self.batches[0].len(), i))
    }
    /// ⟨v, w̄⟩ with its batch-means SE (linear, so the batch means of w are enough).
    pub fn along(&self, v: &[f64]) -> Estimate {
        let proj: Vec<crate::sgd::BatchMeans> = self
            .batches
            .iter()
            .map(|b| crate::sgd::BatchMeans {
                x: b.iter().zip(v).map(|(x, y)| x * y).sum(),
                ..Default::default()
            })
            .collect();
        Estimate::from_batches(&proj, |b| b.x)
    }
    /// The averaged iterate w̄.
    pub fn mean(&self) -> Vec<f64> {
        let n = self.batches.len() as f64;
        let d = self.batches.first().map_or(0, Vec::len);
        (0..d)
            .map(|i| self.batches.iter().map(|b| b[i]).sum::<f64>() / n)
            .collect()
    }
}

fn unit(d: usize, i: usize) -> Vec<f64> {
    (0..d).map(|j| if i == j { 1.0 } else { 0.0 }).collect()
}

/// `w ← w − η(∇f(w) + ε)` with ε's coordinates i.i.d. from `noise`, started at 0.
///
/// # Errors
/// As [`crate::sgd::simulate`].
pub fn simulate_nd<V: ValleyNd>(
    valley: &V,
    noise: &Shift,
    cfg: &SgdConfig,
) -> Result<SgdNdReport, HarnessError> {
    cfg.validate()?;
    let d = valley.dim();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(cfg.seed);
    let mut w = vec![cfg.x0; d];
    let mut grad = vec![0.0; d];
    let mut sum = vec![0.0; d];
    let step = |w: &mut [f64], grad: &mut [f64], rng: &mut rand::rngs::SmallRng| {
        valley.gradient(w, grad);
        for (x, g) in w.iter_mut().zip(grad.iter()) {
            *x -= cfg.eta * (g + noise.sample(rng));
        }
    };
    for _ in 0..cfg.burn_in {
        step(&mut w, &mut grad, &mut rng);
    }
    let per = cfg.steps / cfg.batches as u64;
    let mut batches = Vec::with_capacity(cfg.batches);
    for b in 0..cfg.batches {
        sum.iter_mut().for_each(|s| *s = 0.0);
        for _ in 0..per {
            for (s, x) in sum.iter_mut().zip(&w) {
                *s += x;
            }
            step(&mut w, &mut grad, &mut rng);
        }
        let worst = w.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        if !worst.is_finite() {
            return Err(HarnessError::Diverged {
                step: cfg.burn_in + per * (b as u64 + 1),
                x: worst,
            });
        }
        batches.push(sum.iter().map(|s| s / per as f64).collect());
    }
    Ok(SgdNdReport { batches })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sgd::simulate;
    use crate::strategy::arb_moderate_valley;
    use crate::valley::PiecewiseQuadratic;
    use proptest::prelude::*;

    const Z: f64 = 5.0;

    /// Step size that keeps every coordinate's chain stable and well mixed: η·(largest curvature
    /// near the minimum) = 0.2, capped at 0.05 for flat valleys.
    fn eta_for(v: &AnyValley) -> f64 {
        let a = match v {
            AnyValley::Quadratic(q) => q.a_minus.max(q.a_plus),
            AnyValley::Power(p) => p.a_minus.max(p.a_plus),
            AnyValley::Smooth(s) => s.a_minus.max(s.a_plus),
        };
        (0.2 / a).min(0.05)
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        /// T7 (D7, separable): each coordinate of w̄ has the sign of its flat side with its
        /// 5-SE interval, and symmetric coordinates have 0 inside theirs. To fail, one
        /// coordinate's 1-D theorem (T2) would have to fail, or the coordinates would interact.
        #[test]
        fn separable_valley_biases_each_coordinate(vs in proptest::collection::vec((arb_moderate_valley(), 0u8..3), 2..5), seed in 0u64..1000) {
            // Role 0: flat on +; 1: mirrored (flat on −); 2: made symmetric.
            let eta0 = vs.iter().map(|(v, _)| eta_for(v)).fold(f64::INFINITY, f64::min);
            let coords: Vec<AnyValley> = vs.iter().map(|(v, role)| (crate::strategy::tuned_for_sgd(*v, eta0), role)).map(|(v, role)| match role {
                0 => v,
                1 => v.mirrored(),
                _ => AnyValley::Quadratic(PiecewiseQuadratic::new(1.0, 1.0)),
            }).collect();
            let eta = coords.iter().map(eta_for).fold(f64::INFINITY, f64::min);
            let f = Separable { coords };
            let cfg = SgdConfig { eta, steps: (1.5e4 / eta).min(1.5e6) as u64, burn_in: 5_000, batches: 40, seed, x0: 0.0 };
            let r = simulate_nd(&f, &Shift::Gaussian { sigma: 1.0 }, &cfg).unwrap();
            for (i, (_, role)) in vs.iter().enumerate() {
                let [lo, hi] = r.coord(i).ci(Z);
                match role {
                    0 => prop_assert!(lo > 0.0, "coord {} {:?}", i, r.coord(i)),
                    1 => prop_assert!(hi < 0.0, "coord {} {:?}", i, r.coord(i)),
                    _ => prop_assert!(lo < 0.0 && hi > 0.0, "coord {} {:?}", i, r.coord(i)),
                }
            }
        }

        /// T7 (D7, rotated): ⟨u, w̄⟩ > 0 with its 5-SE interval; it agrees with a 1-D run of h
        /// (same noise law, other seed) within 5 combined SE; and the component of w̄ along
        /// a unit vector orthogonal to u is 0 within 5 SE. To fail, the complement would have
        /// to leak into the u-direction (it cannot: the gradient's u-part is h' alone).
        #[test]
        fn rotated_valley_biases_along_u(h in arb_moderate_valley(), dim in 2usize..7, seed in 0u64..1000, lambda in 0.5f64..4.0) {
            let eta = eta_for(&h).min(0.2 / lambda);
            let h = crate::strategy::tuned_for_sgd(h, eta);
            let f = Rotated::random(h, dim, lambda, seed);
            let cfg = SgdConfig { eta, steps: (1.5e4 / eta).min(1.5e6) as u64, burn_in: 5_000, batches: 40, seed: seed + 1, x0: 0.0 };
            let noise = Shift::Gaussian { sigma: 1.0 };
            let r = simulate_nd(&f, &noise, &cfg).unwrap();
            let along = r.along(&f.u);
            prop_assert!(along.ci(Z)[0] > 0.0, "{:?}", along);
            let one = simulate(&h, &noise, &SgdConfig { seed: seed + 2, ..cfg }).unwrap();
            prop_assert!((along.value - one.mean.value).abs() < Z * (along.se.hypot(one.mean.se)), "{:?} vs {:?}", along, one.mean);
            // v = e_j − u_j u (normalised) is orthogonal to u.
            let j = (seed as usize) % dim;
            let mut v: Vec<f64> = f.u.iter().enumerate().map(|(i, ui)| if i == j { 1.0 } else { 0.0 } - f.u[j] * ui).collect();
            let nv = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.iter_mut().for_each(|x| *x /= nv);
            let perp = r.along(&v);
            prop_assert!(perp.value.abs() < Z * perp.se, "{:?}", perp);
        }
    }

    /// The rotated valley's gradient is the gradient (finite differences), and u is a unit vector.
    #[test]
    fn rotated_gradient_matches_finite_differences() {
        let f = Rotated::random(
            AnyValley::Quadratic(PiecewiseQuadratic::new(1.0, 10.0)),
            5,
            2.0,
            3,
        );
        assert!((f.u.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-12);
        let w = [0.3, -0.7, 0.2, 1.1, -0.4];
        let mut g = [0.0; 5];
        f.gradient(&w, &mut g);
        for i in 0..5 {
            let mut a = w;
            let mut b = w;
            a[i] += 1e-6;
            b[i] -= 1e-6;
            let fd = (f.value(&a) - f.value(&b)) / 2e-6;
            assert!((fd - g[i]).abs() < 1e-6, "{i}: {fd} vs {}", g[i]);
        }
    }
}
