//! `asymvalley demo`: arguments → [`StudyConfig`] → [`run_study`] → the report. The study itself
//! (its steps, verdicts and report) is [`crate::experiment`].
use crate::data::Digits;
use crate::experiment::report::write_report;
use crate::experiment::{run_study, StudyConfig};
use asymvalley::error::{Error, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::Device;

/// Arguments of `asymvalley demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Where the report goes.
    #[arg(long, default_value = "report")]
    pub out: PathBuf,
    /// Seeds 0..N, each a full run of the experiment.
    #[arg(long, default_value_t = 8)]
    pub seeds: u64,
    /// Training epochs.
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    /// The epoch from whose end SWA averages (default: the official 126/225 of --epochs).
    #[arg(long)]
    pub swa_start: Option<usize>,
    /// Initial learning rate of both networks (swa_lr = lr_init/2, restart rate lr_init/100,
    /// the official ratios; the official value 0.1 is also the most stable here, see the
    /// report's settings note).
    #[arg(long, default_value_t = 0.1)]
    pub lr_init: f64,
    /// Weight decay.
    #[arg(long, default_value_t = 3e-4)]
    pub weight_decay: f64,
    /// Mini-batch size.
    #[arg(long, default_value_t = 128)]
    pub batch: i64,
    /// Epochs of SGD after SWA, all run; the line goes to the last one that passes the rule
    /// (official: 50).
    #[arg(long, default_value_t = 50)]
    pub after_epochs: usize,
    /// Grid points per unit of t on the SWA→SGD line (official: 40).
    #[arg(long, default_value_t = 5)]
    pub division: usize,
    /// U(0,1) directions per network and seed.
    #[arg(long, default_value_t = 3)]
    pub directions: usize,
    /// Random-direction profiles span [−radius, radius] (unit-norm directions).
    #[arg(long, default_value_t = 10.0)]
    pub radius: f64,
    /// Points per random-direction profile.
    #[arg(long, default_value_t = 7)]
    pub points: usize,
    /// Held-out chunks of the shift estimate (its sign test needs ≥ 6 to reach p < 0.05).
    #[arg(long, default_value_t = 8)]
    pub chunks: usize,
    /// libtorch intra-op threads (0: libtorch's own default, from OMP_NUM_THREADS or the
    /// cores). The study's kernels are tiny (batches of 128 8×8 images), too small to split
    /// well; on a busy 2-core machine one reduced seed took 7–21 s on one thread and 40–370 s
    /// on two, whose threads wait for each other.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Channels of the CNN's two convolutions (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "8,16")]
    pub channels: Vec<i64>,
}

fn invalid(field: &'static str, value: impl std::fmt::Display, expected: &str) -> Error {
    Error::InvalidConfig {
        field,
        value: value.to_string(),
        expected: expected.to_string(),
    }
}

impl DemoArgs {
    /// The study's settings; refuses every argument the run could not use, before any work.
    pub fn config(&self) -> Result<StudyConfig> {
        let positive = |field: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(invalid(field, v, "a finite number > 0"))
            }
        };
        positive("--lr-init", self.lr_init)?;
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
        at_least("--seeds", self.seeds as usize, 1)?;
        at_least("--epochs", self.epochs, 2)?;
        at_least("--after-epochs", self.after_epochs, 1)?;
        at_least("--division", self.division, 1)?;
        at_least("--directions", self.directions, 1)?;
        // A profile needs both ends and a centre to show an asymmetry.
        at_least("--points", self.points, 3)?;
        at_least("--chunks", self.chunks, 1)?;
        if self.threads > 64 {
            return Err(invalid(
                "--threads",
                self.threads,
                "0 (libtorch's default) to 64",
            ));
        }
        if self.chunks > 360 {
            return Err(invalid(
                "--chunks",
                self.chunks,
                "at most the 360 test examples",
            ));
        }
        let swa_start = self
            .swa_start
            .unwrap_or_else(|| ((126 * self.epochs + 112) / 225).max(1));
        if swa_start < 1 || swa_start > self.epochs {
            return Err(invalid(
                "--swa-start",
                swa_start,
                &format!("an epoch in 1..={}", self.epochs),
            ));
        }
        if self.batch < 2 {
            return Err(invalid(
                "--batch",
                self.batch,
                "an integer >= 2 (BatchNorm needs two examples)",
            ));
        }
        let channels = match self.channels[..] {
            [a, b] if a >= 1 && b >= 1 => [a, b],
            _ => {
                return Err(invalid(
                    "--channels",
                    format!("{:?}", self.channels),
                    "two widths >= 1",
                ))
            }
        };
        check_out(&self.out)?;
        Ok(StudyConfig {
            seeds: self.seeds,
            epochs: self.epochs,
            swa_start,
            lr_init: self.lr_init,
            weight_decay: self.weight_decay,
            batch: self.batch,
            after_epochs: self.after_epochs,
            division: self.division,
            directions: self.directions,
            radius: self.radius,
            points: self.points,
            chunks: self.chunks,
            betas: vec![0.25, 0.5, 1.0],
            channels,
        })
    }
}

/// --out: a new path, an empty folder, or a folder holding an earlier report (replaced at the end).
fn check_out(out: &Path) -> Result<()> {
    if out.exists() && !out.join("report.md").is_file() {
        let empty = std::fs::read_dir(out)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty {
            return Err(invalid(
                "--out",
                out.display(),
                "a new path, an empty folder, or a folder holding an earlier report.md",
            ));
        }
    }
    Ok(())
}

/// Runs `asymvalley demo`.
pub fn run(args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    let config = args.config()?;
    if args.threads > 0 {
        tch::set_num_threads(args.threads as i32);
    }
    let staging = staging_dir(&args.out)?;
    let outcome = (|| {
        let data = Digits::load(Device::Cpu)?;
        println!(
            "asymvalley demo: {} seeds, digits CNN {:?} with and without BatchNorm, lr_init {}, {} epochs, SWA from epoch {}, {} libtorch thread(s)",
            config.seeds, config.channels, config.lr_init, config.epochs, config.swa_start, tch::get_num_threads()
        );
        let bar = ProgressBar::new(config.seeds);
        if let Ok(style) =
            ProgressStyle::with_template("seed {pos}/{len} [{bar:30}] {elapsed} {wide_msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        let mut last = 0;
        let study = run_study(&config, &data, |seed, stage| {
            if seed != last {
                bar.inc(1);
                last = seed;
            }
            bar.set_message(format!("seed {seed}: {stage}"));
        })?;
        bar.finish_and_clear();
        write_report(&staging, &study, &format!("{args:?}"))?;
        for f in &study.findings {
            println!(
                "  {:<86} {:>9}  {}",
                f.claim,
                format!("{}/{}", f.k, f.n),
                f.verdict.word()
            );
        }
        publish(&staging, &args.out)
    })();
    if let Err(e) = outcome {
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

/// Creates the staging folder next to `out` (same file system, so the final rename is atomic);
/// this is also the check that --out's parent is writable, done before any work.
fn staging_dir(out: &Path) -> Result<PathBuf> {
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

/// Replaces `out` (absent, empty, or an earlier report, as `config` checked) by the staging folder.
fn publish(staging: &Path, out: &Path) -> Result<()> {
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(|e| Error::io(out, e))?;
    }
    std::fs::rename(staging, out).map_err(|e| Error::io(out, e))
}
