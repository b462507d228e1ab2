//! `asymvalley probe`: the asymmetric-valley detector on a TorchScript model.
//!
//! ```text
//! asymvalley probe --model model.pt --data data.safetensors [--loss mse|cross-entropy]
//!     [--direction uniform|gaussian|filter|sign-consistent|sign-inconsistent|hessian]
//!     [--count K --seed S] [--params REGEX] [--points N --radius R] [--bn stale|full|k=K]
//!     [--bn-exclude L,...] [--directions F] [--save-directions G] [--between A B]
//!     [--test-data T] [--device cpu|cuda] --json out.json --svg out.svg
//! ```
//! Direction i uses seed S + i. `--directions F` loads F when it exists (checked against the
//! model: names, shapes, dtypes) and otherwise saves the drawn directions to F; `--save-directions
//! G` writes them to G (overwriting); with neither they go next to the JSON
//! (`.directions.safetensors`), tensors `d{i}/{parameter}`, so a probe can be repeated.
//!
//! The probe itself is the library's [`run_probe`] (the same one `torch.ops.asymvalley.valley_probe`
//! runs for Python): this file turns the flags into a [`ProbeConfig`], saves the directions, writes
//! the JSON and the SVG, and prints the progress and the table.
use crate::plot::{draw, Panel, Series};
use asymvalley::error::{Error, Result};
use asymvalley::valley::bias::ShiftLaw;
use asymvalley::valley::compare::{GroupAsymmetry, Verdict};
use asymvalley::valley::directions::{Direction, DirectionKind};
use asymvalley::valley::model::LossKind;
use asymvalley::valley::probe::{
    parse_device, run_probe, Dataset, DirectionSource, ProbeConfig, ProbeEvent, ProbeResult,
    StateSource, SubsetChoice,
};
use asymvalley::valley::profile::BnMode;
use asymvalley::valley::report::{write_json, ProbeReport};
use asymvalley::valley::torchscript::{load_data, ScriptModel};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

pub use asymvalley::valley::probe::DirectionChoice;

mod surface;

/// Which parameters directions move, besides `--params`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SubsetArg {
    /// Every parameter.
    All,
    /// BatchNorm γ and β only.
    BatchNorm,
    /// Everything but BatchNorm.
    NonBatchNorm,
}

/// Arguments of `asymvalley probe`.
#[derive(clap::Args, Debug)]
pub struct ProbeArgs {
    /// A TorchScript model saved with `torch.jit.save`.
    #[arg(long)]
    pub model: PathBuf,
    /// A safetensors file with the inputs and targets.
    #[arg(long)]
    pub data: PathBuf,
    /// A held-out safetensors file (same tensor names as --data): profiled along the same
    /// directions; the shift scale for c* is then estimated from train vs held-out profiles.
    #[arg(long)]
    pub test_data: Option<PathBuf>,
    /// Name of the inputs tensor in `--data`.
    #[arg(long, default_value = "inputs")]
    pub inputs: String,
    /// Name of the targets tensor in `--data`.
    #[arg(long, default_value = "targets")]
    pub targets: String,
    /// The loss.
    /// One of: cross-entropy, mse.
    #[arg(long, default_value = "cross-entropy")]
    pub loss: LossKind,
    /// How directions are made: drawn at random, or the Hessian's top eigenvectors.
    /// One of: uniform, gaussian, filter, sign-consistent, sign-inconsistent, hessian.
    #[arg(long, default_value = "uniform")]
    pub direction: DirectionChoice,
    /// `hessian`: most power iterations per eigenvector.
    #[arg(long, default_value_t = 100)]
    pub hessian_iterations: usize,
    /// `hessian`: stop when the eigenvalue changes by less than this, relatively.
    #[arg(long, default_value_t = 1e-4)]
    pub hessian_tolerance: f64,
    /// `hessian`: Rademacher samples for Hutchinson's trace estimate (0: none).
    #[arg(long, default_value_t = 0)]
    pub trace_samples: usize,
    /// `filter` directions: keep tensors with ≤ 1 dim (biases, BatchNorm γ/β) as d = w, as Li
    /// et al.'s code does without `--xignore biasbn` (default: zeroed, as with it).
    #[arg(long)]
    pub filter_keep_1d: bool,
    /// Number of directions (default: 10 drawn, 1 Hessian eigenvector, or every direction of an
    /// existing --directions file).
    #[arg(long)]
    pub count: Option<usize>,
    /// Seed of the first direction (direction i uses seed + i).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Only parameters whose name matches this regular expression move.
    #[arg(long)]
    pub params: Option<String>,
    /// Parameter subset (combined with --params).
    #[arg(long, value_enum, default_value_t = SubsetArg::All)]
    pub subset: SubsetArg,
    /// Grid points per profile (made odd so that t = 0 is on the grid).
    #[arg(long, default_value_t = 21)]
    pub points: usize,
    /// Profiles span t ∈ [−radius, radius].
    #[arg(long, default_value_t = 1.0)]
    pub radius: f64,
    /// BatchNorm statistics at each point: stale, full (official bn_update) or k=K batches.
    #[arg(long, default_value = "full")]
    pub bn: BnMode,
    /// BatchNorm layers (module paths, comma-separated) left out of re-estimation: layers
    /// that forward never uses.
    #[arg(long, value_delimiter = ',')]
    pub bn_exclude: Vec<String>,
    /// Mini-batch size for evaluation and BatchNorm re-estimation.
    #[arg(long, default_value_t = 256)]
    pub batch: i64,
    /// Bootstrap resamples of the examples for the intervals (0: none).
    #[arg(long, default_value_t = 200)]
    pub bootstrap: usize,
    /// Asymmetric when max(R, 1/R) ≥ this.
    #[arg(long, default_value_t = 2.0)]
    pub ratio_threshold: f64,
    /// Symmetric and flat when both rises are ≤ this.
    #[arg(long, default_value_t = 0.1)]
    pub flat_rise: f64,
    /// Fix the fit's exponent (2 = curvature model); default: fitted.
    #[arg(long)]
    pub exponent: Option<f64>,
    /// Shift scale (in t units) for the theorem-optimal bias c* per direction; none: no c*.
    #[arg(long)]
    pub shift_scale: Option<f64>,
    /// Law of the shift.
    /// One of: gaussian, uniform.
    #[arg(long, default_value = "gaussian")]
    pub shift_law: ShiftLaw,
    /// The JSON report.
    #[arg(long)]
    pub json: PathBuf,
    /// The SVG plot of every profile.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Probe the line between two checkpoints A B (safetensors state dicts of this model), as
    /// the official interpulation.py: t = 0 at A (the probed point), t = 1 at B, on the grid
    /// t_i = (i − distances)/division; --points and --radius do not apply.
    #[arg(long, num_args = 2, value_names = ["A", "B"], conflicts_with_all = ["directions", "count"])]
    pub between: Option<Vec<PathBuf>>,
    /// With --between: grid points before A (and after B); the grid reaches distances/division past each end.
    #[arg(long, default_value_t = 20)]
    pub distances: usize,
    /// With --between: grid steps from A to B.
    #[arg(long, default_value_t = 40)]
    pub division: usize,
    /// A directions file (safetensors, `d{i}/{parameter}`): loaded and checked against the model
    /// when it exists (never overwritten), else the drawn directions are saved there.
    #[arg(long)]
    pub directions: Option<PathBuf>,
    /// Save the directions probed here, overwriting any file (default: next to --json, unless
    /// --directions names where).
    #[arg(long)]
    pub save_directions: Option<PathBuf>,
    /// `hessian`: also probe M random directions (unit norm, like the eigenvectors; kind
    /// --compare-kind, direction i with seed + i) and compare the two groups' asymmetry, with
    /// Wilson intervals for the asymmetric fraction and a verdict.
    #[arg(long)]
    pub compare_random: Option<usize>,
    /// The law of the --compare-random directions.
    #[arg(long, default_value = "gaussian")]
    pub compare_kind: DirectionKind,
    /// A 2-D surface `L(w + a·d1 + b·d2)` instead of 1-D profiles: d1, d2 are the first two
    /// directions (drawn, `hessian` top-2, or from --directions); with --between A B, d1 is the
    /// line B − A and d2 a random direction made orthogonal to it and scaled to its length.
    #[arg(long, conflicts_with_all = ["test_data", "compare_random", "shift_scale"])]
    pub surface: bool,
    /// With --surface: grid points per axis (made odd, so the probed point is on the grid);
    /// both axes span [−radius, radius], except a line's axis, which uses the --between grid.
    #[arg(long, default_value_t = 21, requires = "surface")]
    pub grid: usize,
    /// Where the model and data live: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = device_arg)]
    pub device: tch::Device,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl ProbeArgs {
    /// The settings that change the numbers, for the library's [`run_probe`].
    pub fn config(&self) -> ProbeConfig {
        ProbeConfig {
            loss: self.loss,
            direction: self.direction,
            count: self.count,
            seed: self.seed,
            params: self.params.clone(),
            subset: match self.subset {
                SubsetArg::All => SubsetChoice::All,
                SubsetArg::BatchNorm => SubsetChoice::BatchNorm,
                SubsetArg::NonBatchNorm => SubsetChoice::NonBatchNorm,
            },
            filter_keep_1d: self.filter_keep_1d,
            points: self.points,
            radius: self.radius,
            bn: self.bn,
            bn_exclude: self.bn_exclude.clone(),
            batch: self.batch,
            bootstrap: self.bootstrap,
            ratio_threshold: self.ratio_threshold,
            flat_rise: self.flat_rise,
            exponent: self.exponent,
            shift_scale: self.shift_scale,
            shift_law: self.shift_law,
            hessian_iterations: self.hessian_iterations,
            hessian_tolerance: self.hessian_tolerance,
            trace_samples: self.trace_samples,
            compare_random: self.compare_random,
            compare_kind: self.compare_kind,
            distances: self.distances,
            division: self.division,
            surface: self.surface,
            grid: self.grid,
            device: self.device,
        }
    }

    /// An existing `--directions` file (loaded, never overwritten).
    fn existing_directions(&self) -> Option<&PathBuf> {
        self.directions.as_ref().filter(|p| p.exists())
    }

    /// Where the probed directions are saved: `--save-directions` always (overwriting); a line
    /// only there; else a new `--directions` file, or next to the JSON report when neither
    /// flag names a file. An existing `--directions` file is never written.
    fn save_target(&self) -> Option<PathBuf> {
        if self.between.is_some() {
            return self.save_directions.clone();
        }
        match (
            &self.save_directions,
            self.existing_directions(),
            &self.directions,
        ) {
            (Some(p), _, _) => Some(p.clone()),
            (None, Some(_), _) => None,
            (None, None, Some(p)) => Some(p.clone()),
            (None, None, None) => Some(self.json.with_extension("directions.safetensors")),
        }
    }
}

/// Saves `directions` where [`ProbeArgs::save_target`] says; returns the file the report names
/// (the one written, or the existing one loaded).
fn save_directions(args: &ProbeArgs, directions: &[Direction]) -> Result<Option<PathBuf>> {
    let target = args.save_target();
    if let Some(path) = &target {
        if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        Direction::save_all(directions, path)?;
    }
    Ok(target.or_else(|| args.existing_directions().cloned()))
}

fn dataset(args: &ProbeArgs, path: &std::path::Path) -> Result<Dataset> {
    let (inputs, targets) = load_data(path, &args.inputs, &args.targets)?;
    Ok(Dataset {
        inputs,
        targets,
        label: path.display().to_string(),
    })
}

/// Runs `asymvalley probe`: flags → [`ProbeConfig`] → [`run_probe`] → JSON, SVG and the table.
pub fn run(args: &ProbeArgs) -> Result<()> {
    let config = args.config();
    config.validate()?;
    let mut model = ScriptModel::load(&args.model)?;
    let train = dataset(args, &args.data)?;
    let test = match &args.test_data {
        Some(p) => Some(dataset(args, p)?),
        None => None,
    };
    let source = match (args.between.as_deref(), args.existing_directions()) {
        (Some([a, b]), _) => {
            DirectionSource::Line([StateSource::File(a.clone()), StateSource::File(b.clone())])
        }
        (_, Some(p)) => DirectionSource::File(p.clone()),
        _ => DirectionSource::Draw,
    };
    let mut bar: Option<ProgressBar> = None;
    let mut count = 0;
    // stdout fails only when it is closed for real (not a broken pipe); the first failure is
    // kept and reported once the probe is over.
    let mut failed: Option<Error> = None;
    let say = |text: String, failed: &mut Option<Error>| {
        if let Err(e) = print_stdout(&text) {
            failed.get_or_insert(e);
        }
    };
    let mut on_event = |e: ProbeEvent| match e {
        ProbeEvent::Warning(w) => eprintln!("warning: {w}"),
        ProbeEvent::Hessian(h) => {
            let trace = h.trace.map_or(String::new(), |t| {
                format!(
                    "; trace {:.6} ± {:.6} ({} samples)",
                    t.trace, t.std_error, t.samples
                )
            });
            say(
                format!(
                    "hessian: eigenvalues {:?} ({} Hessian-vector products){trace}\n",
                    h.eigenvalues, h.products
                ),
                &mut failed,
            );
        }
        ProbeEvent::Started(s) => {
            count = s.directions;
            say(format!(
                "probe: {} ({} parameters, BatchNorm: {}), {} examples, loss {:.5} at the point; {} {} directions × {} points, bn {}\n",
                args.model.display(),
                s.parameters,
                if s.has_batch_norm { "yes" } else { "no" },
                s.examples,
                s.center_loss,
                s.directions,
                s.kind,
                s.points,
                s.bn
            ), &mut failed);
        }
        ProbeEvent::Point {
            done,
            total,
            direction,
        } => {
            let b = bar.get_or_insert_with(|| new_bar(args.quiet, total));
            if !args.surface && done == 1 + direction * (total / count.max(1)) {
                b.set_message(format!("direction {}/{count}", direction + 1));
            }
            b.inc(1);
        }
    };
    let outcome = run_probe(
        &mut model,
        &train,
        test.as_ref(),
        source,
        &config,
        &mut on_event,
    );
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if let Some(e) = failed {
        return Err(e);
    }
    let outcome = outcome?;
    let file = save_directions(args, &outcome.directions)?;
    match outcome.result {
        ProbeResult::Surface(mut report) => {
            report.directions_file = file.map(|p| p.display().to_string());
            surface::write(args, &report)
        }
        ProbeResult::Profiles(mut report) => {
            report.directions_file = file.map(|p| p.display().to_string());
            write_profiles(args, &report)
        }
    }
}

fn new_bar(quiet: bool, total: usize) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total as u64)
    };
    if let Ok(style) =
        ProgressStyle::with_template("probe [{bar:30}] {pos}/{len} points {elapsed} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Writes the JSON report and the SVG, then prints the table (after the files, so that
/// `probe ... | head -1` keeps them).
fn write_profiles(args: &ProbeArgs, report: &ProbeReport) -> Result<()> {
    let kind_name = if report.between.is_some() {
        "line"
    } else if report.directions_loaded {
        "loaded"
    } else {
        args.direction.name()
    };
    // The table is printed after the files are written, so `probe ... | head -1` keeps them.
    let mut table = format!(
        "{:>4} {:>10} {:>22} {:>10} {:>5}  class\n",
        "dir", "R", "95% CI", "fit c+/c-", "flat"
    );
    for r in &report.directions {
        let ci = r
            .asymmetry
            .rise_ratio_ci
            .map_or("-".to_string(), |[a, b]| format!("[{a:.3}, {b:.3}]"));
        let fit = r
            .asymmetry
            .fit
            .map_or("-".into(), |f| format!("{:.3}", f.ratio));
        table += &format!(
            "{:>4} {:>10.4} {:>22} {:>10} {:>+5}  {:?}\n",
            r.index, r.rise_ratio, ci, fit, r.flat_side, r.class
        );
    }
    for r in &report.directions {
        for w in &r.asymmetry.warnings {
            eprintln!("warning: direction {}: {w}", r.index);
        }
    }
    if let Some(c) = &report.comparison {
        let line = |name: &str, g: &GroupAsymmetry| {
            format!(
                "{name}: {} of {} asymmetric, fraction 95% CI [{:.3}, {:.3}]; median |ln R| {:.3}{}\n",
                g.asymmetric,
                g.directions,
                g.fraction_ci[0],
                g.fraction_ci[1],
                g.median_abs_log_ratio,
                g.median_ci
                    .map_or(String::new(), |[a, b]| format!(" [{a:.3}, {b:.3}]"))
            )
        };
        table += &line("hessian eigenvectors", &c.sharp);
        table += &line("random directions", &c.random);
        table += &format!(
            "are the sharpest directions the asymmetric ones? {}\n",
            match c.verdict {
                Verdict::SharpMoreAsymmetric =>
                    "yes: more asymmetric than random (intervals apart)",
                Verdict::SharpLessAsymmetric => "no: less asymmetric than random (intervals apart)",
                Verdict::Inconclusive => "inconclusive (the intervals overlap)",
            }
        );
    }
    let summary = &report.summary;
    table += &format!(
        "{} of {} directions asymmetric; median |ln R| = {:.3}\n",
        summary.asymmetric, summary.directions, summary.median_abs_log_ratio
    );
    if let Some(s) = &report.shift {
        table += &format!(
            "shift train → held-out: scale {:.4} (rms), mean {:+.4}; {} of {} positive, sign test p = {:.3}{}\n",
            s.scale,
            s.mean,
            s.positive,
            s.positive + s.negative,
            s.sign_test_p,
            if args.shift_scale.is_some() {
                " (c* uses --shift-scale)"
            } else {
                ""
            }
        );
    }
    if let Some(svg) = &args.svg {
        let panel = Panel {
            title: format!("loss along {kind_name} directions"),
            x_label: if args.between.is_some() {
                "t (0 = A, 1 = B)".into()
            } else {
                "t".into()
            },
            y_label: "loss".into(),
            series: report
                .directions
                .iter()
                .map(|r| Series {
                    label: format!("d{} (R={:.2})", r.index, r.rise_ratio),
                    points: r
                        .profile
                        .offsets
                        .iter()
                        .copied()
                        .zip(r.profile.loss.iter().copied())
                        .collect(),
                    color: r.index,
                    fitted: false,
                })
                .collect(),
            markers: vec![],
        };
        draw(svg, &[panel], 800)?;
    }
    write_json(&args.json, report)?;
    table += &format!("report: {}\n", args.json.display());
    print_stdout(&table)
}
/// `cpu`, `cuda` (device 0) or `cuda:N`; availability is checked when the model moves.
fn device_arg(s: &str) -> std::result::Result<tch::Device, String> {
    parse_device(s).map_err(|_| format!("`{s}`: expected cpu, cuda or cuda:N"))
}

/// Writes `text` to stdout; a reader that has gone away (`| head -1`) is not an error, so the
/// command still exits 0 with its files written (println! would panic on the broken pipe).
pub(crate) fn print_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::io("<stdout>", e)),
        _ => Ok(()),
    }
}
