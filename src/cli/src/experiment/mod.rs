//! The paper's experiment at small scale (He, Huang & Yuan 2019, §4–§5), the steps of
//! `asymvalley demo`: SGD+SWA, SGD restarted from SWA (`sgd_after_swa.py`), the SWA→SGD line
//! with BatchNorm re-estimated at each point (`interpulation.py`), random-direction probes with
//! and without BatchNorm, and the theorem-optimal bias against SWA's displacement.
pub mod markdown;

use crate::data::{Digits, Split};
use crate::model::Network;
use crate::train::{evaluate, input_batches, train_epoch, Evaluation, SgdConfig};
use asymvalley::average::Averager;
use asymvalley::bn::{reestimate_batch_norm, BnWeighting};
use asymvalley::error::{Error, Result};
use asymvalley::valley::asymmetry::{analyze, Asymmetry, AsymmetryConfig};
use asymvalley::valley::directions::{Direction, DirectionKind, ParamSubset};
use asymvalley::valley::model::{LossKind, ProbeModel, TchModel};
use asymvalley::valley::profile::{profile, BnPlan, Profile, ProfileCost};
use asymvalley::valley::report::{DirectionReport, Summary};
use serde::Serialize;
use tch::{nn::VarStore, COptimizer, Tensor};

/// Train and test results of one solution.
#[derive(Serialize, Debug, Clone, Copy)]
pub struct SolutionResult {
    /// On the training set (eval mode).
    pub train: Evaluation,
    /// On the test set.
    pub test: Evaluation,
}

/// Evaluates the model on both splits.
pub fn evaluate_both<N: Network>(net: &N, data: &Digits, batch: i64) -> Result<SolutionResult> {
    Ok(SolutionResult {
        train: evaluate(net, &data.train, batch)?,
        test: evaluate(net, &data.test, batch)?,
    })
}

/// The official `bn_update` over the training data (shuffled by `seed`).
pub fn bn_update<N: Network>(net: &N, train: &Split, batch: i64, seed: u64) -> Result<()> {
    reestimate_batch_norm(
        net,
        input_batches(train, batch, Some(seed))?,
        BnWeighting::SampleWeighted,
    )?;
    Ok(())
}

/// Copies of the VarStore's trainable variables, sorted by name.
pub fn snapshot(vs: &VarStore) -> Result<Vec<Tensor>> {
    let mut vars: Vec<(String, Tensor)> = vs.trainable_variables_named();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars.iter().map(|(_, t)| Ok(t.f_detach_copy()?)).collect()
}

/// Writes a [`snapshot`] back.
pub fn restore(vs: &VarStore, saved: &[Tensor]) -> Result<()> {
    let mut vars: Vec<(String, Tensor)> = vs.trainable_variables_named();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    if vars.len() != saved.len() {
        return Err(Error::LengthMismatch {
            op: "restore",
            expected_name: "model parameters",
            expected: vars.len(),
            name: "snapshot",
            got: saved.len(),
        });
    }
    let _guard = tch::no_grad_guard();
    for ((_, t), s) in vars.iter_mut().zip(saved) {
        t.f_copy_(s)?;
    }
    Ok(())
}

trait NamedTrainable {
    fn trainable_variables_named(&self) -> Vec<(String, Tensor)>;
}

impl NamedTrainable for VarStore {
    fn trainable_variables_named(&self) -> Vec<(String, Tensor)> {
        self.variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect()
    }
}

/// One epoch of `sgd_after_swa.py`.
#[derive(Serialize, Debug, Clone, Copy)]
pub struct AfterSwaEpoch {
    /// Epoch (0-based, after SWA).
    pub epoch: usize,
    /// Running train-mode loss of the epoch (the official rule uses it).
    pub train: Evaluation,
    /// Test loss and accuracy at the epoch's end (eval mode, running statistics).
    pub test: Evaluation,
    /// Whether the official rule selects it: train loss < SWA's and test loss > SWA's.
    pub selected: bool,
}

/// Restarts SGD from the SWA weights in `vs` at the constant rate `lr` (momentum buffers of the
/// SWA run carried over, as `sgd_after_swa.py` does) until an epoch has a lower training loss
/// but a higher test loss than SWA, or `max_epochs` pass. Returns the epochs; `vs` holds the
/// last one's weights (the first selected epoch's, when one is).
#[allow(clippy::too_many_arguments)]
pub fn sgd_after_swa<N: Network>(
    net: &N,
    optimizer: &mut COptimizer,
    data: &Digits,
    sgd: &SgdConfig,
    lr: f64,
    max_epochs: usize,
    swa: &SolutionResult,
    mut on_epoch: impl FnMut(&AfterSwaEpoch),
) -> Result<Vec<AfterSwaEpoch>> {
    optimizer.set_learning_rate(lr)?;
    let mut out = Vec::new();
    for epoch in 0..max_epochs {
        let train = train_epoch(
            net,
            optimizer,
            &data.train,
            sgd,
            sgd.seed.wrapping_add(10_000 + epoch as u64),
        )?;
        let test = evaluate(net, &data.test, sgd.batch)?;
        let selected = train.loss < swa.train.loss && test.loss > swa.test.loss;
        let e = AfterSwaEpoch {
            epoch,
            train,
            test,
            selected,
        };
        on_epoch(&e);
        out.push(e);
        if selected {
            break;
        }
    }
    Ok(out)
}

/// The probe settings of the random-direction study.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeSettings {
    /// Direction law.
    pub kind: DirectionKind,
    /// Directions.
    pub count: usize,
    /// First seed (direction i: seed + i).
    pub seed: u64,
    /// Profiles on [−radius, radius].
    pub radius: f64,
    /// Points per profile.
    pub points: usize,
    /// Batch size for evaluation and BN re-estimation.
    pub batch: i64,
}

/// Probes `count` random directions around the current point of `net` (training loss, BN fully
/// re-estimated at each point when the net has BatchNorm).
pub fn probe_random<N: Network>(
    vs: &VarStore,
    net: &N,
    train: &Split,
    settings: &ProbeSettings,
    config: &AsymmetryConfig,
    mut on_point: impl FnMut(),
) -> Result<(Vec<DirectionReport>, ProfileCost)> {
    let model = TchModel::from_network(vs, net);
    let params = model.parameters()?;
    let data = train.probe_data(settings.batch)?;
    let bn = if model.has_batch_norm()? {
        BnPlan::new(
            asymvalley::valley::BnMode::Full,
            input_batches(train, settings.batch, Some(settings.seed))?,
        )?
    } else {
        BnPlan::stale()
    };
    let offsets = asymvalley::valley::grid_through(settings.points, settings.radius)?;
    let mut out = Vec::with_capacity(settings.count);
    let mut cost = ProfileCost::default();
    for i in 0..settings.count {
        let seed = settings.seed.wrapping_add(i as u64);
        let d = Direction::random(&params, settings.kind, &ParamSubset::All, seed)?;
        let (mut profs, c) = profile(
            &model,
            &d,
            &offsets,
            &[&data],
            LossKind::CrossEntropy,
            &bn,
            |_| on_point(),
        )?;
        cost.eval_forwards += c.eval_forwards;
        cost.bn_forwards += c.bn_forwards;
        let prof = profs.remove(0);
        let mut cfg = config.clone();
        cfg.seed = seed;
        let asym = analyze(&prof.offsets, &prof.loss, Some(&prof.per_example), &cfg)?;
        out.push(DirectionReport::new(i, &d, &params, asym, None, prof)?);
    }
    Ok((out, cost))
}

/// A proportion with its Wilson 95 % interval.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Proportion {
    /// Successes.
    pub k: usize,
    /// Trials.
    pub n: usize,
    /// k/n.
    pub estimate: f64,
    /// Wilson score interval (z = 1.96).
    pub ci: [f64; 2],
}

/// `k/n` with the Wilson score interval.
pub fn wilson(k: usize, n: usize) -> Proportion {
    let z = 1.959964f64;
    if n == 0 {
        return Proportion {
            k,
            n,
            estimate: 0.0,
            ci: [0.0, 1.0],
        };
    }
    let (nf, p) = (n as f64, k as f64 / n as f64);
    let denom = 1.0 + z * z / nf;
    let centre = (p + z * z / (2.0 * nf)) / denom;
    let half = z * (p * (1.0 - p) / nf + z * z / (4.0 * nf * nf)).sqrt() / denom;
    Proportion {
        k,
        n,
        estimate: p,
        ci: [(centre - half).max(0.0), (centre + half).min(1.0)],
    }
}

/// Median of `xs` with a percentile-bootstrap 95 % interval (resampling the values, seeded).
pub fn median_ci(xs: &[f64], resamples: usize, seed: u64) -> (f64, [f64; 2]) {
    use rand::{Rng, SeedableRng};
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n == 0 {
            0.0
        } else if n % 2 == 1 {
            v[n / 2]
        } else {
            0.5 * (v[n / 2 - 1] + v[n / 2])
        }
    };
    let m = median(&mut xs.to_vec());
    if xs.is_empty() {
        return (0.0, [0.0, 0.0]);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut meds: Vec<f64> = (0..resamples)
        .map(|_| {
            let mut v: Vec<f64> = (0..xs.len())
                .map(|_| xs[rng.gen_range(0..xs.len())])
                .collect();
            median(&mut v)
        })
        .collect();
    meds.sort_by(f64::total_cmp);
    let q = |p: f64| meds[((p * (meds.len() - 1) as f64).round() as usize).min(meds.len() - 1)];
    (m, [q(0.025), q(0.975)])
}

/// Summary of one random-direction study.
#[derive(Clone, Debug, Serialize)]
pub struct DirectionStudy {
    /// Which network.
    pub network: String,
    /// Settings.
    pub settings: ProbeSettings,
    /// Class counts and median |ln R|.
    pub summary: Summary,
    /// Fraction asymmetric with its Wilson interval.
    pub asymmetric: Proportion,
    /// Median |ln R| with its bootstrap interval.
    pub median_abs_log_ratio: (f64, [f64; 2]),
    /// Quartiles of |ln R| (25 %, 50 %, 75 %, max).
    pub abs_log_ratio_quartiles: [f64; 4],
    /// Fraction of asymmetric directions whose flat side is +.
    pub flat_plus: Proportion,
    /// Mean sign consistency with the weights.
    pub mean_sign_consistency: f64,
    /// Forward passes spent.
    pub cost: ProfileCost,
    /// Per direction.
    pub directions: Vec<DirectionReport>,
}

impl DirectionStudy {
    /// Summarizes the reports.
    pub fn new(
        network: &str,
        settings: ProbeSettings,
        directions: Vec<DirectionReport>,
        cost: ProfileCost,
    ) -> Self {
        let summary = Summary::of(&directions);
        let logs: Vec<f64> = directions
            .iter()
            .map(|d| d.asymmetry.log_rise_ratio.abs())
            .collect();
        let mut sorted = logs.clone();
        sorted.sort_by(f64::total_cmp);
        let q = |p: f64| {
            if sorted.is_empty() {
                0.0
            } else {
                sorted[((p * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)]
            }
        };
        let asym: Vec<&DirectionReport> = directions.iter().filter(|d| d.flat_side != 0).collect();
        let flat_plus = asym.iter().filter(|d| d.flat_side > 0).count();
        let n = directions.len().max(1) as f64;
        DirectionStudy {
            network: network.into(),
            asymmetric: wilson(summary.asymmetric, summary.directions),
            median_abs_log_ratio: median_ci(&logs, 2000, settings.seed),
            abs_log_ratio_quartiles: [q(0.25), q(0.5), q(0.75), q(1.0)],
            flat_plus: wilson(flat_plus, asym.len()),
            mean_sign_consistency: directions.iter().map(|d| d.sign_consistency).sum::<f64>() / n,
            settings,
            summary,
            cost,
            directions,
        }
    }
}

/// The SWA→SGD line with train and test profiles (BN re-estimated at each point).
#[derive(Clone, Debug, Serialize)]
pub struct LineStudy {
    /// ‖w_sgd − w_swa‖ over the parameters.
    pub distance: f64,
    /// Train profile (full re-estimation).
    pub train: Profile,
    /// Test profile (full re-estimation).
    pub test: Profile,
    /// Train profile with the cheap k-batch re-estimation.
    pub train_cheap: Profile,
    /// Test profile with the cheap k-batch re-estimation.
    pub test_cheap: Profile,
    /// k of the cheap mode.
    pub cheap_k: usize,
    /// Max |L_cheap − L_full| over the line (train, test).
    pub cheap_max_abs_diff: [f64; 2],
    /// Forward passes: full mode, cheap mode.
    pub cost: [ProfileCost; 2],
}

/// Profiles the line `w_swa + t·(w_sgd − w_swa)` on `offsets` in the full and the k-batch modes.
#[allow(clippy::too_many_arguments)]
pub fn line_study<N: Network>(
    vs: &VarStore,
    net: &N,
    data: &Digits,
    swa: &[Tensor],
    sgd: &[Tensor],
    offsets: &[f64],
    batch: i64,
    seed: u64,
    cheap_k: usize,
    mut on_point: impl FnMut(),
) -> Result<LineStudy> {
    restore(vs, swa)?;
    let model = TchModel::from_network(vs, net);
    let params = model.parameters()?;
    let d = Direction::between(&params, swa, sgd, &ParamSubset::All)?;
    let (train, test) = (data.train.probe_data(batch)?, data.test.probe_data(batch)?);
    let batches = input_batches(&data.train, batch, Some(seed))?;
    let full = BnPlan::new(
        asymvalley::valley::BnMode::Full,
        batches.iter().map(|t| t.shallow_clone()).collect(),
    )?;
    let cheap = BnPlan::new(asymvalley::valley::BnMode::Batches(cheap_k), batches)?;
    let (mut f, cf) = profile(
        &model,
        &d,
        offsets,
        &[&train, &test],
        LossKind::CrossEntropy,
        &full,
        |_| on_point(),
    )?;
    let (mut c, cc) = profile(
        &model,
        &d,
        offsets,
        &[&train, &test],
        LossKind::CrossEntropy,
        &cheap,
        |_| on_point(),
    )?;
    let diff = |a: &Profile, b: &Profile| {
        a.loss
            .iter()
            .zip(&b.loss)
            .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
    };
    let cheap_max_abs_diff = [diff(&f[0], &c[0]), diff(&f[1], &c[1])];
    let test_cheap = c.remove(1);
    let train_cheap = c.remove(0);
    let test = f.remove(1);
    let train = f.remove(0);
    Ok(LineStudy {
        distance: d.norm,
        train,
        test,
        train_cheap,
        test_cheap,
        cheap_k,
        cheap_max_abs_diff,
        cost: [cf, cc],
    })
}

/// The two-sided fit of the training profile around its minimizer on the line.
#[derive(Clone, Debug, Serialize)]
pub struct LineValley {
    /// The grid offset of the training-loss minimum (the empirical minimizer ŵ* on the line).
    pub t_min: f64,
    /// The asymmetry of the training profile re-centred at t_min (offsets t − t_min).
    pub asymmetry: Asymmetry,
}

/// Fits the training profile around its grid minimum (the fit uses the largest radius on which
/// both sides of the grid exist).
pub fn line_valley(train: &Profile, config: &AsymmetryConfig) -> Result<LineValley> {
    let (imin, _) = train
        .loss
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .ok_or_else(|| Error::invalid("profile", "empty", "a non-empty profile"))?;
    let t_min = train.offsets[imin];
    let shifted: Vec<f64> = train.offsets.iter().map(|t| t - t_min).collect();
    let asymmetry = analyze(&shifted, &train.loss, Some(&train.per_example), config)?;
    Ok(LineValley { t_min, asymmetry })
}

/// Per-chunk shifts between the training and held-out profiles on the line: the held-out
/// examples are split into `chunks` contiguous parts; for each, [`asymvalley::valley::bias::estimate_shift`]
/// against the training profile. Under the random-shift assumption (δ symmetric, mean 0) the
/// RMS of the chunk shifts estimates the shift's standard deviation.
pub fn shift_estimates(
    train: &Profile,
    test: &Profile,
    chunks: usize,
    max_shift: f64,
) -> Result<(Vec<f64>, f64)> {
    let n = test.per_example.first().map_or(0, Vec::len);
    if chunks == 0 || n < chunks {
        return Err(Error::invalid("chunks", chunks, format!("1..={n}")));
    }
    let mut shifts = Vec::with_capacity(chunks);
    for c in 0..chunks {
        let (lo, hi) = (c * n / chunks, (c + 1) * n / chunks);
        let curve: Vec<f64> = test
            .per_example
            .iter()
            .map(|row| row[lo..hi].iter().map(|&x| x as f64).sum::<f64>() / (hi - lo) as f64)
            .collect();
        shifts.push(asymvalley::valley::bias::estimate_shift(
            &train.offsets,
            &train.loss,
            &curve,
            max_shift,
        )?);
    }
    let rms = (shifts.iter().map(|s| s * s).sum::<f64>() / shifts.len() as f64).sqrt();
    Ok((shifts, rms))
}

/// Test and train results of `w̄ + β(w̄ − w_sgd)` for each β (BN re-estimated for each).
pub fn biased_solutions<N: Network>(
    vs: &VarStore,
    net: &N,
    averager: &Averager,
    sgd: &[Tensor],
    betas: &[f64],
    data: &Digits,
    batch: i64,
    seed: u64,
) -> Result<Vec<(f64, SolutionResult)>> {
    let mut out = Vec::with_capacity(betas.len());
    for &beta in betas {
        // The anchor of write_biased is the model's current weights: the SGD solution.
        restore(vs, sgd)?;
        averager.write_biased(vs, beta)?;
        bn_update(net, &data.train, batch, seed)?;
        out.push((beta, evaluate_both(net, data, batch)?));
    }
    Ok(out)
}

/// Train and test results at the point `w_swa + t·(w_sgd − w_swa)` of the line (any real `t`,
/// so also between SWA and SGD, where `w̄ + β(w̄ − w_sgd)` would need β < 0), BN re-estimated.
#[allow(clippy::too_many_arguments)]
pub fn line_point<N: Network>(
    vs: &VarStore,
    net: &N,
    swa: &[Tensor],
    sgd: &[Tensor],
    t: f64,
    data: &Digits,
    batch: i64,
    seed: u64,
) -> Result<SolutionResult> {
    if swa.len() != sgd.len() {
        return Err(Error::LengthMismatch {
            op: "line_point",
            expected_name: "SWA weights",
            expected: swa.len(),
            name: "SGD weights",
            got: sgd.len(),
        });
    }
    let point = {
        let _guard = tch::no_grad_guard();
        swa.iter()
            .zip(sgd)
            .map(|(a, b)| Ok(a.f_add(&b.f_sub(a)?.f_mul_scalar(t)?)?))
            .collect::<Result<Vec<Tensor>>>()?
    };
    restore(vs, &point)?;
    bn_update(net, &data.train, batch, seed)?;
    evaluate_both(net, data, batch)
}

/// Directions whose class, rise ratio and interval are shown in the report, most asymmetric first.
pub fn most_asymmetric(study: &DirectionStudy, n: usize) -> Vec<&DirectionReport> {
    let mut v: Vec<&DirectionReport> = study.directions.iter().collect();
    v.sort_by(|a, b| {
        b.asymmetry
            .log_rise_ratio
            .abs()
            .total_cmp(&a.asymmetry.log_rise_ratio.abs())
    });
    v.truncate(n);
    v
}

/// Convenience: the SWA solution's results with BN re-estimated (average written into `vs`).
pub fn swa_solution<N: Network>(
    vs: &VarStore,
    net: &N,
    averager: &Averager,
    data: &Digits,
    batch: i64,
    seed: u64,
) -> Result<SolutionResult> {
    averager.copy_to(vs)?;
    bn_update(net, &data.train, batch, seed)?;
    evaluate_both(net, data, batch)
}

/// Guards against a silently empty study.
pub fn require_nonempty(study: &DirectionStudy) -> Result<()> {
    if study.directions.is_empty() {
        return Err(Error::invalid("count", 0, "at least one direction"));
    }
    Ok(())
}
