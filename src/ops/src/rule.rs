//! The `Averager` class's rule: parsed once from its constructor's arguments into an
//! [`AsvRule`], and asked at every update what to do ([`plan`]), by the same
//! [`AveragerConfig::action`] the Rust [`avcore::average::Averager`] follows.
//!
//! Tested here (parsing, refusals by name, the plan against the closed forms) and through the
//! class: `tests/python/test_ops.py` (bad configurations, the warmup's closed form),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(mode: &'static str) -> RuleArgs<'static> {
        RuleArgs {
            mode,
            warmup: "none",
            decay: 0.9,
            inv_gamma: 1.0,
            power: 0.75,
            min_decay: 0.0,
            update_after_step: 0,
            update_every: 1,
        }
    }

    fn refusal(a: RuleArgs) -> String {
        match parse(&a) {
            Ok(rule) => panic!("accepted {a:?} as {rule:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn each_bad_argument_is_refused_by_its_name_and_value() {
        let cases: [(RuleArgs, &str, &str); 6] = [
            (
                RuleArgs {
                    mode: "mean",
                    ..args("swa")
                },
                "mode",
                "mean",
            ),
            (
                RuleArgs {
                    warmup: "linear",
                    ..args("ema")
                },
                "warmup",
                "linear",
            ),
            (
                RuleArgs {
                    update_after_step: -1,
                    ..args("swa")
                },
                "update_after_step",
                "-1",
            ),
            (
                RuleArgs {
                    update_every: -2,
                    ..args("swa")
                },
                "update_every",
                "-2",
            ),
            (
                RuleArgs {
                    update_every: 0,
                    ..args("swa")
                },
                "update_every",
                "0",
            ),
            (
                RuleArgs {
                    decay: 1.5,
                    ..args("ema")
                },
                "decay",
                "1.5",
            ),
        ];
        for (a, name, value) in cases {
            let msg = refusal(a);
            assert!(msg.contains(name) && msg.contains(value), "{a:?}: {msg}");
        }
    }

    #[test]
    fn a_parsed_rule_keeps_every_argument() {
        let a = RuleArgs {
            warmup: "power",
            decay: 0.999,
            inv_gamma: 2.0,
            power: 0.5,
            min_decay: 0.1,
            update_after_step: 3,
            update_every: 2,
            ..args("ema")
        };
        let r = parse(&a).unwrap();
        assert_eq!((r.mode, r.warmup), (AsvMode::Ema, AsvWarmup::Power));
        assert_eq!(
            (r.decay, r.inv_gamma, r.power, r.min_decay),
            (0.999, 2.0, 0.5, 0.1)
        );
        assert_eq!((r.update_after_step, r.update_every), (3, 2));
    }

    #[test]
    fn swa_plans_copy_then_the_running_mean_weight() {
        let r = parse(&args("swa")).unwrap();
        let p = |steps, n| plan(&r, steps, n).unwrap();
        assert_eq!(
            p(0, 0),
            AsvPlan {
                action: AsvAction::Copy,
                weight: 1.0
            }
        );
        // The running mean of n + 1 snapshots: the new one has weight 1 / (n + 1).
        for n in 1..20 {
            assert_eq!(
                p(n, n),
                AsvPlan {
                    action: AsvAction::Lerp,
                    weight: 1.0 / (n as f64 + 1.0)
                }
            );
        }
    }

    #[test]
    fn before_update_after_step_swa_skips_and_ema_mirrors() {
        let swa = parse(&RuleArgs {
            update_after_step: 2,
            ..args("swa")
        })
        .unwrap();
        let ema = parse(&RuleArgs {
            update_after_step: 2,
            ..args("ema")
        })
        .unwrap();
        for steps in 0..2 {
            assert_eq!(plan(&swa, steps, 0).unwrap().action, AsvAction::Skip);
            assert_eq!(
                plan(&ema, steps, 0).unwrap(),
                AsvPlan {
                    action: AsvAction::Mirror,
                    weight: 1.0
                }
            );
        }
        assert_eq!(plan(&swa, 2, 0).unwrap().action, AsvAction::Copy);
        assert_eq!(plan(&ema, 2, 0).unwrap().action, AsvAction::Copy);
    }

    #[test]
    fn the_power_warmup_weight_is_one_minus_the_clamped_closed_form() {
        // ema-pytorch's decay at t averaging steps: 1 - (1 + t / inv_gamma)^-power, clamped to
        // [min_decay, decay]; several gammas and powers, so gamma read as 1 / gamma fails.
        for (inv_gamma, power) in [(1.0, 0.75), (2.0, 0.5), (0.5, 2.0 / 3.0), (10.0, 1.0)] {
            let a = RuleArgs {
                warmup: "power",
                decay: 0.995,
                inv_gamma,
                power,
                min_decay: 0.05,
                ..args("ema")
            };
            let r = parse(&a).unwrap();
            for t in [1_i64, 2, 5, 17, 1000, 100_000] {
                let decay = (1.0 - (1.0 + t as f64 / inv_gamma).powf(-power)).clamp(0.05, 0.995);
                let got = plan(&r, t, 1).unwrap();
                assert_eq!(got.action, AsvAction::Lerp);
                assert!(
                    (got.weight - (1.0 - decay)).abs() < 1e-15,
                    "gamma {inv_gamma}, p {power}, t {t}: {got:?}"
                );
            }
        }
    }

    #[test]
    fn negative_counters_are_refused_by_name() {
        let r = parse(&args("swa")).unwrap();
        assert!(plan(&r, -1, 0).unwrap_err().to_string().contains("steps"));
        assert!(plan(&r, 3, -1)
            .unwrap_err()
            .to_string()
            .contains("n_averaged"));
    }
}
