//! The `Averager` class's rule: parsed once from its constructor's arguments into an
//! [`AsvRule`], and asked at every update what to do ([`plan`]), by the same
//! [`AveragerConfig::action`] the Rust [`avcore::average::Averager`] follows.
//!
//! The crate is a cdylib without a test target (a test binary would need an rpath to libtorch,
//! which the library must not carry), so these functions are tested through the class:
//! `tests/python/test_ops.py` (bad configurations, the warmup's closed form),
//! `tests/python/test_averager_reliability.py` (negative pickled counters) and `tests/op_library.rs`.
use crate::abi::{AsvAction, AsvMode, AsvPlan, AsvRule, AsvWarmup};
use avcore::average::{Action, AveragerConfig, EmaConfig, Rule, Warmup};
use avcore::error::{Error, Result};

/// The constructor's arguments as TorchScript passes them.
#[derive(Clone, Copy, Debug)]
pub struct RuleArgs<'a> {
    /// `swa` or `ema`.
    pub mode: &'a str,
    /// `none`, `tf` or `power`.
    pub warmup: &'a str,
    /// The EMA decay.
    pub decay: f64,
    /// The `power` warmup's `inv_gamma`.
    pub inv_gamma: f64,
    /// The `power` warmup's exponent.
    pub power: f64,
    /// The `power` warmup's floor.
    pub min_decay: f64,
    /// Updates before averaging starts (>= 0).
    pub update_after_step: i64,
    /// Average on every `update_every`-th update (>= 1).
    pub update_every: i64,
}

/// Parses and validates the constructor's arguments; the error names the argument.
pub fn parse(args: &RuleArgs) -> Result<AsvRule> {
    let mode = match args.mode {
        "swa" => AsvMode::Swa,
        "ema" => AsvMode::Ema,
        other => {
            return Err(Error::invalid(
                "mode",
                format!("{other:?}"),
                "\"swa\" or \"ema\"",
            ))
        }
    };
    let warmup = match args.warmup {
        "none" => AsvWarmup::None,
        "tf" => AsvWarmup::Tf,
        "power" => AsvWarmup::Power,
        other => {
            return Err(Error::invalid(
                "warmup",
                format!("{other:?}"),
                "\"none\", \"tf\" or \"power\"",
            ))
        }
    };
    let update_after_step = u64::try_from(args.update_after_step).map_err(|_| {
        Error::invalid(
            "update_after_step",
            args.update_after_step,
            "an integer >= 0",
        )
    })?;
    let update_every = u64::try_from(args.update_every)
        .map_err(|_| Error::invalid("update_every", args.update_every, "an integer >= 1"))?;
    let rule = AsvRule {
        mode,
        warmup,
        decay: args.decay,
        inv_gamma: args.inv_gamma,
        power: args.power,
        min_decay: args.min_decay,
        update_after_step,
        update_every,
    };
    config(&rule).validate()?;
    Ok(rule)
}

/// The library's configuration of a rule.
pub fn config(rule: &AsvRule) -> AveragerConfig {
    let warmup = match rule.warmup {
        AsvWarmup::None => Warmup::None,
        AsvWarmup::Tf => Warmup::TfStyle,
        AsvWarmup::Power => Warmup::Power {
            gamma: rule.inv_gamma,
            power: rule.power,
            min_decay: rule.min_decay,
        },
    };
    AveragerConfig {
        rule: match rule.mode {
            AsvMode::Swa => Rule::Swa,
            AsvMode::Ema => Rule::Ema(EmaConfig {
                decay: rule.decay,
                warmup,
            }),
        },
        update_after_step: rule.update_after_step,
        update_every: rule.update_every,
        average_buffers: false,
    }
}

/// What the update after `steps` earlier ones, with `n_averaged` averages so far, does. The
/// counters come from the class (or its pickled state), so negative ones are refused by name.
pub fn plan(rule: &AsvRule, steps: i64, n_averaged: i64) -> Result<AsvPlan> {
    let steps =
        u64::try_from(steps).map_err(|_| Error::invalid("steps", steps, "an integer >= 0"))?;
    let n = u64::try_from(n_averaged)
        .map_err(|_| Error::invalid("n_averaged", n_averaged, "an integer >= 0"))?;
    let (action, weight) = match config(rule).action(steps, n) {
        Action::Skip => (AsvAction::Skip, 0.0),
        Action::Mirror => (AsvAction::Mirror, 1.0),
        Action::Copy => (AsvAction::Copy, 1.0),
        Action::Lerp { weight } => (AsvAction::Lerp, weight),
    };
    Ok(AsvPlan { action, weight })
}
