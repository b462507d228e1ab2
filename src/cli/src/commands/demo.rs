//! `asymvalley demo`: the paper's experiment at small scale on the embedded digits data.
//!
//! 1. Train a BatchNorm MLP with SGD on the official `train2.py` schedule scaled down (225 → 60
//!    epochs, SWA from epoch 34 ≈ 126·60/225), average the end-of-epoch weights with SWA,
//!    re-estimate BatchNorm (official `bn_update`), compare SGD with SWA. The same for the same
//!    MLP without BatchNorm.
//! 2. Restart SGD from SWA at a small constant rate until an epoch has lower train but higher
//!    test loss than SWA (`sgd_after_swa.py`).
//! 3. Train and test loss along SWA→SGD, t ∈ [−2, 3], BatchNorm re-estimated at every point
//!    (`interpulation.py`), fully and on k batches.
//! 4. Random U(0,1) directions around SWA, with and without BatchNorm (and Gaussian as a control).
//! 5. The theorem-optimal bias c* of the fitted line valley vs SWA's displacement; the explicitly
//!    biased `w̄ + β(w̄ − w_sgd)` on test data.
//!
//! Writes `report/report.md`, SVG figures, `report/report.json` and `report/summary.json`.
use crate::data::Digits;
use crate::experiment::markdown::{write_report, DemoReport};
use crate::experiment::{
    biased_solutions, bn_update, evaluate_both, line_point, line_study, line_valley, probe_random,
    restore, sgd_after_swa, shift_estimates, snapshot, swa_solution, DirectionStudy, ProbeSettings,
};
use crate::model::{DigitsNet, DigitsNetConfig};
use crate::train::{train_sgd_swa, SgdConfig, SwaSchedule};
use asymvalley::average::Averager;
use asymvalley::error::{Error, Result};
use asymvalley::valley::asymmetry::AsymmetryConfig;
use asymvalley::valley::bias::{optimal_bias, ShiftLaw};
use asymvalley::valley::directions::DirectionKind;
use asymvalley::valley::profile::grid_line;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;
use tch::{nn::VarStore, Device};

pub use crate::experiment::SolutionResult;

/// Arguments of `asymvalley demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Where the report goes.
    #[arg(long, default_value = "report")]
    pub out: PathBuf,
    /// Seed of the initialization and the batch order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Training epochs.
    #[arg(long, default_value_t = 60)]
    pub epochs: usize,
    /// The epoch from whose end SWA averages.
    #[arg(long, default_value_t = 34)]
    pub swa_start: usize,
    /// Initial learning rate of the BatchNorm network. The official ratios are kept
    /// (swa_lr = lr_init/2, restart rate = lr_init/100); the absolute rate is raised from 0.1 to
    /// 1.0 because at 0.1 this BN-MLP's SWA phase is so quiet that SWA already sits at the
    /// bottom of the training valley: SGD restarted from it never lowers its running train loss
    /// below SWA's (eval-mode) train loss, so `sgd_after_swa.py`'s rule never fires (seeds 0–4,
    /// rates 0.1–0.8, batches 64–256, weight decay 3e-4–3e-2 tried; see report.md §2). The
    /// hidden layers are scale-invariant under BN, so the absolute rate only sets their effective
    /// step size lr/‖w‖².
    #[arg(long, default_value_t = 1.0)]
    pub lr_init: f64,
    /// Constant learning rate during SWA (official: lr_init/2).
    #[arg(long, default_value_t = 0.5)]
    pub swa_lr: f64,
    /// Initial learning rate of the network without BatchNorm (diverges at 0.5 and above; its
    /// SWA rate is plain_lr_init·swa_lr/lr_init, the same ratio).
    #[arg(long, default_value_t = 0.1)]
    pub plain_lr_init: f64,
    /// Weight decay (official 3e-4 for CIFAR; 3e-3 keeps this tiny problem's train loss off 0).
    #[arg(long, default_value_t = 3e-3)]
    pub weight_decay: f64,
    /// Mini-batch size.
    #[arg(long, default_value_t = 64)]
    pub batch: i64,
    /// Constant learning rate of SGD restarted from SWA (official: lr_set = 0.001 = lr_init/100).
    #[arg(long, default_value_t = 0.01)]
    pub after_lr: f64,
    /// At most this many epochs of SGD after SWA (official: 50).
    #[arg(long, default_value_t = 50)]
    pub after_epochs: usize,
    /// Grid points per unit of t on the SWA→SGD line (official: 40).
    #[arg(long, default_value_t = 10)]
    pub division: usize,
    /// Random directions per network.
    #[arg(long, default_value_t = 20)]
    pub directions: usize,
    /// Random-direction profiles span [−radius, radius] (unit-norm directions).
    #[arg(long, default_value_t = 8.0)]
    pub radius: f64,
    /// Points per random-direction profile.
    #[arg(long, default_value_t = 17)]
    pub points: usize,
    /// Hidden widths of the MLP (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "128,64")]
    pub hidden: Vec<i64>,
    /// Batches of the cheap BatchNorm re-estimation.
    #[arg(long, default_value_t = 4)]
    pub cheap_k: usize,
}

#[derive(Serialize)]
struct Summary<'a> {
    dataset: &'static str,
    network: &'a DigitsNetConfig,
    schedule: &'a SwaSchedule,
    sgd: &'a SgdConfig,
    swa_snapshots: u64,
    sgd_result: SolutionResult,
    swa_result: SolutionResult,
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {elapsed} {wide_msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what.to_string());
    bar
}

struct Trained {
    vs: VarStore,
    net: DigitsNet,
    config: DigitsNetConfig,
    averager: Averager,
    optimizer: tch::COptimizer,
    sgd: SolutionResult,
    swa: SolutionResult,
    sgd_weights: Vec<tch::Tensor>,
}

fn train(
    args: &DemoArgs,
    data: &Digits,
    batch_norm: bool,
    schedule: &SwaSchedule,
    sgd: &SgdConfig,
) -> Result<Trained> {
    tch::manual_seed(args.seed as i64);
    let vs = VarStore::new(Device::Cpu);
    let config = DigitsNetConfig {
        batch_norm,
        hidden: args.hidden.clone(),
        ..DigitsNetConfig::default()
    };
    let net = DigitsNet::new(&vs.root(), &config)?;
    let bar = progress(
        args.epochs as u64,
        if batch_norm { "train BN" } else { "train" },
    );
    let run = train_sgd_swa(&vs, &net, &data.train, schedule, sgd, |_, lr, res| {
        bar.set_message(format!("lr {lr:.4} loss {:.4}", res.loss));
        bar.inc(1);
    })?;
    bar.finish();
    let sgd_res = evaluate_both(&net, data, args.batch)?;
    let sgd_weights = snapshot(&vs)?;
    let swa = swa_solution(&vs, &net, &run.averager, data, args.batch, args.seed)?;
    Ok(Trained {
        vs,
        net,
        config,
        averager: run.averager,
        optimizer: run.optimizer,
        sgd: sgd_res,
        swa,
        sgd_weights,
    })
}

/// Runs `asymvalley demo`.
pub fn run(args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    args.validate()?;
    let staging = staging_dir(&args.out)?;
    // Everything is written into the staging folder; only a finished report replaces --out.
    if let Err(e) = run_into(&args, &staging).and_then(|()| publish(&staging, &args.out)) {
        // Best effort: a failure to remove the staging folder must not hide the real error.
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    println!(
        "report: {} ({:.1} s)",
        args.out.join("report.md").display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn invalid(field: &'static str, value: impl std::fmt::Display, expected: &str) -> Error {
    Error::InvalidConfig {
        field,
        value: value.to_string(),
        expected: expected.to_string(),
    }
}

impl DemoArgs {
    /// Refuses every argument the run could not use, before any training or any file is written.
    pub fn validate(&self) -> Result<()> {
        let positive = |field: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(invalid(field, v, "a finite number > 0"))
            }
        };
        positive("--lr-init", self.lr_init)?;
        positive("--swa-lr", self.swa_lr)?;
        positive("--plain-lr-init", self.plain_lr_init)?;
        positive("--after-lr", self.after_lr)?;
        positive("--radius", self.radius)?;
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(invalid(
                "--weight-decay",
                self.weight_decay,
                "a finite number >= 0",
            ));
        }
        let at_least = |field: &'static str, v: usize, min: usize| {
            if v >= min {
                Ok(())
            } else {
                Err(invalid(field, v, &format!("an integer >= {min}")))
            }
        };
        at_least("--epochs", self.epochs, 1)?;
        at_least("--after-epochs", self.after_epochs, 1)?;
        at_least("--division", self.division, 1)?;
        at_least("--directions", self.directions, 1)?;
        // A profile needs both ends and a centre to show an asymmetry.
        at_least("--points", self.points, 3)?;
        at_least("--cheap-k", self.cheap_k, 1)?;
        if self.swa_start >= self.epochs {
            return Err(invalid(
                "--swa-start",
                self.swa_start,
                &format!("an epoch < --epochs = {}", self.epochs),
            ));
        }
        if self.batch < 1 {
            return Err(invalid("--batch", self.batch, "an integer >= 1"));
        }
        if self.hidden.is_empty() || self.hidden.iter().any(|&h| h < 1) {
            return Err(invalid(
                "--hidden",
                format!("{:?}", self.hidden),
                "one or more widths >= 1",
            ));
        }
        // --out: a new path, or a folder holding an earlier report (which a finished run replaces).
        if self.out.exists() && !self.out.join("report.md").is_file() {
            let empty = std::fs::read_dir(&self.out)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if !empty {
                return Err(invalid(
                    "--out",
                    self.out.display(),
                    "a new path, an empty folder, or a folder holding an earlier report.md",
                ));
            }
        }
        Ok(())
    }
}

/// Creates the staging folder next to `out` (same file system, so the final rename is atomic);
/// this is also the check that --out's parent is writable, done before any work.
fn staging_dir(out: &std::path::Path) -> Result<PathBuf> {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".to_string());
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let staging = parent.join(format!(".{name}.staging-{}", std::process::id()));
    std::fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    Ok(staging)
}

/// Replaces `out` (absent, empty, or an earlier report, as `validate` checked) by the staging folder.
fn publish(staging: &std::path::Path, out: &std::path::Path) -> Result<()> {
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(|e| Error::io(out, e))?;
    }
    std::fs::rename(staging, out).map_err(|e| Error::io(out, e))
}

/// The run itself, writing into `dir` (the staging folder; the report names `args.out`).
fn run_into(args: &DemoArgs, dir: &std::path::Path) -> Result<()> {
    let data = Digits::load(Device::Cpu)?;
    let schedule = SwaSchedule {
        lr_init: args.lr_init,
        swa_lr: args.swa_lr,
        swa_start: args.swa_start,
        epochs: args.epochs,
    };
    // The network without BatchNorm: the same schedule shape at its own (stable) rate.
    let plain_schedule = SwaSchedule {
        lr_init: args.plain_lr_init,
        swa_lr: args.swa_lr * args.plain_lr_init / args.lr_init,
        ..schedule
    };
    let sgd = SgdConfig {
        momentum: 0.9,
        weight_decay: args.weight_decay,
        batch: args.batch,
        seed: args.seed,
    };
    println!(
        "asymvalley demo: digits ({} train / {} test), MLP {:?} with and without BatchNorm, SGD {} epochs, SWA from epoch {}",
        data.train.len(),
        data.test.len(),
        args.hidden,
        args.epochs,
        args.swa_start
    );

    // 1. SGD + SWA, with and without BatchNorm.
    let mut bn = train(args, &data, true, &schedule, &sgd)?;
    let plain = train(args, &data, false, &plain_schedule, &sgd)?;
    println!(
        "{:<10} {:>11} {:>10} {:>11} {:>10}",
        "", "train loss", "train acc", "test loss", "test acc"
    );
    for (name, r) in [
        ("SGD", &bn.sgd),
        ("SWA", &bn.swa),
        ("SGD no-BN", &plain.sgd),
        ("SWA no-BN", &plain.swa),
    ] {
        println!(
            "{name:<10} {:>11.4} {:>9.2}% {:>11.4} {:>9.2}%",
            r.train.loss, r.train.accuracy, r.test.loss, r.test.accuracy
        );
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let summary = Summary {
        dataset: "UCI optical digits (embedded, fixtures/digits.safetensors)",
        network: &bn.config,
        schedule: &schedule,
        sgd: &sgd,
        swa_snapshots: bn.averager.n_averaged(),
        sgd_result: bn.sgd,
        swa_result: bn.swa,
    };
    let path = dir.join("summary.json");
    asymvalley::checkpoint::write_atomically(
        &path,
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;

    // 2. SGD restarted from SWA (vs holds the SWA weights with re-estimated BN).
    let swa_weights = snapshot(&bn.vs)?;
    let bar = progress(args.after_epochs as u64, "after");
    let after = sgd_after_swa(
        &bn.net,
        &mut bn.optimizer,
        &data,
        &sgd,
        args.after_lr,
        args.after_epochs,
        &bn.swa,
        |e| {
            bar.set_message(format!("train {:.4} test {:.4}", e.train.loss, e.test.loss));
            bar.inc(1);
        },
    )?;
    bar.finish();
    println!(
        "SGD after SWA at lr {} (rule: running train loss < SWA's {:.4} and test loss > SWA's {:.4}):",
        args.after_lr, bn.swa.train.loss, bn.swa.test.loss
    );
    for e in &after {
        println!(
            "  epoch {:>2}: train {:.4} ({}) test {:.4} ({}){}",
            e.epoch + 1,
            e.train.loss,
            if e.train.loss < bn.swa.train.loss {
                "<"
            } else {
                ">="
            },
            e.test.loss,
            if e.test.loss > bn.swa.test.loss {
                ">"
            } else {
                "<="
            },
            if e.selected { "  selected" } else { "" }
        );
    }
    let after_weights = snapshot(&bn.vs)?;
    bn_update(&bn.net, &data.train, args.batch, args.seed)?;
    let after_result = evaluate_both(&bn.net, &data, args.batch)?;

    // 3. The SWA→SGD line.
    let offsets = grid_line(2, args.division)?;
    let bar = progress(2 * offsets.len() as u64, "line");
    let line = line_study(
        &bn.vs,
        &bn.net,
        &data,
        &swa_weights,
        &after_weights,
        &offsets,
        256,
        args.seed,
        args.cheap_k,
        || bar.inc(1),
    )?;
    bar.finish();

    // 4. Random directions around SWA.
    let config = AsymmetryConfig {
        seed: args.seed,
        ..AsymmetryConfig::default()
    };
    let mut studies = Vec::new();
    for (name, kind, use_bn) in [
        ("with BatchNorm", DirectionKind::Uniform, true),
        ("without BatchNorm", DirectionKind::Uniform, false),
        ("with BatchNorm", DirectionKind::Gaussian, true),
        ("without BatchNorm", DirectionKind::Gaussian, false),
    ] {
        let t = if use_bn { &bn } else { &plain };
        restore(&t.vs, &swa_weights_of(t, use_bn, &swa_weights)?)?;
        bn_update(&t.net, &data.train, args.batch, args.seed)?;
        let settings = ProbeSettings {
            kind,
            count: args.directions,
            seed: args.seed.wrapping_add(1000),
            radius: args.radius,
            points: args.points,
            batch: 256,
        };
        let bar = progress((args.directions * args.points) as u64, kind.name());
        bar.set_message(name.to_string());
        let (reports, cost) = probe_random(&t.vs, &t.net, &data.train, &settings, &config, || {
            bar.inc(1)
        })?;
        bar.finish();
        studies.push(DirectionStudy::new(
            &format!("{name}, {} directions", kind.name()),
            settings,
            reports,
            cost,
        ));
    }

    // 5. The theorem-optimal bias along the line vs SWA's displacement; biased solutions.
    // The training minimum may sit at the grid's edge (no matched ±r around it): then no fit.
    let valley = line_valley(&line.train, &config).ok();
    let (chunk_shifts, shift_rms) = shift_estimates(&line.train, &line.test, 4, 1.5)?;
    let whole_shift = asymvalley::valley::bias::estimate_shift(
        &line.train.offsets,
        &line.train.loss,
        &line.test.loss,
        1.5,
    )?;
    let bias = match valley
        .as_ref()
        .and_then(|v| v.asymmetry.fit.map(|f| (v, f)))
    {
        Some((v, fit)) if shift_rms > 0.0 => {
            let fit = if fit.exponent > 1.0 {
                fit
            } else {
                refit_quadratic(&line, v, &config)?.unwrap_or(fit)
            };
            optimal_bias(&fit, ShiftLaw::Gaussian, shift_rms).ok()
        }
        _ => None,
    };
    let mut betas = vec![0.0, 0.25, 0.5, 1.0, 1.5];
    let t_min = valley.as_ref().map_or(0.0, |v| v.t_min);
    let c_star_beta = bias.map(|b| -(t_min + b.c_star)).filter(|b| *b >= 0.0);
    if let Some(b) = c_star_beta {
        betas.push(b);
    }
    restore(&bn.vs, &after_weights)?;
    let biased = biased_solutions(
        &bn.vs,
        &bn.net,
        &bn.averager,
        &after_weights,
        &betas,
        &data,
        args.batch,
        args.seed,
    )?;
    // The theorem-optimal point itself, t = t_min + c* on the line (it may lie between SWA and
    // SGD, where no β ≥ 0 reaches it).
    let c_star_point = match bias {
        Some(b) => {
            let t = t_min + b.c_star;
            let res = line_point(
                &bn.vs,
                &bn.net,
                &swa_weights,
                &after_weights,
                t,
                &data,
                args.batch,
                args.seed,
            )?;
            Some((t, res))
        }
        None => None,
    };

    let report = DemoReport {
        seed: args.seed,
        args: format!("{args:?}"),
        schedule,
        plain_schedule,
        sgd,
        network: bn.config.clone(),
        swa_snapshots: bn.averager.n_averaged(),
        sgd_bn: bn.sgd,
        swa_bn: bn.swa,
        sgd_plain: plain.sgd,
        swa_plain: plain.swa,
        after_lr: args.after_lr,
        after_max_epochs: args.after_epochs,
        after_epochs: after,
        after_result,
        line,
        studies,
        valley,
        chunk_shifts,
        shift_rms,
        whole_shift,
        bias,
        c_star_beta,
        c_star_point,
        biased,
    };
    write_report(dir, &report)?;
    asymvalley::valley::report::write_json(&dir.join("report.json"), &report)?;
    // The wall time goes to stdout only (printed by `run`), so that the same seed gives a
    // byte-identical report.
    Ok(())
}

/// The SWA weights of either network (the BN net's were snapshotted before step 2 moved it).
fn swa_weights_of(t: &Trained, is_bn: bool, bn_swa: &[tch::Tensor]) -> Result<Vec<tch::Tensor>> {
    if is_bn {
        return bn_swa.iter().map(|w| Ok(w.f_detach_copy()?)).collect();
    }
    t.averager.copy_to(&t.vs)?;
    let w = snapshot(&t.vs)?;
    let _ = &t.sgd_weights;
    Ok(w)
}

fn refit_quadratic(
    line: &crate::experiment::LineStudy,
    valley: &crate::experiment::LineValley,
    config: &AsymmetryConfig,
) -> Result<Option<asymvalley::valley::asymmetry::TwoSidedFit>> {
    let shifted: Vec<f64> = line
        .train
        .offsets
        .iter()
        .map(|t| t - valley.t_min)
        .collect();
    let cfg = AsymmetryConfig {
        exponent: Some(2.0),
        bootstrap: 0,
        ..config.clone()
    };
    Ok(asymvalley::valley::asymmetry::analyze(&shifted, &line.train.loss, None, &cfg)?.fit)
}
