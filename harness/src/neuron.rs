//! The official 2-parameter toy: one sigmoid neuron trained by full-batch GD, averaged, and
//! probed along a random positive direction (THEOREMS.md §5, `logistic_regression_2params.py`).
//!
//! Built with tch and following the official script's order of random draws: seed; 10 points
//! x ~ N(+1, 1) with label 0, then 10 points x ~ N(−1, 1) with label 1; `Linear(1, 1)`'s weight
//! and bias each ~ U(−1, 1) (PyTorch's default init for fan-in 1); a second, discarded
//! `Linear(1, 1)` (the script's `net_swa`, overwritten by the first average); 30 GD steps with
//! lr 0.01 on the mean BCE, averaging the 30 post-step iterates; the probe direction
//! `rand(2)/‖rand(2)‖` (all entries positive); 31 points `t = d·0.5`, d = −15..15, around the
//! average. Whether the draws equal PyTorch 1.2's for the same seed depends on libtorch's
//! sampling algorithms, which have changed since; the tests therefore check structure and
//! arithmetic against independent f64 computations, not the slide's figure.
use serde::Serialize;
use std::sync::Mutex;
use tch::{Device, Kind, Reduction, Tensor};

/// libtorch's CPU generator is global: one toy at a time, so seeds give reproducible draws.
static GENERATOR: Mutex<()> = Mutex::new(());

/// Settings; `Default` is the official script's.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct NeuronToyConfig {
    /// `torch.manual_seed` value (the script loops over 0..50; 2 and 3 were showcased).
    pub seed: i64,
    /// Points per class (10).
    pub per_class: i64,
    /// GD steps (30).
    pub steps: usize,
    /// Learning rate (0.01).
    pub lr: f64,
    /// The probe visits d·`probe_scale` for d = −`probe_half`..=`probe_half` (15, 0.5).
    pub probe_half: i64,
    /// Spacing of the probe (0.5).
    pub probe_scale: f64,
}

impl Default for NeuronToyConfig {
    fn default() -> Self {
        Self {
            seed: 2,
            per_class: 10,
            steps: 30,
            lr: 0.01,
            probe_half: 15,
            probe_scale: 0.5,
        }
    }
}

/// Everything the run produced.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NeuronToyReport {
    /// Inputs (20), class 0 first.
    pub x: Vec<f64>,
    /// Labels (20).
    pub y: Vec<f64>,
    /// (weight, bias) before training.
    pub init: [f64; 2],
    /// (weight, bias) after each GD step.
    pub iterates: Vec<[f64; 2]>,
    /// The running average of the iterates, as the script computes it (float32 `moving_average`).
    pub average: [f64; 2],
    /// The unit probe direction (entries > 0).
    pub direction: [f64; 2],
    /// Probe positions t.
    pub t: Vec<f64>,
    /// Mean BCE at `average + t·direction`.
    pub loss: Vec<f64>,
}

impl NeuronToyReport {
    /// `(L(t_max) − L(0)) / (L(t_min) − L(0))`: how much faster the loss rises on the + side
    /// (a non-paper summary; the slide's curve gives about (5.2 − 0.6)/(1.2 − 0.6) ≈ 8).
    pub fn rise_ratio(&self) -> f64 {
        let mid = self.loss.len() / 2;
        let (l0, lm, lp) = (self.loss[mid], self.loss[0], self.loss[self.loss.len() - 1]);
        (lp - l0) / (lm - l0)
    }
}

fn pair(t: &Tensor) -> Result<[f64; 2], tch::TchError> {
    let v = Vec::<f32>::try_from(&t.f_flatten(0, -1)?)?;
    Ok([v[0] as f64, v[1] as f64])
}

fn bce(x: &Tensor, y: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor, tch::TchError> {
    let p = x.f_matmul(&w.f_tr()?)?.f_add(b)?.f_sigmoid()?;
    p.f_binary_cross_entropy::<Tensor>(y, None, Reduction::Mean)
}

/// Runs the toy.
///
/// # Errors
/// Any libtorch error, as [`tch::TchError`].
pub fn run(cfg: &NeuronToyConfig) -> Result<NeuronToyReport, tch::TchError> {
    let _guard = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    let opts = (Kind::Float, Device::Cpu);
    tch::manual_seed(cfg.seed);
    let n = cfg.per_class;
    // torch.normal(±ones(n, 1), 1) draws N(0, 1) then adds the mean.
    let x0 = Tensor::f_zeros([n, 1], opts)?
        .f_normal_(0.0, 1.0)?
        .f_add_scalar(1.0)?;
    let x1 = Tensor::f_zeros([n, 1], opts)?
        .f_normal_(0.0, 1.0)?
        .f_add_scalar(-1.0)?;
    let x = Tensor::f_cat(&[x0, x1], 0)?;
    let y = Tensor::f_cat(
        &[
            Tensor::f_zeros([n, 1], opts)?,
            Tensor::f_ones([n, 1], opts)?,
        ],
        0,
    )?;
    let mut w = Tensor::f_zeros([1, 1], opts)?.f_uniform_(-1.0, 1.0)?;
    let mut b = Tensor::f_zeros([1], opts)?.f_uniform_(-1.0, 1.0)?;
    // The script's net_swa: two more draws, then overwritten by the first average.
    let _ = Tensor::f_zeros([1, 1], opts)?.f_uniform_(-1.0, 1.0)?;
    let _ = Tensor::f_zeros([1], opts)?.f_uniform_(-1.0, 1.0)?;
    let init = [w.f_double_value(&[0, 0])?, b.f_double_value(&[0])?];
    let mut avg = Tensor::f_zeros([2], opts)?;
    let mut iterates = Vec::with_capacity(cfg.steps);
    for step in 0..cfg.steps {
        let wg = w.f_detach()?.f_set_requires_grad(true)?;
        let bg = b.f_detach()?.f_set_requires_grad(true)?;
        let loss = bce(&x, &y, &wg, &bg)?;
        let grads = Tensor::f_run_backward(&[&loss], &[&wg, &bg], false, false)?;
        w = w.f_sub(&grads[0].f_mul_scalar(cfg.lr)?)?;
        b = b.f_sub(&grads[1].f_mul_scalar(cfg.lr)?)?;
        let theta = Tensor::f_cat(&[w.f_flatten(0, -1)?, b.shallow_clone()], 0)?;
        // moving_average(net_swa, net, 1/(n+1)): avg ← avg(1 − α) + θα, in float32 as in PyTorch.
        let alpha = 1.0 / (step as f64 + 1.0);
        avg = avg
            .f_mul_scalar(1.0 - alpha)?
            .f_add(&theta.f_mul_scalar(alpha)?)?;
        iterates.push(pair(&theta)?);
    }
    let r = Tensor::f_rand([2], opts)?;
    let dir = r.f_div(&r.f_norm()?)?;
    // The probe runs in float64: in float32, σ(wx + b) rounds to exactly 1 once wx + b ≳ 17, and
    // BCE's log clamp (−100) then adds 5 per saturated point, an artefact of the script's dtype
    // (it only appears at the far ends of some seeds' probes).
    let (x, y) = (x.f_to_kind(Kind::Double)?, y.f_to_kind(Kind::Double)?);
    let (avg64, dir64) = (avg.f_to_kind(Kind::Double)?, dir.f_to_kind(Kind::Double)?);
    let mut t = Vec::new();
    let mut losses = Vec::new();
    for d in -cfg.probe_half..=cfg.probe_half {
        let p = avg64.f_add(&dir64.f_mul_scalar(d as f64 * cfg.probe_scale)?)?;
        let wp = p.f_slice(0, 0, 1, 1)?.f_reshape([1, 1])?;
        let bp = p.f_slice(0, 1, 2, 1)?;
        t.push(d as f64 * cfg.probe_scale);
        losses.push(bce(&x, &y, &wp, &bp)?.f_double_value(&[])?);
    }
    let to_vec = |t: &Tensor| -> Result<Vec<f64>, tch::TchError> {
        Ok(Vec::<f32>::try_from(&t.f_flatten(0, -1)?)?
            .into_iter()
            .map(f64::from)
            .collect())
    };
    Ok(NeuronToyReport {
        x: to_vec(&x)?,
        y: to_vec(&y)?,
        init,
        iterates,
        average: pair(&avg)?,
        direction: pair(&dir)?,
        t,
        loss: losses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mean BCE in f64, written out: the oracle for the tch computation.
    fn bce64(x: &[f64], y: &[f64], w: f64, b: f64) -> f64 {
        let n = x.len() as f64;
        x.iter()
            .zip(y)
            .map(|(xi, yi)| {
                let p = 1.0 / (1.0 + (-(w * xi + b)).exp());
                -(yi * p.ln() + (1.0 - yi) * (1.0 - p).ln())
            })
            .sum::<f64>()
            / n
    }

    /// Structure (2 params, 20 points, 31 probe points on [−7.5, 7.5], positive unit
    /// direction), every GD step equal to the f64 gradient step, the average equal to the f64
    /// arithmetic mean of the 30 iterates (the script's running average is that mean), and
    /// every probe loss equal to the f64 BCE, for seeds 0..50 as the script loops.
    #[test]
    fn neuron_toy_matches_f64_recomputation() {
        for seed in 0..50 {
            let r = run(&NeuronToyConfig {
                seed,
                ..Default::default()
            })
            .unwrap();
            assert_eq!((r.x.len(), r.iterates.len(), r.t.len()), (20, 30, 31));
            assert!(r.y[..10].iter().all(|&v| v == 0.0) && r.y[10..].iter().all(|&v| v == 1.0));
            assert!(
                (r.t[0] + 7.5).abs() < 1e-12 && (r.t[30] - 7.5).abs() < 1e-12 && r.t[15] == 0.0
            );
            assert!(r.direction.iter().all(|&d| d > 0.0));
            assert!((r.direction[0].hypot(r.direction[1]) - 1.0).abs() < 1e-6);
            let mut prev = r.init;
            for it in &r.iterates {
                let (w, b) = (prev[0], prev[1]);
                let n = r.x.len() as f64;
                let (mut gw, mut gb) = (0.0, 0.0);
                for (xi, yi) in r.x.iter().zip(&r.y) {
                    let e = 1.0 / (1.0 + (-(w * xi + b)).exp()) - yi;
                    gw += e * xi / n;
                    gb += e / n;
                }
                assert!(
                    (it[0] - (w - 0.01 * gw)).abs() < 1e-5
                        && (it[1] - (b - 0.01 * gb)).abs() < 1e-5
                );
                prev = *it;
            }
            for j in 0..2 {
                let mean = r.iterates.iter().map(|it| it[j]).sum::<f64>() / 30.0;
                assert!((r.average[j] - mean).abs() < 1e-5, "seed {seed}");
            }
            for (t, l) in r.t.iter().zip(&r.loss) {
                let (w, b) = (
                    r.average[0] + t * r.direction[0],
                    r.average[1] + t * r.direction[1],
                );
                assert!(
                    (l - bce64(&r.x, &r.y, w, b)).abs() < 1e-4 * (1.0 + l),
                    "seed {seed} t {t}"
                );
            }
            // BCE of a linear model is convex in the parameters, so along any line.
            for k in 1..30 {
                assert!(
                    r.loss[k - 1] + r.loss[k + 1] - 2.0 * r.loss[k] > -1e-4,
                    "seed {seed}"
                );
            }
        }
    }

    /// THEOREMS.md §8 claim 15 / slide p.11: for seed 2 (one of the two seeds the script's comment
    /// marks) the curve is ≈0.6 at t = 0 with its minimum ≈0.57 near t ≈ −1, ≈1.2 at −7.5 and
    /// ≈5.2 at +7.5, a rise ratio of about 8. The slide values were read off a figure (±0.05),
    /// so that is the tolerance. That libtorch 2.11 reproduces PyTorch 1.2's draws for this
    /// seed is itself checked here: a different draw order would miss by far more.
    #[test]
    fn neuron_toy_seed2_reproduces_the_slide() {
        let r = run(&NeuronToyConfig {
            seed: 2,
            ..Default::default()
        })
        .unwrap();
        let (i_min, l_min) =
            r.loss.iter().enumerate().fold(
                (0, f64::INFINITY),
                |a, (i, &l)| if l < a.1 { (i, l) } else { a },
            );
        assert!((r.loss[15] - 0.6).abs() < 0.05, "{:?}", r.loss);
        assert!((l_min - 0.57).abs() < 0.05 && (r.t[i_min] + 1.0).abs() <= 1.0);
        assert!((r.loss[0] - 1.2).abs() < 0.05 && (r.loss[30] - 5.2).abs() < 0.05);
        assert!((r.rise_ratio() - 8.0).abs() < 1.0);
    }

    /// Same seed, same run: the generator is reseeded and guarded.
    #[test]
    fn neuron_toy_is_deterministic() {
        let a = run(&NeuronToyConfig::default()).unwrap();
        let b = run(&NeuronToyConfig::default()).unwrap();
        assert_eq!(a, b);
    }
}
