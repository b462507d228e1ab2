//! `asymvalley demo`: the main job on the embedded digits data.
//!
//! Trains a BatchNorm MLP with SGD on the official `train2.py` schedule scaled down (225 → 60
//! epochs, SWA from epoch 34 ≈ 126·60/225), averages the end-of-epoch weights with SWA,
//! re-estimates BatchNorm for the average (official `bn_update`), and compares SGD with SWA.
use crate::average::Averager;
use crate::bn::{reestimate_batch_norm, BnWeighting};
use crate::data::Digits;
use crate::error::{Error, Result};
use crate::model::{DigitsNet, DigitsNetConfig};
use crate::train::{evaluate, input_batches, train_sgd_swa, Evaluation, SgdConfig, SwaSchedule};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::path::PathBuf;
use tch::{nn::VarStore, Device};

/// Arguments of `asymvalley demo`.
#[derive(clap::Args, Debug)]
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
    /// Initial learning rate.
    #[arg(long, default_value_t = 0.1)]
    pub lr_init: f64,
    /// Constant learning rate during SWA.
    #[arg(long, default_value_t = 0.05)]
    pub swa_lr: f64,
    /// Weight decay.
    #[arg(long, default_value_t = 3e-4)]
    pub weight_decay: f64,
    /// Mini-batch size.
    #[arg(long, default_value_t = 64)]
    pub batch: i64,
}

/// Train and test results of one solution.
#[derive(Serialize, Debug, Clone, Copy)]
pub struct SolutionResult {
    /// On the training set (eval mode).
    pub train: Evaluation,
    /// On the test set.
    pub test: Evaluation,
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

/// Evaluates the model in `vs` on both splits.
pub fn evaluate_both(net: &DigitsNet, data: &Digits, batch: i64) -> Result<SolutionResult> {
    Ok(SolutionResult {
        train: evaluate(net, &data.train, batch)?,
        test: evaluate(net, &data.test, batch)?,
    })
}

/// Swaps the average in, re-estimates BatchNorm over the training data, evaluates, swaps out.
pub fn evaluate_average(
    vs: &VarStore,
    net: &DigitsNet,
    averager: &mut Averager,
    data: &Digits,
    batch: i64,
    seed: u64,
) -> Result<SolutionResult> {
    averager.swap_in(vs)?;
    let outcome = (|| {
        reestimate_batch_norm(
            net,
            input_batches(&data.train, batch, Some(seed))?,
            BnWeighting::SampleWeighted,
        )?;
        evaluate_both(net, data, batch)
    })();
    averager.swap_out(vs)?;
    outcome
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {elapsed} {wide_msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// Runs `asymvalley demo`.
pub fn run(args: DemoArgs) -> Result<()> {
    tch::manual_seed(args.seed as i64);
    let device = Device::Cpu;
    let data = Digits::load(device)?;
    let vs = VarStore::new(device);
    let config = DigitsNetConfig::default();
    let net = DigitsNet::new(&vs.root(), &config)?;
    let schedule = SwaSchedule {
        lr_init: args.lr_init,
        swa_lr: args.swa_lr,
        swa_start: args.swa_start,
        epochs: args.epochs,
        swa: true,
    };
    let sgd = SgdConfig {
        momentum: 0.9,
        weight_decay: args.weight_decay,
        batch: args.batch,
        seed: args.seed,
    };

    println!(
        "asymvalley demo: digits ({} train / {} test), MLP {:?} with BatchNorm, SGD {} epochs, SWA from epoch {}",
        data.train.len(),
        data.test.len(),
        config.hidden,
        args.epochs,
        args.swa_start
    );
    let bar = progress(args.epochs as u64, "train");
    let mut run = train_sgd_swa(&vs, &net, &data.train, &schedule, &sgd, |_, lr, res| {
        bar.set_message(format!("train lr {lr:.4} loss {:.4}", res.loss));
        bar.inc(1);
    })?;
    bar.finish();

    let sgd_result = evaluate_both(&net, &data, args.batch)?;
    let swa_result = evaluate_average(&vs, &net, &mut run.averager, &data, args.batch, args.seed)?;

    println!(
        "{:<6} {:>11} {:>10} {:>11} {:>10}",
        "", "train loss", "train acc", "test loss", "test acc"
    );
    for (name, r) in [("SGD", &sgd_result), ("SWA", &swa_result)] {
        println!(
            "{name:<6} {:>11.4} {:>9.2}% {:>11.4} {:>9.2}%",
            r.train.loss, r.train.accuracy, r.test.loss, r.test.accuracy
        );
    }
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    let summary = Summary {
        dataset: "UCI optical digits (embedded, fixtures/digits.safetensors)",
        network: &config,
        schedule: &schedule,
        sgd: &sgd,
        swa_snapshots: run.averager.n_averaged(),
        sgd_result,
        swa_result,
    };
    let path = args.out.join("summary.json");
    crate::checkpoint::write_atomically(&path, serde_json::to_string_pretty(&summary)?.as_bytes())?;
    println!("summary: {}", path.display());
    Ok(())
}
