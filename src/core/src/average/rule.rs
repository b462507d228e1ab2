//! What one `update` call does, decided on the host from the counters alone.
//!
//! Keeping this decision a pure function of host integers is what lets an update run without a
//! single device synchronization (PyTorch's `AveragedModel` reads `n_averaged` from the device
//! three times per update, in `torch.optim.swa_utils`' own source).
use super::ema::EmaConfig;
use super::swa::swa_weight;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The averaging rule.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Rule {
    /// Equal-weight running mean (SWA).
    Swa,
    /// Exponential moving average.
    Ema(EmaConfig),
}

/// An averager's configuration: the rule, when it runs, and what it averages.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AveragerConfig {
    /// SWA or EMA.
    pub rule: Rule,
    /// The number of `update` calls before averaging starts. Before it, an EMA mirrors the model
    /// (ema-pytorch / timm semantics) and SWA does nothing.
    pub update_after_step: u64,
    /// Average on every `update_every`-th call from `update_after_step` on; ≥ 1.
    pub update_every: u64,
    /// Average floating-point buffers (BatchNorm running statistics) too; when false they are
    /// copied from the model at every averaging step (like `AveragedModel(use_buffers=False)`).
    pub average_buffers: bool,
}

impl AveragerConfig {
    /// Equal-weight SWA from the first update, every update, parameters only.
    pub fn swa() -> Self {
        AveragerConfig {
            rule: Rule::Swa,
            update_after_step: 0,
            update_every: 1,
            average_buffers: false,
        }
    }

    /// Fixed-decay EMA from the first update, every update, parameters only.
    pub fn ema(decay: f64) -> Self {
        AveragerConfig {
            rule: Rule::Ema(EmaConfig::new(decay)),
            ..Self::swa()
        }
    }

    /// Checks every field's range.
    pub fn validate(&self) -> Result<()> {
        if self.update_every == 0 {
            return Err(Error::invalid("update_every", 0, "an integer >= 1"));
        }
        if let Rule::Ema(ema) = self.rule {
            ema.validate()?;
        }
        Ok(())
    }

    /// What the update call made after `steps` earlier calls, with `n_averaged` averages so far, does.
    ///
    /// ```
    /// use asymvalley::average::{Action, AveragerConfig};
    /// let swa = AveragerConfig::swa();
    /// assert_eq!(swa.action(0, 0), Action::Copy);
    /// assert_eq!(swa.action(5, 3), Action::Lerp { weight: 0.25 });
    /// ```
    pub fn action(&self, steps: u64, n_averaged: u64) -> Action {
        if steps < self.update_after_step {
            return match self.rule {
                Rule::Swa => Action::Skip,
                Rule::Ema(_) => Action::Mirror,
            };
        }
        let t = steps - self.update_after_step;
        if t % self.update_every != 0 {
            return Action::Skip;
        }
        if n_averaged == 0 {
            return Action::Copy;
        }
        let weight = match self.rule {
            Rule::Swa => swa_weight(n_averaged),
            Rule::Ema(ema) => 1.0 - ema.decay_at(t),
        };
        Action::Lerp { weight }
    }
}

/// What one update does to the average.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Action {
    /// Nothing.
    Skip,
    /// Copy the model without counting it as an average (EMA before `update_after_step`).
    Mirror,
    /// Copy the model; it is the first averaged snapshot (`n_averaged` becomes 1).
    Copy,
    /// `w̄ ← w̄ + weight·(θ − w̄)`, and `n_averaged += 1`.
    Lerp {
        /// The interpolation weight toward the model.
        weight: f64,
    },
}
