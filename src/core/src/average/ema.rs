//! Exponential moving average with the decay warm-ups users know from TensorFlow, timm and
//! ema-pytorch.
//!
//! `w̄ ← decay·w̄ + (1 − decay)·θ`, i.e. a lerp toward θ with weight `1 − decay`. With a fixed decay
//! d and the first update copying θ₀, after k more updates `w̄ = dᵏθ₀ + Σⱼ₌₁ᵏ (1−d)dᵏ⁻ʲθⱼ`.
//!
//! A decay of 0.9999 applied to a bf16 shadow never moves it (the step `(1−d)(θ−w̄)` is below half
//! a bf16 ulp), so the averager always keeps half-precision models' averages in fp32.
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// How the decay grows during the first steps of averaging.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Warmup {
    /// The fixed decay from the first averaging step on.
    None,
    /// TensorFlow `ExponentialMovingAverage(num_updates=t)`: `min(decay, (1+t)/(10+t))`.
    TfStyle,
    /// timm `ModelEmaV3` / ema-pytorch: `clamp(1 − (1 + t/γ)^(−p), min_decay, decay)`.
    /// γ = 1, p = 2/3 suits long runs; p = 3/4 short ones (ema-pytorch's advice).
    Power {
        /// γ (`inv_gamma` in ema-pytorch, `warmup_gamma` in timm), > 0.
        gamma: f64,
        /// p (`power` / `warmup_power`), > 0.
        power: f64,
        /// The lower clamp (`min_value` / `min_decay`), in [0, decay].
        min_decay: f64,
    },
}

/// An exponential moving average's decay and warm-up.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmaConfig {
    /// The decay once warmed up, in (0, 1).
    pub decay: f64,
    /// The warm-up.
    pub warmup: Warmup,
}

impl EmaConfig {
    /// A fixed-decay EMA.
    pub fn new(decay: f64) -> Self {
        EmaConfig {
            decay,
            warmup: Warmup::None,
        }
    }

    /// Checks the ranges: decay in (0, 1), γ > 0, p > 0, min_decay in [0, decay].
    pub fn validate(&self) -> Result<()> {
        if !(self.decay > 0.0 && self.decay < 1.0) {
            return Err(Error::invalid(
                "decay",
                self.decay,
                "a number in the open interval (0, 1)",
            ));
        }
        if let Warmup::Power {
            gamma,
            power,
            min_decay,
        } = self.warmup
        {
            if !(gamma > 0.0 && gamma.is_finite()) {
                return Err(Error::invalid("warmup_gamma", gamma, "a finite number > 0"));
            }
            if !(power > 0.0 && power.is_finite()) {
                return Err(Error::invalid("warmup_power", power, "a finite number > 0"));
            }
            if !(0.0..=self.decay).contains(&min_decay) {
                return Err(Error::invalid(
                    "min_decay",
                    min_decay,
                    format!("a number in [0, decay = {}]", self.decay),
                ));
            }
        }
        Ok(())
    }

    /// The decay at averaging step `t` (t = 0 is the first step at which averaging is allowed).
    ///
    /// ```
    /// use asymvalley::average::{EmaConfig, Warmup};
    /// let tf = EmaConfig { decay: 0.999, warmup: Warmup::TfStyle };
    /// assert_eq!(tf.decay_at(0), 0.1);            // (1+0)/(10+0)
    /// assert_eq!(tf.decay_at(1_000_000), 0.999);  // capped
    /// ```
    pub fn decay_at(&self, t: u64) -> f64 {
        let t = t as f64;
        match self.warmup {
            Warmup::None => self.decay,
            Warmup::TfStyle => self.decay.min((1.0 + t) / (10.0 + t)),
            Warmup::Power {
                gamma,
                power,
                min_decay,
            } => (1.0 - (1.0 + t / gamma).powf(-power)).clamp(min_decay, self.decay),
        }
    }
}
