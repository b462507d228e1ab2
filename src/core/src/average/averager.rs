//! The one place that walks a model's variables: a tch `VarStore` and its running average.
//!
//! Variables are taken in sorted-name order (the VarStore map is a `HashMap`, whose order changes
//! from run to run). Trainable variables are parameters and are averaged; non-trainable floating
//! variables (BatchNorm running statistics) are averaged when `average_buffers` is set and copied
//! otherwise; integer variables (`num_batches_tracked`) are always copied, never averaged.
//! Counters are host integers, so an update never synchronizes the device.
use super::flat::{FlatStorage, VarSpec};
use super::rule::{Action, AveragerConfig};
use crate::error::{Error, Result};
use crate::var_store::{sorted_variables, Vars};
use std::collections::HashMap;
use tch::{nn::VarStore, Tensor};

/// How a variable takes part in averaging.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A trainable floating-point variable: averaged.
    Parameter,
    /// A non-trainable floating-point variable: averaged if `average_buffers`, else copied.
    FloatBuffer,
    /// A non-floating variable: copied.
    IntegerBuffer,
}

/// A variable the averager tracks.
#[derive(Clone, Debug)]
pub struct TrackedVar {
    /// The VarStore name (`layer.weight`).
    pub name: String,
    /// How it takes part.
    pub role: Role,
    /// Shape, dtype, device.
    pub spec: VarSpec,
    /// Whether it is averaged (else copied).
    pub averaged: bool,
}

/// A running average (SWA or EMA) of a `VarStore`'s variables.
///
/// ```
/// use asymvalley::average::{Averager, AveragerConfig};
/// use tch::{nn, Device, Kind, Tensor};
/// let vs = nn::VarStore::new(Device::Cpu);
/// let mut w = vs.root().zeros("w", &[3]);
/// let mut swa = Averager::new(&vs, AveragerConfig::swa())?;
/// for k in 1..=3 {
///     tch::no_grad(|| { let _ = w.fill_(k as f64); });
///     swa.update(&vs)?;
/// }
/// assert_eq!(swa.averaged("w").unwrap(), Tensor::from_slice(&[2.0f32, 2.0, 2.0]));
/// # Ok::<(), asymvalley::Error>(())
/// ```
#[derive(Debug)]
pub struct Averager {
    pub(crate) config: AveragerConfig,
    pub(crate) vars: Vec<TrackedVar>,
    /// Indices (into `vars`) of the averaged variables, in order; `averages` is indexed likewise.
    pub(crate) averaged_idx: Vec<usize>,
    pub(crate) averages: FlatStorage,
    /// Indices of the copied variables, and their copies (model dtype).
    pub(crate) copied_idx: Vec<usize>,
    pub(crate) copies: Vec<Tensor>,
    pub(crate) steps: u64,
    pub(crate) n_averaged: u64,
    /// True once the average holds a model state (after the first copy or mirror).
    pub(crate) filled: bool,
    /// The model's own weights while the average is swapped in.
    backup: Option<Vec<Tensor>>,
}

fn spec_of(t: &Tensor) -> VarSpec {
    VarSpec {
        shape: t.size(),
        kind: t.kind(),
        device: t.device(),
    }
}

impl Averager {
    /// Tracks every variable of `vs`; allocates the average (zeros until the first update).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the configuration is out of range, or the VarStore is empty.
    pub fn new(vs: &VarStore, config: AveragerConfig) -> Result<Self> {
        config.validate()?;
        let vars = sorted_variables(vs, Vars::All);
        if vars.is_empty() {
            return Err(Error::invalid(
                "vs",
                "an empty VarStore",
                "a VarStore with at least one variable",
            ));
        }
        let mut tracked = Vec::with_capacity(vars.len());
        for (name, t) in &vars {
            let role = if !t.is_floating_point() {
                Role::IntegerBuffer
            } else if t.requires_grad() {
                Role::Parameter
            } else {
                Role::FloatBuffer
            };
            let averaged = match role {
                Role::Parameter => true,
                Role::FloatBuffer => config.average_buffers,
                Role::IntegerBuffer => false,
            };
            tracked.push(TrackedVar {
                name: name.clone(),
                role,
                spec: spec_of(t),
                averaged,
            });
        }
        let averaged_idx: Vec<usize> = (0..tracked.len())
            .filter(|&i| tracked[i].averaged)
            .collect();
        let copied_idx: Vec<usize> = (0..tracked.len())
            .filter(|&i| !tracked[i].averaged)
            .collect();
        let specs: Vec<VarSpec> = averaged_idx
            .iter()
            .map(|&i| tracked[i].spec.clone())
            .collect();
        let averages = FlatStorage::new(&specs)?;
        let mut copies = Vec::with_capacity(copied_idx.len());
        for &i in &copied_idx {
            copies.push(vars[i].1.f_detach_copy()?);
        }
        Ok(Averager {
            config,
            vars: tracked,
            averaged_idx,
            averages,
            copied_idx,
            copies,
            steps: 0,
            n_averaged: 0,
            filled: false,
            backup: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AveragerConfig {
        &self.config
    }

    /// The tracked variables, in sorted-name order.
    pub fn variables(&self) -> &[TrackedVar] {
        &self.vars
    }

    /// The number of `update` calls so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The number of snapshots averaged so far (the first copy counts as one).
    pub fn n_averaged(&self) -> u64 {
        self.n_averaged
    }

    /// The flat storage of the averaged variables (one buffer per device and dtype).
    pub fn storage(&self) -> &FlatStorage {
        &self.averages
    }

    /// The current average of variable `name` (fp32 for half-precision models), or the copy of a
    /// copied variable. A shallow handle: it changes with later updates.
    pub fn averaged(&self, name: &str) -> Option<Tensor> {
        let i = self.vars.iter().position(|v| v.name == name)?;
        if let Some(k) = self.averaged_idx.iter().position(|&j| j == i) {
            return self.averages.view(k).map(|t| t.shallow_clone());
        }
        let k = self.copied_idx.iter().position(|&j| j == i)?;
        Some(self.copies[k].shallow_clone())
    }

    /// The model's variables in the averager's order, after checking that every name, shape,
    /// dtype and device matches what the averager tracks.
    pub fn model_variables(&self, vs: &VarStore) -> Result<Vec<Tensor>> {
        let mut map: HashMap<String, Tensor> = vs.variables();
        let mut out = Vec::with_capacity(self.vars.len());
        for v in &self.vars {
            let t = map.remove(&v.name).ok_or_else(|| Error::MissingVariable {
                name: v.name.clone(),
                missing_from: "the model (it is in the averager)",
            })?;
            check_matches(&v.name, &v.spec, &spec_of(&t))?;
            out.push(t);
        }
        if let Some(extra) = map.keys().min() {
            return Err(Error::MissingVariable {
                name: extra.clone(),
                missing_from: "the averager (it is in the model)",
            });
        }
        Ok(out)
    }

    fn split(&self, model: &[Tensor]) -> (Vec<Tensor>, Vec<Tensor>) {
        let pick = |idx: &[usize]| {
            idx.iter()
                .map(|&i| model[i].shallow_clone())
                .collect::<Vec<_>>()
        };
        (pick(&self.averaged_idx), pick(&self.copied_idx))
    }

    fn refuse_while_swapped(&self, op: &'static str) -> Result<()> {
        if self.backup.is_some() {
            return Err(Error::invalid(
                op,
                "called while the average is swapped into the model",
                "swap_out first",
            ));
        }
        Ok(())
    }

    /// One training step's update: copy, average, or nothing, as [`AveragerConfig::action`] says.
    ///
    /// # Errors
    /// A mismatch between the model and the tracked variables (nothing is modified), or a call
    /// while the average is swapped in.
    pub fn update(&mut self, vs: &VarStore) -> Result<()> {
        self.refuse_while_swapped("update")?;
        let action = self.config.action(self.steps, self.n_averaged);
        if action != Action::Skip {
            let model = self.model_variables(vs)?;
            let (averaged, copied) = self.split(&model);
            let _guard = tch::no_grad_guard();
            match action {
                Action::Skip => {}
                Action::Mirror | Action::Copy => self.averages.copy_from(&averaged)?,
                Action::Lerp { weight } => self.averages.lerp_(&averaged, weight)?,
            }
            crate::shim::foreach_copy_(&self.copies, &copied)?;
            self.filled = true;
            if matches!(action, Action::Copy | Action::Lerp { .. }) {
                self.n_averaged += 1;
            }
        }
        self.steps += 1;
        Ok(())
    }

    fn require_filled(&self, op: &'static str) -> Result<()> {
        if !self.filled {
            return Err(Error::invalid(
                op,
                "called before any update",
                "at least one update that averaged or copied",
            ));
        }
        Ok(())
    }

    /// Writes the average into the model (converted to the model's dtypes); copied variables get
    /// their copies.
    pub fn copy_to(&self, vs: &VarStore) -> Result<()> {
        self.require_filled("copy_to")?;
        let model = self.model_variables(vs)?;
        let (averaged, copied) = self.split(&model);
        let _guard = tch::no_grad_guard();
        self.averages.copy_into(&averaged)?;
        crate::shim::foreach_copy_(&copied, &self.copies)
    }

    /// Writes the flat-side-biased average `w̄ + β·(w̄ − w)` into the model, where the anchor `w`
    /// is the model's current weights (e.g. the last SGD iterate). β = 0 is [`copy_to`](Self::copy_to).
    pub fn write_biased(&self, vs: &VarStore, beta: f64) -> Result<()> {
        super::bias::validate_beta(beta)?;
        self.require_filled("write_biased")?;
        let model = self.model_variables(vs)?;
        let (averaged, copied) = self.split(&model);
        let _guard = tch::no_grad_guard();
        self.averages.biased_into(&averaged, &averaged, beta)?;
        crate::shim::foreach_copy_(&copied, &self.copies)
    }

    /// Saves the model's weights and writes the average into the model, for evaluation.
    pub fn swap_in(&mut self, vs: &VarStore) -> Result<()> {
        self.refuse_while_swapped("swap_in")?;
        self.require_filled("swap_in")?;
        let model = self.model_variables(vs)?;
        let mut backup = Vec::with_capacity(model.len());
        for t in &model {
            backup.push(t.f_detach_copy()?);
        }
        self.copy_to(vs)?;
        self.backup = Some(backup);
        Ok(())
    }

    /// Restores the model's own weights saved by [`swap_in`](Self::swap_in).
    pub fn swap_out(&mut self, vs: &VarStore) -> Result<()> {
        let Some(backup) = self.backup.as_ref() else {
            return Err(Error::invalid(
                "swap_out",
                "called without a swap_in",
                "swap_in first",
            ));
        };
        let model = self.model_variables(vs)?;
        let _guard = tch::no_grad_guard();
        crate::shim::foreach_copy_(&model, backup)?;
        self.backup = None;
        Ok(())
    }

    /// True while the average is swapped into the model.
    pub fn is_swapped_in(&self) -> bool {
        self.backup.is_some()
    }
}

/// Checks that a found variable has the tracked shape, dtype and device.
pub(crate) fn check_matches(name: &str, want: &VarSpec, got: &VarSpec) -> Result<()> {
    let mismatch = |what, got: String, expected: String| Error::Mismatch {
        what,
        name: name.to_string(),
        got,
        expected,
    };
    if got.shape != want.shape {
        return Err(mismatch(
            "shape of variable",
            format!("{:?}", got.shape),
            format!("{:?}", want.shape),
        ));
    }
    if got.kind != want.kind {
        return Err(mismatch(
            "dtype of variable",
            format!("{:?}", got.kind),
            format!("{:?}", want.kind),
        ));
    }
    if got.device != want.device {
        return Err(mismatch(
            "device of variable",
            format!("{:?}", got.device),
            format!("{:?}", want.device),
        ));
    }
    Ok(())
}
