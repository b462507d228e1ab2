//! Random directions through a solution (the paper's U(0,1) probes, and Gaussian as a control):
//! the training loss along unit-norm directions on `[−radius, radius]`, BatchNorm re-estimated
//! at every point for a network that has it, each profile classified by the detector.
use crate::data::Split;
use crate::model::Network;
use crate::train::input_batches;
use asymvalley::error::Result;
use asymvalley::valley::asymmetry::{analyze, AsymmetryConfig, ValleyClass};
use asymvalley::valley::directions::{Direction, DirectionKind, ParamSubset};
use asymvalley::valley::model::{LossKind, ProbeModel, TchModel};
use asymvalley::valley::profile::{profile, BnPlan};
use serde::Serialize;
use tch::nn::VarStore;

/// The probe settings.
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

/// What one direction showed.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DirectionOutcome {
    /// The detector's class.
    pub class: ValleyClass,
    /// The rise ratio R = rise(+r)/rise(−r).
    pub rise_ratio: f64,
    /// |ln R|.
    pub abs_log_ratio: f64,
    /// The profile's offsets and training losses (for figures).
    pub curve: Vec<(f64, f64)>,
}

/// Probes `settings.count` directions around the current point of `net`.
pub fn probe_random<N: Network>(
    vs: &VarStore,
    net: &N,
    train: &Split,
    settings: &ProbeSettings,
    config: &AsymmetryConfig,
    mut on_point: impl FnMut(),
) -> Result<Vec<DirectionOutcome>> {
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
    for i in 0..settings.count {
        let seed = settings.seed.wrapping_add(i as u64);
        let d = Direction::random(&params, settings.kind, &ParamSubset::All, seed)?;
        let (mut profs, _) = profile(
            &model,
            &d,
            &offsets,
            &[&data],
            LossKind::CrossEntropy,
            &bn,
            |_| on_point(),
        )?;
        let prof = profs.remove(0);
        let cfg = AsymmetryConfig {
            seed,
            ..config.clone()
        };
        let a = analyze(&prof.offsets, &prof.loss, Some(&prof.per_example), &cfg)?;
        out.push(DirectionOutcome {
            class: a.class,
            rise_ratio: a.rise_ratio,
            abs_log_ratio: a.log_rise_ratio.abs(),
            curve: prof.offsets.iter().copied().zip(prof.loss).collect(),
        });
    }
    Ok(out)
}

/// Asymmetric directions among `directions`.
pub fn asymmetric_count(directions: &[DirectionOutcome]) -> usize {
    directions
        .iter()
        .filter(|d| d.class == ValleyClass::Asymmetric)
        .count()
}
