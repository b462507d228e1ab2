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
use crate::data::Split;
use crate::plot::{draw, Panel, Series};
use asymvalley::error::{Error, Result};
use asymvalley::valley::asymmetry::{analyze, AsymmetryConfig};
use asymvalley::valley::bias::{optimal_bias, ShiftLaw};
use asymvalley::valley::compare::{compare, GroupAsymmetry, Verdict};
use asymvalley::valley::directions::{Direction, DirectionKind, DrawOptions, ParamSubset};
use asymvalley::valley::hessian::{top_eigen, HessianConfig, HessianSummary};
use asymvalley::valley::line::line_between;
use asymvalley::valley::model::{LossKind, ProbeData, ProbeModel};
use asymvalley::valley::profile::{
    evaluate, grid_interpolation, grid_through, profile, BnMode, BnPlan, ProfileCost,
};
use asymvalley::valley::report::{write_json, DirectionReport, ProbeReport, Summary};
use asymvalley::valley::shift::estimate_shift_scale;
use asymvalley::valley::torchscript::{load_data, ScriptModel};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use surface::{run_surface, SurfaceSetup};

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

/// Where the probe directions come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectionChoice {
    /// Drawn at random with this law.
    Random(DirectionKind),
    /// The top eigenvectors of the training-loss Hessian (`valley::hessian`).
    Hessian,
}

impl std::str::FromStr for DirectionChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if s == "hessian" {
            return Ok(DirectionChoice::Hessian);
        }
        s.parse::<DirectionKind>()
            .map(DirectionChoice::Random)
            .map_err(|_| {
                Error::invalid(
                    "direction",
                    s,
                    "uniform, gaussian, filter, sign-consistent, sign-inconsistent or hessian",
                )
            })
    }
}

impl DirectionChoice {
    fn name(self) -> &'static str {
        match self {
            DirectionChoice::Random(k) => k.name(),
            DirectionChoice::Hessian => "hessian",
        }
    }
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
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: tch::Device,
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

/// The directions to probe, where they were saved (if anywhere), and whether they were loaded.
///
/// An existing `--directions` file is loaded (checked against the model) and never written; a
/// new one receives the drawn directions. `--save-directions` always writes (overwriting). With
/// neither, drawn directions go next to the JSON report, like the report itself.
fn directions(
    args: &ProbeArgs,
    params: &[asymvalley::valley::model::NamedTensor],
    subset: &ParamSubset,
    model: &ScriptModel,
    data: &ProbeData,
    count: Option<usize>,
    hessian: &mut Option<HessianSummary>,
) -> Result<(Vec<Direction>, Option<PathBuf>, bool)> {
    let existing = args.directions.as_ref().filter(|p| p.exists());
    let (directions, loaded) = match (existing, args.direction) {
        (Some(path), _) => (Direction::load_all(path, params, count)?, true),
        (None, DirectionChoice::Hessian) => {
            let config = HessianConfig {
                count: count.unwrap_or(1),
                iterations: args.hessian_iterations,
                tolerance: args.hessian_tolerance,
                trace_samples: args.trace_samples,
                seed: args.seed,
            };
            let eigen = top_eigen(model, data, args.loss, subset, config)?;
            *hessian = Some(eigen.summary(config));
            (eigen.directions, false)
        }
        (None, DirectionChoice::Random(kind)) => {
            let mut v = Vec::new();
            for i in 0..count.unwrap_or(10) {
                v.push(Direction::random_with(
                    params,
                    kind,
                    subset,
                    args.seed.wrapping_add(i as u64),
                    DrawOptions {
                        filter_keep_1d: args.filter_keep_1d,
                    },
                )?);
            }
            (v, false)
        }
    };
    let target = match (&args.save_directions, existing, &args.directions) {
        (Some(p), _, _) => Some(p.clone()),
        (None, Some(_), _) => None,
        (None, None, Some(p)) => Some(p.clone()),
        (None, None, None) => Some(args.json.with_extension("directions.safetensors")),
    };
    if let Some(path) = &target {
        if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        Direction::save_all(&directions, path)?;
    }
    let reported = target.or_else(|| existing.cloned());
    Ok((directions, reported, loaded))
}

/// Runs `asymvalley probe`.
pub fn run(args: ProbeArgs) -> Result<()> {
    if args.count == Some(0) {
        return Err(Error::invalid("count", 0, "an integer >= 1"));
    }
    // Checked before anything runs: a bad scale used to drop the bias field silently.
    if let Some(s) = args.shift_scale {
        if !(s > 0.0 && s.is_finite()) {
            return Err(Error::invalid("--shift-scale", s, "a finite number > 0"));
        }
    }
    let offsets = if args.between.is_some() {
        grid_interpolation(args.distances, args.division)?
    } else {
        grid_through(args.points, args.radius)?
    };
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

    let mut model = ScriptModel::load(&args.model)?;
    if !args.bn_exclude.is_empty() {
        model.exclude_batch_norm(&args.bn_exclude)?;
    }
    model.to_device(args.device)?;
    let (inputs, targets) = load_data(&args.data, &args.inputs, &args.targets)?;
    let (inputs, targets) = (
        inputs.f_to_device(args.device)?,
        targets.f_to_device(args.device)?,
    );
    let data = ProbeData::from_tensors(&inputs, &targets, args.batch)?;
    let test = match &args.test_data {
        Some(path) => {
            let (x, y) = load_data(path, &args.inputs, &args.targets)?;
            Some(ProbeData::from_tensors(
                &x.f_to_device(args.device)?,
                &y.f_to_device(args.device)?,
                args.batch,
            )?)
        }
        None => None,
    };
    // The line's start is the probed point: the model moves to A before anything is measured.
    let line = match args.between.as_deref() {
        Some([a, b]) => Some(line_between(&model, a, b, &subset)?),
        _ => None,
    };
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
        let plan = BnPlan::new(args.bn, batches)?;
        // Refused here, before any point, when a layer cannot be re-estimated (traced graphs).
        if let Some(xs) = plan.inputs.first() {
            model.check_batch_norm(xs)?;
        }
        plan
    } else {
        if has_bn {
            warn_train_traced(&model, &data);
        }
        BnPlan::stale()
    }
    .with_seed(args.seed);
    if args.surface {
        let setup = SurfaceSetup {
            model: &model,
            data: &data,
            params: &params,
            subset: &subset,
            bn: &bn,
            has_bn,
        };
        return run_surface(&args, &setup, line);
    }

    let mut hessian = None;
    let (directions, dir_path, loaded) = match line {
        Some(l) => {
            let v = vec![l];
            if let Some(p) = &args.save_directions {
                Direction::save_all(&v, p)?;
            }
            (v, args.save_directions.clone(), false)
        }
        None => directions(
            &args,
            &params,
            &subset,
            &model,
            &data,
            args.count,
            &mut hessian,
        )?,
    };
    let mut directions = directions;
    let sharp_count = directions.len();
    if let Some(m) = args.compare_random {
        if args.direction != DirectionChoice::Hessian || loaded || args.between.is_some() {
            return Err(Error::invalid(
                "compare-random",
                m,
                "--direction hessian (eigenvectors computed here, not loaded or a line)",
            ));
        }
        if m == 0 {
            return Err(Error::invalid("compare-random", m, "an integer >= 1"));
        }
        for i in 0..m {
            directions.push(Direction::random_with(
                &params,
                args.compare_kind,
                &subset,
                args.seed.wrapping_add(i as u64),
                DrawOptions {
                    filter_keep_1d: args.filter_keep_1d,
                },
            )?);
        }
    }
    let count = directions.len();
    let kind_name = if args.between.is_some() {
        "line".to_string()
    } else if loaded {
        "loaded".to_string()
    } else {
        args.direction.name().to_string()
    };
    if let Some(h) = &hessian {
        let trace = h.trace.map_or(String::new(), |t| {
            format!(
                "; trace {:.6} ± {:.6} ({} samples)",
                t.trace, t.std_error, t.samples
            )
        });
        print_stdout(&format!(
            "hessian: eigenvalues {:?} ({} Hessian-vector products){trace}\n",
            h.eigenvalues, h.products
        ))?;
    }

    print_stdout(&format!(
        "probe: {} ({} parameters, BatchNorm: {}), {} examples, loss {:.5} at the point; {} {} directions × {} points, bn {}\n",
        args.model.display(),
        params.len(),
        if has_bn { "yes" } else { "no" },
        data.len(),
        center,
        count,
        kind_name,
        offsets.len(),
        bn.mode
    ))?;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new((count * offsets.len()) as u64)
    };
    if let Ok(style) =
        ProgressStyle::with_template("probe [{bar:30}] {pos}/{len} points {elapsed} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut reports = Vec::with_capacity(count);
    let mut cost = ProfileCost::default();
    let evals: Vec<&ProbeData> = std::iter::once(&data).chain(test.as_ref()).collect();
    let mut test_profiles = Vec::with_capacity(count);
    for (i, d) in directions.iter().enumerate() {
        bar.set_message(format!("direction {}/{}", i + 1, count));
        let (mut profs, c) = profile(&model, d, &offsets, &evals, args.loss, &bn, |_| bar.inc(1))?;
        cost.eval_forwards += c.eval_forwards;
        cost.bn_forwards += c.bn_forwards;
        let prof = profs.remove(0);
        test_profiles.push(profs.pop());
        let mut cfg = config.clone();
        cfg.seed = args.seed.wrapping_add(i as u64);
        let asym = analyze(&prof.offsets, &prof.loss, Some(&prof.per_example), &cfg)?;
        reports.push(DirectionReport::new(i, d, &params, asym, None, prof)?);
    }
    // The shift is estimated over all directions at once, so c* waits for the last profile.
    let shift = match test_profiles.iter().all(Option::is_some) && test.is_some() {
        true => {
            let pairs: Vec<(&[f64], &[f64])> = reports
                .iter()
                .zip(&test_profiles)
                .filter_map(|(r, t)| t.as_ref().map(|t| (&r.profile.loss[..], &t.loss[..])))
                .collect();
            let span = offsets[offsets.len() - 1] - offsets[0];
            Some(estimate_shift_scale(&offsets, &pairs, span / 4.0)?)
        }
        false => None,
    };
    let scale = args
        .shift_scale
        .or(shift.as_ref().map(|s| s.scale).filter(|s| *s > 0.0));
    for (r, t) in reports.iter_mut().zip(test_profiles) {
        r.bias = match (scale, r.asymmetry.fit.as_ref()) {
            (Some(s), Some(fit)) => optimal_bias(fit, args.shift_law, s).ok(),
            _ => None,
        };
        r.shift = shift.as_ref().map(|s| s.shifts[r.index]);
        r.test_profile = t;
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
    let comparison = match args.compare_random {
        Some(_) => {
            let (sharp, random) = reports.split_at(sharp_count);
            let sharp: Vec<&DirectionReport> = sharp.iter().collect();
            let random: Vec<&DirectionReport> = random.iter().collect();
            Some(compare(&sharp, &random, args.seed)?)
        }
        None => None,
    };
    if let Some(c) = &comparison {
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
    let summary = Summary::of(&reports);
    table += &format!(
        "{} of {} directions asymmetric; median |ln R| = {:.3}\n",
        summary.asymmetric, summary.directions, summary.median_abs_log_ratio
    );
    if let Some(s) = &shift {
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
        test_data: args.test_data.as_ref().map(|p| p.display().to_string()),
        hessian,
        comparison,
        shift,
        examples: data.len(),
        loss: match args.loss {
            LossKind::CrossEntropy => "cross-entropy".into(),
            LossKind::Mse => "mse".into(),
        },
        bn: bn.mode.to_string(),
        has_batch_norm: has_bn,
        radius: offsets.iter().fold(0.0f64, |m, t| m.max(t.abs())),
        points: offsets.len(),
        config,
        directions_file: dir_path.map(|p| p.display().to_string()),
        directions_loaded: loaded,
        between: args
            .between
            .as_ref()
            .map(|v| v.iter().map(|p| p.display().to_string()).collect()),
        cost,
        summary,
        directions: reports,
    };
    write_json(&args.json, &report)?;
    table += &format!("report: {}\n", args.json.display());
    print_stdout(&table)
}

/// Under `--bn stale` a train-mode trace is not refused (its profile is a loss with batch
/// statistics, which may be what is wanted) but said aloud. The measurement is best effort: a
/// model that cannot run a train-mode forward on the first batch is not checked.
fn warn_train_traced(model: &ScriptModel, data: &ProbeData) {
    let Some((xs, _)) = data.batches.first() else {
        return;
    };
    if let Ok(layers) = model.batch_norm_behaviour(xs) {
        for b in layers {
            if b.updates_in_eval || (b.updates_in_train && !b.uses_running_stats) {
                eprintln!(
                    "warning: BatchNorm layer `{}` normalizes with batch statistics even in eval \
                     mode (a model traced in train mode does); --bn stale then measures the loss \
                     with batch statistics",
                    b.layer
                );
            }
        }
    }
}

/// `cpu`, `cuda` (device 0) or `cuda:N`; availability is checked when the model moves.
fn parse_device(s: &str) -> std::result::Result<tch::Device, String> {
    match s {
        "cpu" => Ok(tch::Device::Cpu),
        "cuda" => Ok(tch::Device::Cuda(0)),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|i| i.parse::<usize>().ok())
            .map(tch::Device::Cuda)
            .ok_or_else(|| format!("`{s}`: expected cpu, cuda or cuda:N")),
    }
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
