//! The averaging theorems (harness/THEOREMS.md T2, T5, T7) through the project's own SWA:
//! SGD in tch, with autograd gradients of the valley plus Gaussian gradient noise, averaged by
//! `asymvalley::average::Averager` (SWA after a burn-in set by `update_after_step`), not by a
//! hand loop.
//!
//! Each variable holds `CHAINS` independent SGD chains (one element each), so the chains'
//! time-averages are i.i.d. and their spread gives an honest standard error without batch
//! means. Noise comes from a seeded SmallRng (libtorch's generator is global and shared by
//! concurrently running tests, so it would not be reproducible here).
use asymvalley::average::{Averager, AveragerConfig};
use harness::multidim::Rotated;
use harness::sgd::{simulate, SgdConfig};
use harness::shift::Shift;
use harness::valley::{AnyValley, AsymPower, PiecewiseQuadratic, SmoothBlend, Valley1d};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use tch::{nn, Device, Kind, Tensor};

const CHAINS: i64 = 2048;
const BURN_IN: u64 = 400;
const STEPS: u64 = 3000;
const ETA: f64 = 0.05;
/// Every assertion allows 5 standard errors.
const Z: f64 = 5.0;

/// f(w) elementwise, in tch, for autograd.
fn valley_loss(v: &AnyValley, w: &Tensor) -> Tensor {
    // 1 on the + side (x ≥ 0), 0 on the − side.
    let pos = w.ge(0.0).to_kind(Kind::Float);
    let side = |ap: f64, am: f64| &pos * ap + (pos.ones_like() - &pos) * am;
    match v {
        AnyValley::Quadratic(q) => (side(q.a_plus, q.a_minus) * w * w * 0.5).sum(Kind::Float),
        AnyValley::Power(p) => {
            (side(p.a_plus, p.a_minus) * w.abs().pow_tensor_scalar(p.p) / p.p).sum(Kind::Float)
        }
        AnyValley::Smooth(s) => {
            let sig = (w * s.k).sigmoid();
            (w * w * 0.5 * (sig.shallow_clone() * s.a_plus + (sig * -1.0 + 1.0) * s.a_minus))
                .sum(Kind::Float)
        }
    }
}

fn noise(rng: &mut rand::rngs::SmallRng, shape: &[i64]) -> Tensor {
    let n: i64 = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
    Tensor::from_slice(&v).reshape(shape)
}

/// Runs SGD on `loss(w)` for `w` of `shape` from 0, with the project's SWA; returns the averaged
/// variable (as f64 values, row-major).
fn sgd_through_averager(shape: &[i64], seed: u64, loss: impl Fn(&Tensor) -> Tensor) -> Vec<f64> {
    let vs = nn::VarStore::new(Device::Cpu);
    let w = vs.root().var("w", shape, nn::Init::Const(0.0));
    let config = AveragerConfig {
        update_after_step: BURN_IN,
        ..AveragerConfig::swa()
    };
    let mut avg = Averager::new(&vs, config).unwrap();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    for _ in 0..BURN_IN + STEPS {
        let l = loss(&w);
        let g = Tensor::run_backward(&[&l], &[&w], false, false)
            .pop()
            .unwrap();
        let step = (g + noise(&mut rng, shape)) * ETA;
        tch::no_grad(|| {
            let mut w = w.shallow_clone();
            let _ = w.f_sub_(&step).unwrap();
        });
        avg.update(&vs).unwrap();
    }
    assert_eq!(avg.n_averaged(), STEPS);
    let a = avg
        .averaged("w")
        .unwrap()
        .to_kind(Kind::Double)
        .flatten(0, -1);
    Vec::<f64>::try_from(&a).unwrap()
}

/// Mean and standard error over i.i.d. values.
fn mean_se(x: impl Iterator<Item = f64>) -> (f64, f64) {
    let v: Vec<f64> = x.collect();
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, (var / n).sqrt())
}

/// The reference: the harness's f64 simulator, long run, same η and noise.
fn reference_mean(v: &AnyValley) -> (f64, f64) {
    let cfg = SgdConfig {
        eta: ETA,
        steps: 4_000_000,
        burn_in: 10_000,
        x0: 0.0,
        batches: 50,
        seed: 3,
    };
    let r = simulate(v, &Shift::Gaussian { sigma: 1.0 }, &cfg).unwrap();
    (r.mean.value, r.mean.se)
}

/// T2 through SWA, 1-D, all three families and their mirrors: the mean over chains of the SWA
/// average is on the flat side by more than 5 SE, and agrees with the harness's f64 simulator
/// of the same chain within 5 combined SE plus 2 % (float32 arithmetic, and the finite window's
/// start-up bias of O(1/(η·a₊·STEPS)) ≈ 0.7 %). To fail, the averager would have to weight the
/// iterates unequally or drop some.
#[test]
fn swa_average_lands_on_the_flat_side_1d() {
    let valleys = [
        AnyValley::Quadratic(PiecewiseQuadratic::new(1.0, 10.0)),
        AnyValley::Power(AsymPower::new(1.0, 10.0, 3.0)),
        AnyValley::Smooth(SmoothBlend::new(1.0, 10.0, 8.0)),
    ];
    for (i, v) in valleys.iter().enumerate() {
        let (want, want_se) = reference_mean(v);
        for (sign, valley) in [(1.0, *v), (-1.0, v.mirrored())] {
            let avg = sgd_through_averager(&[CHAINS], 10 + i as u64, |w| valley_loss(&valley, w));
            let (m, se) = mean_se(avg.into_iter());
            assert!(sign * m - Z * se > 0.0, "{valley:?}: {m} ± {se}");
            assert!(
                (m - sign * want).abs() < Z * se.hypot(want_se) + 0.02 * want,
                "{valley:?}: {m} ± {se} vs {want}"
            );
        }
    }
}

/// T5 through SWA: equal curvatures give an average of 0 within 5 SE.
#[test]
fn swa_average_of_a_symmetric_valley_is_unbiased() {
    let v = AnyValley::Quadratic(PiecewiseQuadratic::new(3.0, 3.0));
    let avg = sgd_through_averager(&[CHAINS], 21, |w| valley_loss(&v, w));
    let (m, se) = mean_se(avg.into_iter());
    assert!(m.abs() < Z * se, "{m} ± {se}");
}

/// T7(a) through SWA: a separable 3-d valley (flat +, flat −, symmetric) gives coordinate
/// averages with the flat side's sign (0 for the symmetric one), each beyond 5 SE.
#[test]
fn swa_average_separable_coordinates() {
    let a_plus = Tensor::from_slice(&[1.0f32, 10.0, 3.0]);
    let a_minus = Tensor::from_slice(&[10.0f32, 1.0, 3.0]);
    let avg = sgd_through_averager(&[CHAINS, 3], 31, |w| {
        let pos = w.ge(0.0).to_kind(Kind::Float);
        let a = &pos * &a_plus + (pos.ones_like() - &pos) * &a_minus;
        (a * w * w * 0.5).sum(Kind::Float)
    });
    for (j, sign) in [1.0, -1.0, 0.0].into_iter().enumerate() {
        let (m, se) = mean_se(avg.iter().skip(j).step_by(3).copied());
        if sign == 0.0 {
            assert!(m.abs() < Z * se, "coord {j}: {m} ± {se}");
        } else {
            assert!(sign * m - Z * se > 0.0, "coord {j}: {m} ± {se}");
        }
    }
}

/// T7(b) through SWA: f(w) = h(⟨u,w⟩) + ½λ‖P⊥w‖² in d = 5 with a random u. ⟨u, w̄⟩ is positive
/// beyond 5 SE and equals the 1-D f64 reference of h within 5 combined SE + 2 %; the component
/// along a unit vector orthogonal to u is 0 within 5 SE.
#[test]
fn swa_average_rotated_valley_along_u() {
    let h = AnyValley::Quadratic(PiecewiseQuadratic::new(1.0, 10.0));
    let d = 5usize;
    let rot = Rotated::random(h, d, 2.0, 17);
    let u = Tensor::from_slice(&rot.u.iter().map(|&x| x as f32).collect::<Vec<_>>())
        .reshape([d as i64, 1]);
    let avg = sgd_through_averager(&[CHAINS, d as i64], 41, |w| {
        let z = w.matmul(&u); // [CHAINS, 1]
        let perp = w - z.matmul(&u.tr());
        valley_loss(&h, &z) + (&perp * &perp).sum(Kind::Float) * (0.5 * rot.lambda)
    });
    let rows: Vec<&[f64]> = avg.chunks(d).collect();
    let (m, se) = mean_se(rows.iter().map(|r| rot.project(r)));
    let (want, want_se) = reference_mean(&h);
    assert!(m - Z * se > 0.0, "{m} ± {se}");
    assert!(
        (m - want).abs() < Z * se.hypot(want_se) + 0.02 * want,
        "{m} ± {se} vs {want}"
    );
    // v = e₀ − u₀u, normalised, is orthogonal to u.
    let mut v: Vec<f64> = rot
        .u
        .iter()
        .enumerate()
        .map(|(i, ui)| if i == 0 { 1.0 } else { 0.0 } - rot.u[0] * ui)
        .collect();
    let nv = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.iter_mut().for_each(|x| *x /= nv);
    let (p, pse) = mean_se(
        rows.iter()
            .map(|r| r.iter().zip(&v).map(|(a, b)| a * b).sum::<f64>()),
    );
    assert!(p.abs() < Z * pse, "perpendicular {p} ± {pse}");
}
