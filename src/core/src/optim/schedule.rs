//! When the wrapper averages, and which learning rate each tick of training runs with.
//!
//! A *tick* is one optimizer step ([`Unit::Steps`]) or one epoch ([`Unit::Epochs`]). After `c`
//! completed ticks, the wrapper averages when `c ≥ start` and `(c − start) % frequency == 0`: the
//! official `train2.py` rule "after epoch e, if e+1 ≥ swa_start and (e+1−swa_start) % c == 0",
//! whose README run (225 epochs, swa_start 126) averages the ends of epochs 125…224, 100 snapshots.
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// What a schedule counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Every optimizer step is a tick.
    Steps,
    /// Every [`Averaging::end_epoch`](super::Averaging::end_epoch) call is a tick.
    Epochs,
}

/// When to average: from `start` completed ticks on, every `frequency` ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Steps or epochs.
    pub unit: Unit,
    /// The number of completed ticks at the first average; ≥ 1.
    pub start: u64,
    /// Ticks between averages; ≥ 1.
    pub frequency: u64,
    /// The total number of ticks of the run, when known (`epochs` of `train2.py`); `start` must
    /// not lie after it.
    pub end: Option<u64>,
}

impl Schedule {
    /// Checks `start ≥ 1`, `frequency ≥ 1`, and `start ≤ end`.
    pub fn validate(&self) -> Result<()> {
        if self.start == 0 {
            return Err(Error::invalid(
                "start",
                0,
                "an integer >= 1 (the number of completed steps or epochs at the first average)",
            ));
        }
        if self.frequency == 0 {
            return Err(Error::invalid("frequency", 0, "an integer >= 1"));
        }
        if let Some(end) = self.end {
            if self.start > end {
                return Err(Error::invalid(
                    "start",
                    self.start,
                    format!("at most end = {end} (the start lies after the end of training)"),
                ));
            }
        }
        Ok(())
    }

    /// True when the tick that brings the count of completed ticks to `completed` averages.
    pub fn averages_at(&self, completed: u64) -> bool {
        completed >= self.start && (completed - self.start) % self.frequency == 0
    }
}

/// The shape of an annealing from the pre-averaging learning rate to `swa_lr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anneal {
    /// `α(t) = (1 − cos πt)/2`.
    Cosine,
    /// `α(t) = t`.
    Linear,
}

impl Anneal {
    /// `α(t)` for `t` in [0, 1].
    pub fn alpha(self, t: f64) -> f64 {
        match self {
            Anneal::Cosine => (1.0 - (std::f64::consts::PI * t).cos()) / 2.0,
            Anneal::Linear => t,
        }
    }
}

/// The learning rate of every tick.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case")]
pub enum LrPolicy {
    /// `lr` throughout: the wrapper never touches the optimizer's learning rate.
    Keep {
        /// The optimizer's learning rate.
        lr: f64,
    },
    /// `lr` before the first average, `swa_lr` from the tick after it on (the SWA paper's
    /// constant SWA learning rate; torchcontrib's `swa_lr`).
    Constant {
        /// The learning rate before averaging starts.
        lr: f64,
        /// The learning rate through the averaging phase, ≥ 0.
        swa_lr: f64,
    },
    /// `SWALR`: after `k` averaging ticks, `lr + (swa_lr − lr)·α(min(1, k/steps))`, where `k`
    /// counts the averages done so far (`SWALR.step()` called after each average); `steps = 0`
    /// jumps straight to `swa_lr`.
    Annealed {
        /// The learning rate before averaging starts.
        lr: f64,
        /// The learning rate at the end of the annealing, ≥ 0.
        swa_lr: f64,
        /// The number of averaging ticks the annealing lasts (`anneal_epochs`).
        steps: u64,
        /// Cosine or linear.
        shape: Anneal,
    },
    /// The official `train2.py` schedule for the 0-based epoch `e` (ticks must be epochs):
    /// `t = e / swa_start`, `r = swa_lr / lr`; factor 1 for `t ≤ 0.5`, `1 − (1−r)(t−0.5)/0.4`
    /// for `t ≤ 0.9`, `r` after; the learning rate is `lr·factor`.
    Train2 {
        /// `lr_init`.
        lr: f64,
        /// `swa_lr`, ≥ 0.
        swa_lr: f64,
    },
}

fn check_lr(field: &'static str, v: f64) -> Result<()> {
    if !(v.is_finite() && v >= 0.0) {
        return Err(Error::invalid(field, v, "a finite number >= 0"));
    }
    Ok(())
}

impl LrPolicy {
    /// Checks that every learning rate is finite and ≥ 0 (a negative or NaN `swa_lr` is refused).
    pub fn validate(&self, schedule: &Schedule) -> Result<()> {
        match *self {
            LrPolicy::Keep { lr } => check_lr("lr", lr),
            LrPolicy::Constant { lr, swa_lr }
            | LrPolicy::Annealed { lr, swa_lr, .. }
            | LrPolicy::Train2 { lr, swa_lr } => {
                check_lr("lr", lr)?;
                if matches!(self, LrPolicy::Train2 { .. }) && lr <= 0.0 {
                    return Err(Error::invalid(
                        "lr",
                        lr,
                        "a number > 0 (train2 divides by it)",
                    ));
                }
                check_lr("swa_lr", swa_lr)?;
                if matches!(self, LrPolicy::Train2 { .. }) && schedule.unit != Unit::Epochs {
                    return Err(Error::invalid(
                        "unit",
                        "steps",
                        "epochs (the train2.py schedule is per epoch)",
                    ));
                }
                Ok(())
            }
        }
    }

    /// The learning rate of the tick that follows `completed` completed ticks.
    pub fn lr_at(&self, schedule: &Schedule, completed: u64) -> f64 {
        // Averages done so far: the ticks c ≤ completed with schedule.averages_at(c).
        let averages = if completed < schedule.start {
            0
        } else {
            (completed - schedule.start) / schedule.frequency + 1
        };
        match *self {
            LrPolicy::Keep { lr } => lr,
            LrPolicy::Constant { lr, swa_lr } => {
                if averages == 0 {
                    lr
                } else {
                    swa_lr
                }
            }
            LrPolicy::Annealed {
                lr,
                swa_lr,
                steps,
                shape,
            } => {
                if averages == 0 {
                    return lr;
                }
                let t = if steps == 0 {
                    1.0
                } else {
                    (averages as f64 / steps as f64).min(1.0)
                };
                lr + (swa_lr - lr) * shape.alpha(t)
            }
            LrPolicy::Train2 { lr, swa_lr } => {
                lr * train2_factor(completed, schedule.start, swa_lr / lr)
            }
        }
    }
}

/// The `train2.py` learning-rate factor of the 0-based epoch `epoch` with `swa_start` and the
/// ratio `r = swa_lr / lr_init`.
pub fn train2_factor(epoch: u64, swa_start: u64, r: f64) -> f64 {
    let t = epoch as f64 / swa_start as f64;
    if t <= 0.5 {
        1.0
    } else if t <= 0.9 {
        1.0 - (1.0 - r) * (t - 0.5) / 0.4
    } else {
        r
    }
}
