//! One seed of the study: both CNNs trained with SGD + SWA, SGD restarted from the BatchNorm
//! network's SWA, and, when the restart rule fired, the line, its fitted valley, the shift, c*
//! and the biased solutions; random directions around both SWA solutions.
use super::directions::{probe_random, DirectionOutcome, ProbeSettings};
use super::gain_region::GainRegion;
use super::line::{argmin_offset, line_point, line_profiles, line_valley, swa_on_flat_side};
use super::line::{LineProfiles, LineValley};
use super::restart::{sgd_after_swa, Restart};
use super::shift::{chunk_shifts, ShiftEstimate};
use super::solution::{bn_update, evaluate_both, swa_solution, SolutionResult};
use super::weights::snapshot;
use super::StudyConfig;
use crate::data::Digits;
use crate::model::{DigitsCnn, DigitsCnnConfig};
use crate::train::{train_sgd_swa, SgdConfig, SwaSchedule};
use asymvalley::error::Result;
use asymvalley::valley::asymmetry::{analyze, AsymmetryConfig, TwoSidedFit};
use asymvalley::valley::bias::{optimal_bias, ShiftLaw, ValleyBias};
use asymvalley::valley::directions::DirectionKind;
use asymvalley::valley::profile::grid_line;
use serde::Serialize;
use tch::{nn::VarStore, Device};

/// The shift search's bound, in t units (the line's SWA→SGD distance is 1).
pub const MAX_SHIFT: f64 = 1.5;

/// One network's results for one seed.
#[derive(Clone, Debug, Serialize)]
pub struct NetworkOutcome {
    /// The last SGD iterate (its own running BN statistics).
    pub sgd: SolutionResult,
    /// The SWA average, BN re-estimated.
    pub swa: SolutionResult,
    /// U(0,1) directions around SWA.
    pub uniform: Vec<DirectionOutcome>,
    /// Gaussian directions around SWA, the control: their entries have both signs, so they are
    /// not sign-consistent with positive weights such as the BatchNorm scales.
    pub gaussian: Vec<DirectionOutcome>,
}

/// What the line study found (only when the restart rule fired).
#[derive(Clone, Debug, Serialize)]
pub struct LineOutcome {
    /// The restarted SGD solution (the selected epoch), BN re-estimated.
    pub sgd_after: SolutionResult,
    /// Train and test profiles along SWA (t = 0) → SGD (t = 1).
    pub profiles: LineProfiles,
    /// The two-sided fit around the training minimum (`None`: minimum at the grid's edge).
    pub valley: Option<LineValley>,
    /// The offset of the smallest test loss on the line.
    pub test_min_t: f64,
    /// The chunk shifts and their sign test.
    pub shift: ShiftEstimate,
    /// c* and c_max of the fitted valley under δ ~ N(0, σ̂²) (`None`: no fit or σ̂ = 0).
    pub bias: Option<ValleyBias>,
    /// β and the results of `w̄ + β(w̄ − w_sgd)` (t = −β on the line), BN re-estimated.
    pub biased: Vec<(f64, SolutionResult)>,
}

impl LineOutcome {
    /// SWA on the flat side of an asymmetric line (`None` without a fitted valley).
    pub fn swa_on_flat_side(&self) -> Option<bool> {
        self.valley
            .as_ref()
            .map(|v| swa_on_flat_side(v.t_min, v.asymmetry.flat_side))
    }

    /// SWA's displacement `−t_min` against the gain region (`None` without c*).
    pub fn gain_region(&self) -> Option<GainRegion> {
        match (&self.valley, &self.bias) {
            (Some(v), Some(b)) => Some(GainRegion::of(-v.t_min, b.c_max)),
            _ => None,
        }
    }
}

/// Everything one seed produced.
#[derive(Clone, Debug, Serialize)]
pub struct SeedOutcome {
    /// The seed.
    pub seed: u64,
    /// The CNN with BatchNorm.
    pub bn: NetworkOutcome,
    /// The same CNN without BatchNorm.
    pub plain: NetworkOutcome,
    /// SGD restarted from the BatchNorm network's SWA.
    pub restart: Restart,
    /// The line study (`None` when the restart rule did not fire).
    pub line: Option<LineOutcome>,
}

struct Trained {
    vs: VarStore,
    net: DigitsCnn,
    optimizer: tch::COptimizer,
    outcome: NetworkOutcome,
}

fn train_network(
    config: &StudyConfig,
    data: &Digits,
    seed: u64,
    batch_norm: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<Trained> {
    tch::manual_seed(seed as i64);
    let vs = VarStore::new(Device::Cpu);
    let net = DigitsCnn::new(
        &vs.root(),
        &DigitsCnnConfig {
            channels: config.channels,
            batch_norm,
            ..DigitsCnnConfig::default()
        },
    )?;
    let schedule = config.schedule();
    let sgd = config.sgd(seed);
    let name = if batch_norm { "BN" } else { "no-BN" };
    let run = train_sgd_swa(&vs, &net, &data.train, &schedule, &sgd, |e, _, r| {
        progress(&format!(
            "train {name} epoch {}/{} loss {:.3}",
            e + 1,
            schedule.epochs,
            r.loss
        ))
    })?;
    let sgd_result = evaluate_both(&net, data, config.batch)?;
    let swa = swa_solution(&vs, &net, &run.averager, data, config.batch, seed)?;
    let settings = |kind, first_seed| ProbeSettings {
        kind,
        count: config.directions,
        seed: first_seed,
        radius: config.radius,
        points: config.points,
        batch: 256,
    };
    let detector = AsymmetryConfig {
        seed,
        ..AsymmetryConfig::default()
    };
    // probe_random restores the SWA weights and buffers it started from, so the two laws probe
    // the same point; their seeds differ so that no direction is derived from another's draws.
    let uniform = probe_random(
        &vs,
        &net,
        &data.train,
        &settings(DirectionKind::Uniform, seed.wrapping_add(1000)),
        &detector,
        || {},
    )?;
    let gaussian = probe_random(
        &vs,
        &net,
        &data.train,
        &settings(DirectionKind::Gaussian, seed.wrapping_add(2000)),
        &detector,
        || {},
    )?;
    progress(&format!("probed {name} directions"));
    Ok(Trained {
        vs,
        net,
        optimizer: run.optimizer,
        outcome: NetworkOutcome {
            sgd: sgd_result,
            swa,
            uniform,
            gaussian,
        },
    })
}

/// Refits the line valley with the exponent fixed at 2 when the free fit's p ≤ 1 (c* needs a
/// differentiable model).
fn fit_for_bias(
    valley: &LineValley,
    train_offsets: &[f64],
    train_loss: &[f64],
) -> Result<Option<TwoSidedFit>> {
    match valley.asymmetry.fit {
        Some(f) if f.exponent > 1.0 => Ok(Some(f)),
        _ => {
            let shifted: Vec<f64> = train_offsets.iter().map(|t| t - valley.t_min).collect();
            let cfg = AsymmetryConfig {
                exponent: Some(2.0),
                bootstrap: 0,
                ..AsymmetryConfig::default()
            };
            Ok(analyze(&shifted, train_loss, None, &cfg)?.fit)
        }
    }
}

fn study_line(
    config: &StudyConfig,
    data: &Digits,
    seed: u64,
    bn: &Trained,
    swa_weights: &[tch::Tensor],
    progress: &mut dyn FnMut(&str),
) -> Result<LineOutcome> {
    let after_weights = snapshot(&bn.vs)?;
    bn_update(&bn.net, &data.train, config.batch, seed)?;
    let sgd_after = evaluate_both(&bn.net, data, config.batch)?;
    let offsets = grid_line(2, config.division)?;
    let profiles = line_profiles(
        &bn.vs,
        &bn.net,
        data,
        swa_weights,
        &after_weights,
        &offsets,
        256,
        seed,
        || {},
    )?;
    progress("line profiled");
    let detector = AsymmetryConfig {
        seed,
        ..AsymmetryConfig::default()
    };
    let valley = line_valley(&profiles.train, &detector)?;
    let test_min_t = argmin_offset(&profiles.test.offsets, &profiles.test.loss)?;
    let shift = chunk_shifts(&profiles.train, &profiles.test, config.chunks, MAX_SHIFT)?;
    // c* needs a valley and an uncensored shift scale.
    let bias = match (&valley, shift.usable_scale()) {
        (Some(v), Some(scale)) => fit_for_bias(v, &profiles.train.offsets, &profiles.train.loss)?
            .and_then(|fit| optimal_bias(&fit, ShiftLaw::Gaussian, scale).ok()),
        _ => None,
    };
    let mut biased = Vec::with_capacity(config.betas.len());
    for &beta in &config.betas {
        let r = line_point(
            &bn.vs,
            &bn.net,
            swa_weights,
            &after_weights,
            -beta,
            data,
            config.batch,
            seed,
        )?;
        biased.push((beta, r));
    }
    Ok(LineOutcome {
        sgd_after,
        profiles,
        valley,
        test_min_t,
        shift,
        bias,
        biased,
    })
}

/// Runs the whole pipeline for `seed`; `progress` gets one line per stage.
pub fn run_seed(
    config: &StudyConfig,
    data: &Digits,
    seed: u64,
    progress: &mut dyn FnMut(&str),
) -> Result<SeedOutcome> {
    let mut bn = train_network(config, data, seed, true, progress)?;
    let plain = train_network(config, data, seed, false, progress)?;
    let swa_weights = snapshot(&bn.vs)?;
    let swa = bn.outcome.swa;
    let restart = sgd_after_swa(
        &bn.vs,
        &bn.net,
        &mut bn.optimizer,
        data,
        &config.sgd(seed),
        config.after_lr(),
        config.after_epochs,
        &swa,
        {
            let mut done = 0;
            let progress = &mut *progress;
            move |e| {
                done += 1;
                progress(&format!(
                    "restart epoch {done}/{}: train {:.4} test {:.4}",
                    config.after_epochs, e.train.loss, e.test.loss
                ))
            }
        },
    )?;
    let line = match restart.selected {
        Some(_) => Some(study_line(config, data, seed, &bn, &swa_weights, progress)?),
        None => None,
    };
    Ok(SeedOutcome {
        seed,
        bn: bn.outcome,
        plain: plain.outcome,
        restart,
        line,
    })
}

/// The schedule and SGD settings a config implies.
impl StudyConfig {
    /// The `train2.py` schedule: lr_init, swa_lr = lr_init/2, the configured epochs.
    pub fn schedule(&self) -> SwaSchedule {
        SwaSchedule {
            lr_init: self.lr_init,
            swa_lr: self.lr_init / 2.0,
            swa_start: self.swa_start,
            epochs: self.epochs,
        }
    }

    /// SGD with momentum 0.9 and the configured weight decay and batch, batch order from `seed`.
    pub fn sgd(&self, seed: u64) -> SgdConfig {
        SgdConfig {
            momentum: 0.9,
            weight_decay: self.weight_decay,
            batch: self.batch,
            seed,
        }
    }

    /// The restart rate, lr_init/100 (official lr_set 0.001 against lr_init 0.1).
    pub fn after_lr(&self) -> f64 {
        self.lr_init / 100.0
    }
}
