//! `asymvalley probe`: the asymmetric-valley detector on a TorchScript model.
//!
//! ```text
//! asymvalley probe --model model.pt --data data.safetensors [--loss mse|cross-entropy]
//!     [--direction uniform|gaussian|filter|sign-consistent|sign-inconsistent] [--count K --seed S]
//!     [--params REGEX] [--points N --radius R] [--bn stale|full|k=K] --json out.json --svg out.svg
//! ```
//! Direction i uses seed S + i; all directions are saved to `--directions` (default: the JSON
//! path with `.directions.safetensors`), tensors `d{i}/{parameter}`, so a probe can be repeated.
use crate::data::Split;
use crate::plot::{draw, Panel, Series};
use asymvalley::error::{Error, Result};
use asymvalley::valley::asymmetry::{analyze, AsymmetryConfig};
use asymvalley::valley::bias::{optimal_bias, ShiftLaw};
use asymvalley::valley::directions::{Direction, DirectionKind, ParamSubset};
use asymvalley::valley::model::{LossKind, ProbeData, ProbeModel};
use asymvalley::valley::profile::{evaluate, grid_through, profile, BnMode, BnPlan, ProfileCost};
use asymvalley::valley::report::{write_json, DirectionReport, ProbeReport, Summary};
use asymvalley::valley::torchscript::{load_data, ScriptModel};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

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
    /// How directions are drawn.
    /// One of: uniform, gaussian, filter, sign-consistent, sign-inconsistent.
    #[arg(long, default_value = "uniform")]
    pub direction: DirectionKind,
    /// Number of directions.
    #[arg(long, default_value_t = 10)]
    pub count: usize,
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
    /// Where the directions are saved (default: next to --json).
    #[arg(long)]
    pub directions: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

fn subset(args: &ProbeArgs) -> Result<ParamSubset> {
    if let Some(re) = &args.params {
        if args.subset != SubsetArg::All {
            return Err(Error::invalid(
                "params",
                re,
                "either --params or --subset, not both",
            ));
        }
        return ParamSubset::pattern(re);
    }
    Ok(match args.subset {
        SubsetArg::All => ParamSubset::All,
        SubsetArg::BatchNorm => ParamSubset::BatchNormOnly,
        SubsetArg::NonBatchNorm => ParamSubset::NonBatchNorm,
    })
}

/// Runs `asymvalley probe`.
pub fn run(args: ProbeArgs) -> Result<()> {
    if args.count == 0 {
        return Err(Error::invalid("count", 0, "an integer >= 1"));
    }
    // Checked before anything runs: a bad scale used to drop the bias field silently.
    if let Some(s) = args.shift_scale {
        if !(s > 0.0 && s.is_finite()) {
            return Err(Error::invalid("--shift-scale", s, "a finite number > 0"));
        }
    }
    let offsets = grid_through(args.points, args.radius)?;
    let config = AsymmetryConfig {
        ratio_threshold: args.ratio_threshold,
        flat_rise: args.flat_rise,
        radius: None,
        bootstrap: args.bootstrap,
        confidence: 0.95,
        exponent: args.exponent,
        seed: args.seed,
    };
    config.validate()?;
    let subset = subset(&args)?;

    let model = ScriptModel::load(&args.model)?;
    let (inputs, targets) = load_data(&args.data, &args.inputs, &args.targets)?;
    let data = ProbeData::from_tensors(&inputs, &targets, args.batch)?;
    let (center, _, _) = evaluate(&model, &data, args.loss)?;
    let params = model.parameters()?;
    if params.is_empty() {
        return Err(Error::Data {
            path: args.model.clone(),
            reason: "the model has no parameters to probe".into(),
        });
    }
    // A real direction cannot move an integer tensor (libtorch would fail mid-profile).
    if let Some(p) = params.iter().find(|p| !p.tensor.is_floating_point()) {
        return Err(Error::Data {
            path: args.model.clone(),
            reason: format!(
                "parameter `{}` has dtype {:?}; probing needs floating-point parameters \
                 (register integer state as a buffer)",
                p.name,
                p.tensor.kind()
            ),
        });
    }
    let has_bn = model.has_batch_norm()?;
    let bn = if has_bn && args.bn != BnMode::Stale {
        let split = Split {
            inputs: inputs.shallow_clone(),
            targets: targets.shallow_clone(),
        };
        let batches = split
            .batches(args.batch, Some(args.seed))?
            .into_iter()
            .map(|(x, _)| x)
            .collect();
        BnPlan::new(args.bn, batches)?
    } else {
        BnPlan::stale()
    };

    let mut directions = Vec::with_capacity(args.count);
    for i in 0..args.count {
        directions.push(Direction::random(
            &params,
            args.direction,
            &subset,
            args.seed.wrapping_add(i as u64),
        )?);
    }
    let dir_path = args
        .directions
        .clone()
        .unwrap_or_else(|| args.json.with_extension("directions.safetensors"));
    if let Some(d) = dir_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    Direction::save_all(&directions, &dir_path)?;

    print_stdout(&format!(
        "probe: {} ({} parameters, BatchNorm: {}), {} examples, loss {:.5} at the point; {} {} directions × {} points, bn {}\n",
        args.model.display(),
        params.len(),
        if has_bn { "yes" } else { "no" },
        data.len(),
        center,
        args.count,
        args.direction.name(),
        offsets.len(),
        bn.mode
    ))?;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new((args.count * offsets.len()) as u64)
    };
    if let Ok(style) =
        ProgressStyle::with_template("probe [{bar:30}] {pos}/{len} points {elapsed} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut reports = Vec::with_capacity(args.count);
    let mut cost = ProfileCost::default();
    for (i, d) in directions.iter().enumerate() {
        bar.set_message(format!("direction {}/{}", i + 1, args.count));
        let (mut profs, c) = profile(&model, d, &offsets, &[&data], args.loss, &bn, |_| {
            bar.inc(1)
        })?;
        cost.eval_forwards += c.eval_forwards;
        cost.bn_forwards += c.bn_forwards;
        let prof = profs.remove(0);
        let mut cfg = config.clone();
        cfg.seed = args.seed.wrapping_add(i as u64);
        let asym = analyze(&prof.offsets, &prof.loss, Some(&prof.per_example), &cfg)?;
        let bias = match (args.shift_scale, asym.fit.as_ref()) {
            (Some(s), Some(fit)) => optimal_bias(fit, args.shift_law, s).ok(),
            _ => None,
        };
        reports.push(DirectionReport::new(i, d, &params, asym, bias, prof)?);
    }
    bar.finish_and_clear();

    // The table is printed after the files are written, so `probe ... | head -1` keeps them.
    let mut table = format!(
        "{:>4} {:>10} {:>22} {:>10} {:>5}  class\n",
        "dir", "R", "95% CI", "fit c+/c-", "flat"
    );
    for r in &reports {
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
    for r in &reports {
        for w in &r.asymmetry.warnings {
            eprintln!("warning: direction {}: {w}", r.index);
        }
    }
    let summary = Summary::of(&reports);
    table += &format!(
        "{} of {} directions asymmetric; median |ln R| = {:.3}\n",
        summary.asymmetric, summary.directions, summary.median_abs_log_ratio
    );
    if let Some(svg) = &args.svg {
        let panel = Panel {
            title: format!("loss along {} directions", args.direction.name()),
            x_label: "t".into(),
            y_label: "loss".into(),
            series: reports
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
    let report = ProbeReport {
        model: args.model.display().to_string(),
        data: args.data.display().to_string(),
        examples: data.len(),
        loss: match args.loss {
            LossKind::CrossEntropy => "cross-entropy".into(),
            LossKind::Mse => "mse".into(),
        },
        bn: bn.mode.to_string(),
        has_batch_norm: has_bn,
        radius: args.radius,
        points: offsets.len(),
        config,
        directions_file: Some(dir_path.display().to_string()),
        cost,
        summary,
        directions: reports,
    };
    write_json(&args.json, &report)?;
    table += &format!("report: {}\n", args.json.display());
    print_stdout(&table)
}

/// Writes `text` to stdout; a reader that has gone away (`| head -1`) is not an error, so the
/// command still exits 0 with its files written (println! would panic on the broken pipe).
fn print_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::io("<stdout>", e)),
        _ => Ok(()),
    }
}
