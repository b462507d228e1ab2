//! The whole probe of a TorchScript model, as `asymvalley probe` and
//! `torch.ops.asymvalley.valley_probe` both run it: one implementation, two front ends.
//!
//! [`run_probe`] takes a loaded model, its data, where the directions come from and a
//! [`ProbeConfig`], and returns the report ([`ProbeReport`], or a [`SurfaceReport`] for a 2-D
//! surface) with the directions it probed. It prints, plots and saves nothing: the caller writes
//! the files and shows progress from the [`ProbeEvent`]s it is sent.
//!
//! The order of the work is fixed, because every step after the first depends on the model's
//! state: BatchNorm exclusions and the device move, the data, the line's start A (the model
//! moves to A before anything is measured), the loss at the point, the BatchNorm plan (refused
//! before any grid point when a layer cannot be re-estimated), the directions, then one profile
//! per direction (`L(w + t·d)` for t on the grid), the shift scale from train vs held-out
//! profiles, c* per direction, and the sharp-vs-random comparison.
use super::asymmetry::analyze;
use super::bias::optimal_bias;
use super::compare::compare;
use super::directions::{Direction, ParamSubset};
use super::hessian::{top_eigen, HessianSummary};
use super::line::{line_through, Checkpoint};
use super::model::{LossKind, NamedTensor, ProbeData, ProbeModel};
use super::profile::{evaluate, profile, BnMode, BnPlan, ProfileCost};
use super::report::{DirectionReport, ProbeReport, Summary};
use super::shift::estimate_shift_scale;
use super::surface::SurfaceReport;
use super::torchscript::ScriptModel;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use tch::Tensor;

pub mod config;
mod surface;

pub use config::{device_name, parse_device, DirectionChoice, ProbeConfig, SubsetChoice};

/// Inputs and targets (first dimension: the example), with the name reports give them.
#[derive(Debug)]
pub struct Dataset {
    /// Model inputs.
    pub inputs: Tensor,
    /// Targets: class indices (cross-entropy) or the output's shape (mse).
    pub targets: Tensor,
    /// How reports name it (a file path, `training data`).
    pub label: String,
}

/// A state dict of the probed model: a safetensors file, or tensors already in memory.
#[derive(Debug)]
pub enum StateSource {
    /// A safetensors file.
    File(PathBuf),
    /// Named tensors (keys as the model names its parameters and buffers).
    Tensors {
        /// How errors and reports name it.
        label: String,
        /// The tensors.
        tensors: Vec<(String, Tensor)>,
    },
}

impl StateSource {
    fn label(&self) -> String {
        match self {
            StateSource::File(p) => p.display().to_string(),
            StateSource::Tensors { label, .. } => label.clone(),
        }
    }

    fn read(&self, model: &dyn ProbeModel) -> Result<Checkpoint> {
        match self {
            StateSource::File(p) => Checkpoint::read(p, model),
            StateSource::Tensors { label, tensors } => Checkpoint::from_named(
                Path::new(label),
                tensors
                    .iter()
                    .map(|(n, t)| (n.clone(), t.shallow_clone()))
                    .collect(),
                model,
            ),
        }
    }
}

/// Where the probe's directions come from.
#[derive(Debug)]
pub enum DirectionSource {
    /// Drawn as [`ProbeConfig::direction`] says (random, or the Hessian's eigenvectors).
    Draw,
    /// An existing directions file (`d{i}/{parameter}`), checked against the model.
    File(PathBuf),
    /// Directions already in memory, named `d{i}/{parameter}` as in a file and checked the same
    /// way (`label` names them in errors and reports).
    Tensors {
        /// How errors and reports name them.
        label: String,
        /// The tensors.
        tensors: Vec<(String, Tensor)>,
    },
    /// The line between two checkpoints `[A, B]` of the model (t = 0 at A, t = 1 at B).
    Line([StateSource; 2]),
}

/// What the probe tells its caller while it runs (for progress bars and warnings).
#[derive(Debug)]
pub enum ProbeEvent<'a> {
    /// Something the caller should say aloud (it changes no number).
    Warning(&'a str),
    /// The Hessian's eigenpairs were computed.
    Hessian(&'a HessianSummary),
    /// The profiles are about to start.
    Started(&'a ProbeStart),
    /// One more grid point is done.
    Point {
        /// Points done so far, over all directions.
        done: usize,
        /// Points in all.
        total: usize,
        /// The direction being profiled (0-based).
        direction: usize,
    },
}

/// What is probed, as announced before the profiles.
#[derive(Clone, Debug)]
pub struct ProbeStart {
    /// Model parameters.
    pub parameters: usize,
    /// Whether the model has BatchNorm layers.
    pub has_batch_norm: bool,
    /// Examples scored.
    pub examples: i64,
    /// The loss at the probed point.
    pub center_loss: f64,
    /// Directions to profile.
    pub directions: usize,
    /// How they were made (`uniform`, …, `hessian`, `loaded`, `line`).
    pub kind: String,
    /// Grid points per profile.
    pub points: usize,
    /// BatchNorm at each point.
    pub bn: BnMode,
}

/// The result of a probe.
#[derive(Debug)]
pub enum ProbeResult {
    /// 1-D profiles, one per direction.
    Profiles(Box<ProbeReport>),
    /// A 2-D surface.
    Surface(Box<SurfaceReport>),
}

/// A probe's report and the directions its source gave (drawn, eigenvectors, loaded, or the line;
/// for a surface, the plane's two), which the caller may save; `compare_random`'s directions
/// are not among them.
#[derive(Debug)]
pub struct ProbeOutcome {
    /// The report.
    pub result: ProbeResult,
    /// The directions, in index order.
    pub directions: Vec<Direction>,
}

/// Directions the caller gave (a file or tensors), loaded when the probe needs them.
pub(super) enum Given<'a> {
    File(&'a Path),
    Tensors(&'a str, &'a [(String, Tensor)]),
}

impl Given<'_> {
    /// How reports name them.
    pub(super) fn label(&self) -> String {
        match self {
            Given::File(p) => p.display().to_string(),
            Given::Tensors(l, _) => l.to_string(),
        }
    }

    fn load(&self, params: &[NamedTensor], count: Option<usize>) -> Result<Vec<Direction>> {
        match self {
            Given::File(p) => Direction::load_all(p, params, count),
            Given::Tensors(l, t) => Direction::from_named(
                Path::new(l),
                t.iter()
                    .map(|(n, x)| (n.clone(), x.shallow_clone()))
                    .collect(),
                params,
                count,
            ),
        }
    }
}

/// Everything `run_probe` has prepared before profiles or a surface branch off.
pub(super) struct Prepared<'a> {
    pub(super) model: &'a ScriptModel,
    pub(super) data: ProbeData,
    pub(super) params: Vec<NamedTensor>,
    pub(super) subset: ParamSubset,
    pub(super) bn: BnPlan,
    pub(super) has_bn: bool,
    /// The loss at the probed point.
    pub(super) center: f64,
    pub(super) config: &'a ProbeConfig,
}

fn loss_name(l: LossKind) -> String {
    match l {
        LossKind::CrossEntropy => "cross-entropy".into(),
        LossKind::Mse => "mse".into(),
    }
}

/// `data`'s rows in `batch`-sized mini-batches, shuffled once by `seed` (the same shuffle at
/// every grid point: common random numbers for BatchNorm re-estimation).
fn shuffled_inputs(inputs: &Tensor, batch: i64, seed: u64) -> Result<Vec<Tensor>> {
    let n = inputs.size().first().copied().unwrap_or(0);
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let mut idx: Vec<i64> = (0..n).collect();
    rand::seq::SliceRandom::shuffle(idx.as_mut_slice(), &mut rng);
    let order = Tensor::from_slice(&idx).f_to_device(inputs.device())?;
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let idx = order.f_narrow(0, start, batch.min(n - start))?;
        out.push(inputs.f_index_select(0, &idx)?);
        start += batch;
    }
    Ok(out)
}

fn to_device(d: &Dataset, device: tch::Device, batch: i64) -> Result<(ProbeData, Tensor)> {
    let x = d.inputs.f_to_device(device)?;
    let y = d.targets.f_to_device(device)?;
    Ok((ProbeData::from_tensors(&x, &y, batch)?, x))
}

/// Under `bn = stale` a train-mode trace is not refused (its profile is a loss with batch
/// statistics, which may be what is wanted) but said aloud. Best effort: a model that cannot
/// run a train-mode forward on the first batch is not checked.
fn warn_train_traced(model: &ScriptModel, data: &ProbeData, event: &mut dyn FnMut(ProbeEvent)) {
    let Some((xs, _)) = data.batches.first() else {
        return;
    };
    if let Ok(layers) = model.batch_norm_behaviour(xs) {
        for b in layers {
            if b.updates_in_eval || (b.updates_in_train && !b.uses_running_stats) {
                event(ProbeEvent::Warning(&format!(
                    "BatchNorm layer `{}` normalizes with batch statistics even in eval \
                     mode (a model traced in train mode does); --bn stale then measures the loss \
                     with batch statistics",
                    b.layer
                )));
            }
        }
    }
}

/// The directions of `source` (not a line) for `count` (None: the kind's default), and whether
/// they were loaded.
pub(super) fn source_directions(
    p: &Prepared,
    file: Option<&Given>,
    count: Option<usize>,
    hessian: &mut Option<HessianSummary>,
) -> Result<(Vec<Direction>, bool)> {
    let c = p.config;
    match (file, c.direction) {
        (Some(given), _) => Ok((given.load(&p.params, count)?, true)),
        (None, DirectionChoice::Hessian) => {
            let h = c.hessian(count.unwrap_or(1));
            let eigen = top_eigen(p.model, &p.data, c.loss, &p.subset, h)?;
            *hessian = Some(eigen.summary(h));
            Ok((eigen.directions, false))
        }
        (None, DirectionChoice::Random(kind)) => {
            let mut v = Vec::new();
            for i in 0..count.unwrap_or(10) {
                v.push(Direction::random_with(
                    &p.params,
                    kind,
                    &p.subset,
                    c.seed.wrapping_add(i as u64),
                    c.draw(),
                )?);
            }
            Ok((v, false))
        }
    }
}

/// Runs the probe (see the module docs) of `model` on `train` (and `test`, profiled along the
/// same directions, from which the shift scale for c* is estimated). The model is left at its
/// probed point (at A for a line); `event` is told of warnings and progress.
pub fn run_probe(
    model: &mut ScriptModel,
    train: &Dataset,
    test: Option<&Dataset>,
    source: DirectionSource,
    config: &ProbeConfig,
    event: &mut dyn FnMut(ProbeEvent),
) -> Result<ProbeOutcome> {
    config.validate()?;
    let is_line = matches!(source, DirectionSource::Line(_));
    if config.surface && test.is_some() {
        return Err(Error::invalid(
            "test-data",
            test.map_or(String::new(), |t| t.label.clone()),
            "no held-out data with a surface (it is measured on the training data only)",
        ));
    }
    let offsets = config.offsets(is_line)?;
    let asym_config = config.asymmetry();
    let subset = config.param_subset()?;

    if !config.bn_exclude.is_empty() {
        model.exclude_batch_norm(&config.bn_exclude)?;
    }
    model.to_device(config.device)?;
    let model: &ScriptModel = model;
    let (data, inputs) = to_device(train, config.device, config.batch)?;
    let test_data = match test {
        Some(t) => Some(to_device(t, config.device, config.batch)?.0),
        None => None,
    };
    // The line's start is the probed point: the model moves to A before anything is measured.
    let (line, between) = match &source {
        DirectionSource::Line([a, b]) => {
            let (ca, cb) = (a.read(model)?, b.read(model)?);
            (
                Some(line_through(model, &ca, &cb, &subset)?),
                Some([a.label(), b.label()]),
            )
        }
        _ => (None, None),
    };
    let (center, _, _) = evaluate(model, &data, config.loss)?;
    let params = model.parameters()?;
    if params.is_empty() {
        return Err(Error::Data {
            path: model.path().to_path_buf(),
            reason: "the model has no parameters to probe".into(),
        });
    }
    // A real direction cannot move an integer tensor (libtorch would fail mid-profile).
    if let Some(p) = params.iter().find(|p| !p.tensor.is_floating_point()) {
        return Err(Error::Data {
            path: model.path().to_path_buf(),
            reason: format!(
                "parameter `{}` has dtype {:?}; probing needs floating-point parameters \
                 (register integer state as a buffer)",
                p.name,
                p.tensor.kind()
            ),
        });
    }
    let has_bn = model.has_batch_norm()?;
    let bn = if has_bn && config.bn != BnMode::Stale {
        let batches = shuffled_inputs(&inputs, config.batch, config.seed)?;
        let plan = BnPlan::new(config.bn, batches)?;
        // Refused here, before any point, when a layer cannot be re-estimated (traced graphs).
        if let Some(xs) = plan.inputs.first() {
            model.check_batch_norm(xs)?;
        }
        plan
    } else {
        if has_bn {
            warn_train_traced(model, &data, event);
        }
        BnPlan::stale()
    }
    .with_seed(config.seed);
    let file = match &source {
        DirectionSource::File(p) => Some(Given::File(p)),
        DirectionSource::Tensors { label, tensors } => Some(Given::Tensors(label, tensors)),
        _ => None,
    };
    let prepared = Prepared {
        model,
        data,
        params,
        subset,
        bn,
        has_bn,
        center,
        config,
    };
    let names = Labels {
        model: model.path().display().to_string(),
        data: train.label.clone(),
        test: test.map(|t| t.label.clone()),
        file: file.as_ref().map(Given::label),
        between,
    };
    if config.surface {
        return surface::run(&prepared, line, file.as_ref(), &names, event);
    }
    profiles(
        &prepared,
        line,
        file.as_ref(),
        &offsets,
        asym_config,
        test_data,
        &names,
        event,
    )
}

/// How the report names the probe's inputs.
pub(super) struct Labels {
    pub(super) model: String,
    pub(super) data: String,
    pub(super) test: Option<String>,
    pub(super) file: Option<String>,
    pub(super) between: Option<[String; 2]>,
}

/// The 1-D branch of [`run_probe`]: one profile per direction, then the report.
#[allow(clippy::too_many_arguments)]
fn profiles(
    p: &Prepared,
    line: Option<Direction>,
    file: Option<&Given>,
    offsets: &[f64],
    asym_config: super::asymmetry::AsymmetryConfig,
    test: Option<ProbeData>,
    names: &Labels,
    event: &mut dyn FnMut(ProbeEvent),
) -> Result<ProbeOutcome> {
    let c = p.config;
    let mut hessian = None;
    let is_line = line.is_some();
    let (source, loaded) = match line {
        Some(l) => (vec![l], false),
        None => source_directions(p, file, c.count, &mut hessian)?,
    };
    let mut extra = Vec::new();
    if let Some(m) = c.compare_random {
        if c.direction != DirectionChoice::Hessian || loaded || is_line {
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
            extra.push(Direction::random_with(
                &p.params,
                c.compare_kind,
                &p.subset,
                c.seed.wrapping_add(i as u64),
                c.draw(),
            )?);
        }
    }
    let sharp_count = source.len();
    let count = sharp_count + extra.len();
    let kind = if is_line {
        "line".to_string()
    } else if loaded {
        "loaded".to_string()
    } else {
        c.direction.name().to_string()
    };
    if let Some(h) = &hessian {
        event(ProbeEvent::Hessian(h));
    }
    event(ProbeEvent::Started(&ProbeStart {
        parameters: p.params.len(),
        has_batch_norm: p.has_bn,
        examples: p.data.len(),
        center_loss: p.center,
        directions: count,
        kind,
        points: offsets.len(),
        bn: p.bn.mode,
    }));
    let total = count * offsets.len();
    let mut done = 0;
    let mut reports = Vec::with_capacity(count);
    let mut cost = ProfileCost::default();
    let evals: Vec<&ProbeData> = std::iter::once(&p.data).chain(test.as_ref()).collect();
    let mut test_profiles = Vec::with_capacity(count);
    for (i, d) in source.iter().chain(&extra).enumerate() {
        let (mut profs, k) = profile(p.model, d, offsets, &evals, c.loss, &p.bn, |_| {
            done += 1;
            event(ProbeEvent::Point {
                done,
                total,
                direction: i,
            });
        })?;
        cost.eval_forwards += k.eval_forwards;
        cost.bn_forwards += k.bn_forwards;
        let prof = profs.remove(0);
        test_profiles.push(profs.pop());
        let mut cfg = asym_config.clone();
        cfg.seed = c.seed.wrapping_add(i as u64);
        let asym = analyze(&prof.offsets, &prof.loss, Some(&prof.per_example), &cfg)?;
        reports.push(DirectionReport::new(i, d, &p.params, asym, None, prof)?);
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
            Some(estimate_shift_scale(offsets, &pairs, span / 4.0)?)
        }
        false => None,
    };
    let scale = c
        .shift_scale
        .or(shift.as_ref().map(|s| s.scale).filter(|s| *s > 0.0));
    for (r, t) in reports.iter_mut().zip(test_profiles) {
        r.bias = match (scale, r.asymmetry.fit.as_ref()) {
            (Some(s), Some(fit)) => optimal_bias(fit, c.shift_law, s).ok(),
            _ => None,
        };
        r.shift = shift.as_ref().map(|s| s.shifts[r.index]);
        r.test_profile = t;
    }
    let comparison = match c.compare_random {
        Some(_) => {
            let (sharp, random) = reports.split_at(sharp_count);
            let sharp: Vec<&DirectionReport> = sharp.iter().collect();
            let random: Vec<&DirectionReport> = random.iter().collect();
            Some(compare(&sharp, &random, c.seed)?)
        }
        None => None,
    };
    let summary = Summary::of(&reports);
    let report = ProbeReport {
        model: names.model.clone(),
        data: names.data.clone(),
        test_data: names.test.clone(),
        hessian,
        comparison,
        shift,
        examples: p.data.len(),
        loss: loss_name(c.loss),
        bn: p.bn.mode.to_string(),
        has_batch_norm: p.has_bn,
        radius: offsets.iter().fold(0.0f64, |m, t| m.max(t.abs())),
        points: offsets.len(),
        config: asym_config,
        directions_file: names.file.clone(),
        directions_loaded: loaded,
        between: names.between.as_ref().map(|b| b.to_vec()),
        cost,
        summary,
        directions: reports,
    };
    Ok(ProbeOutcome {
        result: ProbeResult::Profiles(Box::new(report)),
        directions: source,
    })
}
