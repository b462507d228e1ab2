//! [`ProbeConfig`]: every setting of a probe that changes its numbers, as one serde value.
//!
//! The command line (`asymvalley probe`) builds it from its flags; the op library
//! (`torch.ops.asymvalley.valley_probe`) reads it from JSON. Field names are the flags' names in
//! snake case (`--bn-exclude` → `bn_exclude`); a missing field takes the flag's default, and an
//! unknown one is refused (a misspelt option must not be ignored silently). Enumerations use the
//! CLI spellings: `"cross-entropy"`, `"k=4"`, `"sign-consistent"`, `"cuda:0"`.
use super::super::asymmetry::AsymmetryConfig;
use super::super::bias::ShiftLaw;
use super::super::directions::{DirectionKind, DrawOptions, ParamSubset};
use super::super::hessian::HessianConfig;
use super::super::model::LossKind;
use super::super::profile::{grid_interpolation, grid_through, BnMode};
use crate::error::{Error, Result};

/// Where the probe directions come from when none are given.
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

impl std::fmt::Display for DirectionChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl DirectionChoice {
    /// The CLI spelling.
    pub fn name(self) -> &'static str {
        match self {
            DirectionChoice::Random(k) => k.name(),
            DirectionChoice::Hessian => "hessian",
        }
    }
}

/// Which parameters directions move, besides [`ProbeConfig::params`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubsetChoice {
    /// Every parameter.
    All,
    /// BatchNorm γ and β only.
    BatchNorm,
    /// Everything but BatchNorm.
    NonBatchNorm,
}

/// A device by its CLI spelling: `cpu`, `cuda` (device 0) or `cuda:N`. Availability is checked
/// when the model moves there.
pub fn parse_device(s: &str) -> Result<tch::Device> {
    match s {
        "cpu" => Ok(tch::Device::Cpu),
        "cuda" => Ok(tch::Device::Cuda(0)),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|i| i.parse::<usize>().ok())
            .map(tch::Device::Cuda)
            .ok_or_else(|| Error::invalid("device", s, "cpu, cuda or cuda:N")),
    }
}

/// The spelling [`parse_device`] reads.
pub fn device_name(d: tch::Device) -> String {
    match d {
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    }
}

/// Serde through `Display`/`FromStr`, for the enums whose CLI spelling is not serde's.
mod text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
        D: Deserializer<'de>,
    {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `tch::Device` as `cpu` / `cuda:N`.
mod device {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &tch::Device, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::device_name(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<tch::Device, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_device(&s).map_err(serde::de::Error::custom)
    }
}

/// Every setting of a probe that changes its numbers (the defaults are the CLI's).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbeConfig {
    /// The loss.
    pub loss: LossKind,
    /// Random directions of a law, or the Hessian's top eigenvectors.
    #[serde(with = "text")]
    pub direction: DirectionChoice,
    /// Number of directions (none: 10 drawn, 1 eigenvector, or every loaded direction).
    pub count: Option<usize>,
    /// Seed of the first direction (direction i uses seed + i), of the bootstrap and of the
    /// BatchNorm batches' shuffle.
    pub seed: u64,
    /// Only parameters whose name matches this regular expression move.
    pub params: Option<String>,
    /// Parameter subset (not together with `params`).
    pub subset: SubsetChoice,
    /// `filter` directions: keep 1-D tensors as `d = w` instead of zeroing them.
    pub filter_keep_1d: bool,
    /// Grid points per profile (made odd so that t = 0 is on the grid).
    pub points: usize,
    /// Profiles span t ∈ [−radius, radius].
    pub radius: f64,
    /// BatchNorm statistics at each point: `stale`, `full` or `k=K`.
    #[serde(with = "text")]
    pub bn: BnMode,
    /// BatchNorm layers (module paths) left out of re-estimation.
    pub bn_exclude: Vec<String>,
    /// Mini-batch size for evaluation and BatchNorm re-estimation.
    pub batch: i64,
    /// Bootstrap resamples of the examples for the intervals (0: none).
    pub bootstrap: usize,
    /// Asymmetric when max(R, 1/R) ≥ this.
    pub ratio_threshold: f64,
    /// Symmetric and flat when both rises are ≤ this.
    pub flat_rise: f64,
    /// Fixed exponent of the two-sided fit (none: fitted).
    pub exponent: Option<f64>,
    /// Shift scale (t units) for the theorem-optimal bias c*; none: estimated from held-out
    /// data when given, else no c*.
    pub shift_scale: Option<f64>,
    /// Law of the shift.
    pub shift_law: ShiftLaw,
    /// `hessian`: most power iterations per eigenvector.
    pub hessian_iterations: usize,
    /// `hessian`: relative change of the eigenvalue that stops the iteration.
    pub hessian_tolerance: f64,
    /// `hessian`: Rademacher samples for Hutchinson's trace (0: none).
    pub trace_samples: usize,
    /// `hessian`: also probe this many random directions and compare the groups.
    pub compare_random: Option<usize>,
    /// The law of the `compare_random` directions.
    pub compare_kind: DirectionKind,
    /// Line probes: grid points before A (and after B).
    pub distances: usize,
    /// Line probes: grid steps from A to B.
    pub division: usize,
    /// A 2-D surface `L(w + a·d1 + b·d2)` instead of 1-D profiles.
    pub surface: bool,
    /// Surface: grid points per axis (made odd).
    pub grid: usize,
    /// Where the model and data live.
    #[serde(with = "device")]
    pub device: tch::Device,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            loss: LossKind::CrossEntropy,
            direction: DirectionChoice::Random(DirectionKind::Uniform),
            count: None,
            seed: 0,
            params: None,
            subset: SubsetChoice::All,
            filter_keep_1d: false,
            points: 21,
            radius: 1.0,
            bn: BnMode::Full,
            bn_exclude: Vec::new(),
            batch: 256,
            bootstrap: 200,
            ratio_threshold: 2.0,
            flat_rise: 0.1,
            exponent: None,
            shift_scale: None,
            shift_law: ShiftLaw::Gaussian,
            hessian_iterations: 100,
            hessian_tolerance: 1e-4,
            trace_samples: 0,
            compare_random: None,
            compare_kind: DirectionKind::Gaussian,
            distances: 20,
            division: 40,
            surface: false,
            grid: 21,
            device: tch::Device::Cpu,
        }
    }
}

impl ProbeConfig {
    /// Reads a JSON object of settings (missing fields take their defaults); the error names
    /// the offending field and what was expected.
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| {
            Error::invalid(
                "config",
                e,
                "a JSON object of probe settings (see ProbeConfig's fields)",
            )
        })
    }

    /// The settings of the analysis of each profile.
    pub fn asymmetry(&self) -> AsymmetryConfig {
        AsymmetryConfig {
            ratio_threshold: self.ratio_threshold,
            flat_rise: self.flat_rise,
            radius: None,
            bootstrap: self.bootstrap,
            confidence: 0.95,
            exponent: self.exponent,
            seed: self.seed,
        }
    }

    /// The settings of the Hessian eigen-solver, for `count` eigenvectors.
    pub fn hessian(&self, count: usize) -> HessianConfig {
        HessianConfig {
            count,
            iterations: self.hessian_iterations,
            tolerance: self.hessian_tolerance,
            trace_samples: self.trace_samples,
            seed: self.seed,
        }
    }

    /// Options of the random draws.
    pub fn draw(&self) -> DrawOptions {
        DrawOptions {
            filter_keep_1d: self.filter_keep_1d,
        }
    }

    /// The parameters directions move.
    pub fn param_subset(&self) -> Result<ParamSubset> {
        if let Some(re) = &self.params {
            if self.subset != SubsetChoice::All {
                return Err(Error::invalid(
                    "params",
                    re,
                    "either --params or --subset, not both",
                ));
            }
            return ParamSubset::pattern(re);
        }
        Ok(match self.subset {
            SubsetChoice::All => ParamSubset::All,
            SubsetChoice::BatchNorm => ParamSubset::BatchNormOnly,
            SubsetChoice::NonBatchNorm => ParamSubset::NonBatchNorm,
        })
    }

    /// The 1-D grid: the line's (`t = 0` at A, `t = 1` at B) or `[−radius, radius]`.
    pub fn offsets(&self, line: bool) -> Result<Vec<f64>> {
        if line {
            grid_interpolation(self.distances, self.division)
        } else {
            grid_through(self.points, self.radius)
        }
    }

    /// Checks what can be checked before anything runs, so that a refused probe touches nothing.
    pub fn validate(&self) -> Result<()> {
        if self.count == Some(0) {
            return Err(Error::invalid("count", 0, "an integer >= 1"));
        }
        // Checked before anything runs: a bad scale used to drop the bias field silently.
        if let Some(s) = self.shift_scale {
            if !(s > 0.0 && s.is_finite()) {
                return Err(Error::invalid("--shift-scale", s, "a finite number > 0"));
            }
        }
        if self.batch < 1 {
            return Err(Error::invalid("batch", self.batch, "an integer >= 1"));
        }
        if self.surface {
            if self.shift_scale.is_some() || self.compare_random.is_some() {
                return Err(Error::invalid(
                    "surface",
                    true,
                    "no --shift-scale or --compare-random with a surface (they score 1-D profiles)",
                ));
            }
            if let Some(c) = self.count.filter(|&c| c != 2) {
                return Err(Error::invalid(
                    "count",
                    c,
                    "2 with --surface (the plane's two directions)",
                ));
            }
        }
        self.asymmetry().validate()?;
        self.param_subset().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_json_is_the_cli_defaults() -> Result<()> {
        let c = ProbeConfig::from_json("{}")?;
        assert_eq!(c, ProbeConfig::default());
        // The CLI's documented defaults (`asymvalley probe --help`), not read back from the struct.
        assert_eq!(
            (c.points, c.radius, c.batch, c.bootstrap),
            (21, 1.0, 256, 200)
        );
        assert_eq!(c.bn, BnMode::Full);
        assert_eq!(c.direction, DirectionChoice::Random(DirectionKind::Uniform));
        Ok(())
    }

    #[test]
    fn cli_spellings_round_trip() -> Result<()> {
        let c = ProbeConfig::from_json(
            r#"{"bn": "k=3", "direction": "hessian", "device": "cuda:1", "loss": "mse",
                "subset": "non-batch-norm", "compare_kind": "sign-consistent"}"#,
        )?;
        assert_eq!(c.bn, BnMode::Batches(3));
        assert_eq!(c.direction, DirectionChoice::Hessian);
        assert_eq!(c.device, tch::Device::Cuda(1));
        assert_eq!(c.loss, LossKind::Mse);
        assert_eq!(c.subset, SubsetChoice::NonBatchNorm);
        assert_eq!(c.compare_kind, DirectionKind::SignConsistent);
        let text = serde_json::to_string(&c)?;
        assert!(text.contains(r#""bn":"k=3""#) && text.contains(r#""device":"cuda:1""#));
        assert_eq!(ProbeConfig::from_json(&text)?, c);
        Ok(())
    }

    #[test]
    fn unknown_or_bad_settings_are_named() {
        let err = |json: &str| match ProbeConfig::from_json(json) {
            Ok(c) => format!("accepted {c:?}"),
            Err(e) => e.to_string(),
        };
        assert!(err(r#"{"pointz": 3}"#).contains("unknown field `pointz`"));
        assert!(err(r#"{"bn": "k=0"}"#).contains("stale, full or k=K"));
        assert!(err(r#"{"device": "tpu"}"#).contains("cpu, cuda or cuda:N"));
        assert!(err(r#"{"direction": "random"}"#).contains("or hessian"));
    }

    #[test]
    fn validate_refuses_before_anything_runs() {
        let refused = |c: ProbeConfig, field: &str| {
            let msg = c
                .validate()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(msg.contains(field), "{field}: {msg}");
        };
        refused(
            ProbeConfig {
                count: Some(0),
                ..Default::default()
            },
            "count",
        );
        refused(
            ProbeConfig {
                shift_scale: Some(-1.0),
                ..Default::default()
            },
            "shift-scale",
        );
        refused(
            ProbeConfig {
                params: Some("a".into()),
                subset: SubsetChoice::BatchNorm,
                ..Default::default()
            },
            "params",
        );
        refused(
            ProbeConfig {
                surface: true,
                count: Some(3),
                ..Default::default()
            },
            "count",
        );
        refused(
            ProbeConfig {
                ratio_threshold: 1.0,
                ..Default::default()
            },
            "ratio_threshold",
        );
    }
}
