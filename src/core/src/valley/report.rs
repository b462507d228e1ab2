//! The detector's JSON report (serde): one entry per direction with its profile and verdict.
use super::asymmetry::{Asymmetry, AsymmetryConfig, ValleyClass};
use super::bias::ValleyBias;
use super::profile::{Profile, ProfileCost};
use crate::error::Result;
use std::path::Path;

/// One probed direction.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DirectionReport {
    /// Index in the probe (the key of its tensors in the saved directions file: `d{index}/…`).
    pub index: usize,
    /// How it was drawn.
    pub kind: String,
    /// Its seed.
    pub seed: u64,
    /// The parameter subset it moves.
    pub params: String,
    /// Entries moved.
    pub moved: i64,
    /// Its L2 norm.
    pub norm: f64,
    /// Fraction of moved entries with the sign of their weight (Li et al. 2024).
    pub sign_consistency: f64,
    /// R at the headline radius.
    pub rise_ratio: f64,
    /// +1 when +t is flat, −1 when −t is, 0 when neither.
    pub flat_side: i8,
    /// `flat`, `sharp`, `asymmetric` or `slope`.
    pub class: ValleyClass,
    /// Everything measured.
    pub asymmetry: Asymmetry,
    /// The theorem-optimal bias along this direction, when a shift scale was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bias: Option<ValleyBias>,
    /// The profile.
    pub profile: Profile,
    /// The held-out profile, when held-out data was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_profile: Option<Profile>,
    /// The shift δ from the training to the held-out profile (`L_test(t) ≈ L_train(t + δ)`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shift: Option<f64>,
}

impl DirectionReport {
    /// The report of direction `index` (`direction`, probed around `params`), from its profile,
    /// its asymmetry analysis and, when a shift scale was given, its theorem-optimal bias.
    pub fn new(
        index: usize,
        direction: &super::directions::Direction,
        params: &[super::model::NamedTensor],
        asymmetry: Asymmetry,
        bias: Option<ValleyBias>,
        profile: Profile,
    ) -> Result<Self> {
        Ok(DirectionReport {
            index,
            kind: direction.kind.clone(),
            seed: direction.seed,
            params: direction.subset.clone(),
            moved: direction.moved,
            norm: direction.norm,
            sign_consistency: direction.sign_consistency(params)?,
            rise_ratio: asymmetry.rise_ratio,
            flat_side: asymmetry.flat_side,
            class: asymmetry.class,
            asymmetry,
            bias,
            profile,
            test_profile: None,
            shift: None,
        })
    }
}

/// Summary over directions.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    /// Directions probed.
    pub directions: usize,
    /// How many were classified asymmetric / flat / sharp.
    pub asymmetric: usize,
    /// Flat.
    pub flat: usize,
    /// Sharp.
    pub sharp: usize,
    /// On a slope (monotone profile, no minimum inside the grid).
    pub slope: usize,
    /// Fraction asymmetric.
    pub fraction_asymmetric: f64,
    /// Median |ln R|.
    pub median_abs_log_ratio: f64,
}

impl Summary {
    /// Counts classes and the median |ln R|.
    pub fn of(directions: &[DirectionReport]) -> Self {
        let count = |c| directions.iter().filter(|d| d.class == c).count();
        let mut logs: Vec<f64> = directions
            .iter()
            .map(|d| d.asymmetry.log_rise_ratio.abs())
            .collect();
        logs.sort_by(f64::total_cmp);
        let median = if logs.is_empty() {
            0.0
        } else if logs.len() % 2 == 1 {
            logs[logs.len() / 2]
        } else {
            0.5 * (logs[logs.len() / 2 - 1] + logs[logs.len() / 2])
        };
        let n = directions.len();
        Summary {
            directions: n,
            asymmetric: count(ValleyClass::Asymmetric),
            flat: count(ValleyClass::Flat),
            sharp: count(ValleyClass::Sharp),
            slope: count(ValleyClass::Slope),
            fraction_asymmetric: if n == 0 {
                0.0
            } else {
                count(ValleyClass::Asymmetric) as f64 / n as f64
            },
            median_abs_log_ratio: median,
        }
    }
}

/// The report of `asymvalley probe`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProbeReport {
    /// The model file.
    pub model: String,
    /// The data file.
    pub data: String,
    /// The held-out data file, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_data: Option<String>,
    /// The shift scale estimated from train vs held-out profiles, when held-out data was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shift: Option<super::shift::ShiftEstimate>,
    /// The Hessian's eigenvalues (direction i is eigenvector i) and trace, for `hessian` directions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hessian: Option<super::hessian::HessianSummary>,
    /// `--compare-random`: the eigenvectors' asymmetry against random directions'.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comparison: Option<super::compare::SharpVsRandom>,
    /// Examples scored.
    pub examples: i64,
    /// `cross-entropy` or `mse`.
    pub loss: String,
    /// BatchNorm mode at each point.
    pub bn: String,
    /// Whether the model has BatchNorm layers.
    pub has_batch_norm: bool,
    /// The probe radius and points.
    pub radius: f64,
    /// Grid points per profile.
    pub points: usize,
    /// Thresholds used.
    pub config: AsymmetryConfig,
    /// Where the directions were saved, or loaded from (safetensors, `d{index}/{parameter}`).
    pub directions_file: Option<String>,
    /// The two checkpoints `[A, B]` of a line probe (t = 0 at A, t = 1 at B).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub between: Option<Vec<String>>,
    /// True when the directions were loaded from `directions_file` rather than drawn.
    pub directions_loaded: bool,
    /// Forward passes spent.
    pub cost: ProfileCost,
    /// Summary over directions.
    pub summary: Summary,
    /// One entry per direction.
    pub directions: Vec<DirectionReport>,
}

/// Writes any serializable report as pretty JSON, atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
    }
    crate::checkpoint::write_atomically(path, serde_json::to_string_pretty(value)?.as_bytes())
}
