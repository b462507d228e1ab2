//! The study: the per-seed pipeline over seeds 0..N, the summary table's findings, and every
//! reported number as median [IQR] over seeds.
use super::facts::SeedFacts;
use super::seed_run::{run_seed, SeedOutcome};
use super::verdict::{finding, Finding, Paper};
use crate::data::Digits;
use asymvalley::error::Result;
use asymvalley::stats::quartiles;
use serde::Serialize;

/// Every setting of the study.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StudyConfig {
    /// Seeds 0..seeds.
    pub seeds: u64,
    /// Training epochs.
    pub epochs: usize,
    /// The epoch from whose end SWA averages.
    pub swa_start: usize,
    /// Initial learning rate of both networks (swa_lr = lr_init/2, restart lr_init/100).
    pub lr_init: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Mini-batch size.
    pub batch: i64,
    /// Restart epochs, all run (official: 50).
    pub after_epochs: usize,
    /// Grid points per unit of t on the line.
    pub division: usize,
    /// U(0,1) directions per network and seed.
    pub directions: usize,
    /// Random-direction profiles span [−radius, radius].
    pub radius: f64,
    /// Points per random-direction profile.
    pub points: usize,
    /// Held-out chunks of the shift estimate.
    pub chunks: usize,
    /// β > 0 of the biased solutions.
    pub betas: Vec<f64>,
    /// CNN channels.
    pub channels: [i64; 2],
}

/// A number over seeds: median and quartiles, and how many seeds had it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Spread {
    /// What it is.
    pub what: String,
    /// `[Q1, median, Q3]` (`None` when no seed had it).
    pub quartiles: Option<[f64; 3]>,
    /// Seeds that had it.
    pub n: usize,
}

impl Spread {
    /// The spread of `values` (missing ones left out).
    pub fn of(what: &str, values: impl IntoIterator<Item = Option<f64>>) -> Result<Spread> {
        let v: Vec<f64> = values.into_iter().flatten().collect();
        Ok(Spread {
            what: what.to_string(),
            quartiles: if v.is_empty() {
                None
            } else {
                Some(quartiles(&v)?)
            },
            n: v.len(),
        })
    }
}

/// The finished study.
#[derive(Clone, Debug, Serialize)]
pub struct Study {
    /// The settings.
    pub config: StudyConfig,
    /// Per seed.
    pub outcomes: Vec<SeedOutcome>,
    /// Per seed, the properties.
    pub facts: Vec<SeedFacts>,
    /// The summary table.
    pub findings: Vec<Finding>,
    /// Numbers with their spread.
    pub numbers: Vec<Spread>,
}

/// The summary table's rows from the per-seed facts (the claim names are the report's).
pub fn findings(facts: &[SeedFacts]) -> Result<Vec<Finding>> {
    let col = |f: fn(&SeedFacts) -> Option<bool>| facts.iter().map(f).collect::<Vec<_>>();
    let pooled = |f: fn(&SeedFacts) -> &Vec<bool>| {
        facts
            .iter()
            .flat_map(|s| f(s).iter().map(|&b| Some(b)))
            .collect::<Vec<_>>()
    };
    Ok(vec![
        finding(
            "SWA's test loss is below SGD's (CNN with BN)",
            Paper::Holds,
            &col(|f| f.swa_beats_sgd_bn),
        )?,
        finding(
            "SWA's test loss is below SGD's (CNN without BN)",
            Paper::Holds,
            &col(|f| f.swa_beats_sgd_plain),
        )?,
        finding(
            "the `sgd_after_swa.py` rule selects an epoch",
            Paper::Holds,
            &col(|f| f.rule_fires),
        )?,
        finding(
            "the SWA→SGD line is asymmetric with SWA on its flat side",
            Paper::Holds,
            &col(|f| f.swa_on_flat_side),
        )?,
        finding(
            "SWA's displacement lies inside the fitted gain region (0, c_max)",
            Paper::Holds,
            &col(|f| f.inside_gain_region),
        )?,
        finding(
            "the chunk shifts are consistent with zero mean (sign test p ≥ 0.05)",
            Paper::Holds,
            &col(|f| f.zero_mean_shift),
        )?,
        finding(
            "more U(0,1) directions are asymmetric with BN than without",
            Paper::Holds,
            &col(|f| f.bn_more_asymmetric),
        )?,
        finding(
            "a U(0,1) direction through SWA is asymmetric (CNN with BN; per direction)",
            Paper::Holds,
            &pooled(|f| &f.bn_directions_asymmetric),
        )?,
        finding(
            "more Gaussian directions are asymmetric with BN than without (control)",
            Paper::NotStated,
            &col(|f| f.bn_more_asymmetric_gaussian),
        )?,
        finding(
            "a Gaussian direction through SWA is asymmetric (control; CNN with BN; per direction)",
            Paper::NotStated,
            &pooled(|f| &f.bn_gaussian_asymmetric),
        )?,
        finding(
            "the test-loss minimum on the line lies between SWA and SGD (0 ≤ t ≤ 1)",
            Paper::NotStated,
            &col(|f| f.test_min_between),
        )?,
        finding(
            "some β > 0 in w̄ + β(w̄ − w_sgd) lowers the test loss below SWA's",
            Paper::NotStated,
            &col(|f| f.beta_helps),
        )?,
    ])
}

/// The numbers reported with their spread.
pub fn numbers(outcomes: &[SeedOutcome]) -> Result<Vec<Spread>> {
    let each = |f: &dyn Fn(&SeedOutcome) -> Option<f64>| outcomes.iter().map(f).collect::<Vec<_>>();
    let asym_fraction = |d: &[super::directions::DirectionOutcome]| {
        (!d.is_empty()).then(|| super::directions::asymmetric_count(d) as f64 / d.len() as f64)
    };
    Ok(vec![
        Spread::of("SGD test loss, BN", each(&|s| Some(s.bn.sgd.test.loss)))?,
        Spread::of("SWA test loss, BN", each(&|s| Some(s.bn.swa.test.loss)))?,
        Spread::of(
            "SGD test accuracy %, BN",
            each(&|s| Some(s.bn.sgd.test.accuracy)),
        )?,
        Spread::of(
            "SWA test accuracy %, BN",
            each(&|s| Some(s.bn.swa.test.accuracy)),
        )?,
        Spread::of(
            "SGD test loss, no BN",
            each(&|s| Some(s.plain.sgd.test.loss)),
        )?,
        Spread::of(
            "SWA test loss, no BN",
            each(&|s| Some(s.plain.swa.test.loss)),
        )?,
        Spread::of(
            "SGD test accuracy %, no BN",
            each(&|s| Some(s.plain.sgd.test.accuracy)),
        )?,
        Spread::of(
            "SWA test accuracy %, no BN",
            each(&|s| Some(s.plain.swa.test.accuracy)),
        )?,
        Spread::of(
            "restart epochs passing the rule",
            each(&|s| Some(s.restart.passing.len() as f64)),
        )?,
        Spread::of(
            "restart epoch selected, the last passing (fired seeds)",
            each(&|s| s.restart.selected.map(|e| (e + 1) as f64)),
        )?,
        Spread::of(
            "line: ‖w_sgd − w_swa‖ (fired seeds)",
            each(&|s| s.line.as_ref().map(|l| l.profiles.distance)),
        )?,
        Spread::of(
            "line: t_min of the training loss",
            each(&|s| s.line.as_ref()?.valley.as_ref().map(|v| v.t_min)),
        )?,
        Spread::of(
            "line: rise ratio R at the training minimum",
            each(&|s| {
                s.line
                    .as_ref()?
                    .valley
                    .as_ref()
                    .map(|v| v.asymmetry.rise_ratio)
            }),
        )?,
        Spread::of(
            "line: t of the test-loss minimum",
            each(&|s| s.line.as_ref().map(|l| l.test_min_t)),
        )?,
        Spread::of(
            "shift scale σ̂ (t units; uncensored seeds)",
            each(&|s| s.line.as_ref()?.shift.usable_scale()),
        )?,
        Spread::of(
            "sign-test p of the chunk shifts (uncensored seeds)",
            each(&|s| {
                s.line
                    .as_ref()
                    .filter(|l| l.shift.at_bound == 0)
                    .map(|l| l.shift.p_value)
            }),
        )?,
        Spread::of(
            "c* (t units from t_min)",
            each(&|s| s.line.as_ref()?.bias.map(|b| b.c_star)),
        )?,
        Spread::of("c_max", each(&|s| s.line.as_ref()?.bias.map(|b| b.c_max)))?,
        Spread::of(
            "SWA's displacement −t_min",
            each(&|s| {
                s.line
                    .as_ref()?
                    .bias
                    .and(s.line.as_ref()?.valley.as_ref().map(|v| -v.t_min))
            }),
        )?,
        Spread::of(
            "fraction of U(0,1) directions asymmetric, BN",
            each(&|s| asym_fraction(&s.bn.uniform)),
        )?,
        Spread::of(
            "fraction of U(0,1) directions asymmetric, no BN",
            each(&|s| asym_fraction(&s.plain.uniform)),
        )?,
        Spread::of(
            "median |ln R| over U(0,1) directions, BN",
            each(&|s| median_abs_log(&s.bn.uniform)),
        )?,
        Spread::of(
            "median |ln R| over U(0,1) directions, no BN",
            each(&|s| median_abs_log(&s.plain.uniform)),
        )?,
        Spread::of(
            "fraction of Gaussian directions asymmetric, BN",
            each(&|s| asym_fraction(&s.bn.gaussian)),
        )?,
        Spread::of(
            "fraction of Gaussian directions asymmetric, no BN",
            each(&|s| asym_fraction(&s.plain.gaussian)),
        )?,
        Spread::of(
            "median |ln R| over Gaussian directions, BN",
            each(&|s| median_abs_log(&s.bn.gaussian)),
        )?,
        Spread::of(
            "median |ln R| over Gaussian directions, no BN",
            each(&|s| median_abs_log(&s.plain.gaussian)),
        )?,
    ])
}

fn median_abs_log(d: &[super::directions::DirectionOutcome]) -> Option<f64> {
    let v: Vec<f64> = d.iter().map(|d| d.abs_log_ratio).collect();
    asymvalley::stats::median(&v).ok()
}

/// Runs seeds `0..config.seeds`; `progress(seed, stage)` after every stage.
pub fn run_study(
    config: &StudyConfig,
    data: &Digits,
    mut progress: impl FnMut(u64, &str),
) -> Result<Study> {
    let mut outcomes = Vec::with_capacity(config.seeds as usize);
    for seed in 0..config.seeds {
        outcomes.push(run_seed(config, data, seed, &mut |stage| {
            progress(seed, stage)
        })?);
    }
    summarize(config.clone(), outcomes)
}

/// The study from finished seeds.
pub fn summarize(config: StudyConfig, outcomes: Vec<SeedOutcome>) -> Result<Study> {
    let facts: Vec<SeedFacts> = outcomes.iter().map(SeedFacts::of).collect();
    Ok(Study {
        findings: findings(&facts)?,
        numbers: numbers(&outcomes)?,
        config,
        outcomes,
        facts,
    })
}
