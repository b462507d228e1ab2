//! What one seed shows, property by property: `Some(true/false)` where the seed measured it,
//! `None` where it could not (every line property needs the restart rule to have fired).
use super::directions::{asymmetric_count, DirectionOutcome};
use super::gain_region::GainRegion;
use super::seed_run::SeedOutcome;
use super::solution::SolutionResult;
use asymvalley::valley::asymmetry::ValleyClass;
use serde::Serialize;

/// SWA generalizes better than the last SGD iterate: a strictly lower test loss.
pub fn swa_beats_sgd(sgd: &SolutionResult, swa: &SolutionResult) -> bool {
    swa.test.loss < sgd.test.loss
}

/// The per-seed properties behind the summary table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SeedFacts {
    /// SWA's test loss below SGD's, CNN with BatchNorm.
    pub swa_beats_sgd_bn: Option<bool>,
    /// The same without BatchNorm.
    pub swa_beats_sgd_plain: Option<bool>,
    /// The `sgd_after_swa.py` rule selected an epoch.
    pub rule_fires: Option<bool>,
    /// The line's training valley is asymmetric with SWA on its flat side.
    pub swa_on_flat_side: Option<bool>,
    /// The test-loss minimum on the line lies in [0, 1], between SWA and the restarted SGD.
    pub test_min_between: Option<bool>,
    /// SWA's displacement lies inside the fitted gain region (0, c_max).
    pub inside_gain_region: Option<bool>,
    /// The chunk shifts pass the sign test of a zero median (p ≥ 0.05).
    pub zero_mean_shift: Option<bool>,
    /// Some β > 0 in `w̄ + β(w̄ − w_sgd)` has a lower test loss than SWA.
    pub beta_helps: Option<bool>,
    /// More U(0,1) directions are asymmetric around SWA with BatchNorm than without.
    pub bn_more_asymmetric: Option<bool>,
    /// Per U(0,1) direction around the BatchNorm network's SWA: asymmetric or not.
    pub bn_directions_asymmetric: Vec<bool>,
    /// The control: more Gaussian directions asymmetric with BatchNorm than without.
    pub bn_more_asymmetric_gaussian: Option<bool>,
    /// The control: per Gaussian direction around the BatchNorm network's SWA.
    pub bn_gaussian_asymmetric: Vec<bool>,
}

/// More asymmetric directions in `bn` than in `plain` (`None` when either probed none).
fn more_asymmetric(bn: &[DirectionOutcome], plain: &[DirectionOutcome]) -> Option<bool> {
    (!bn.is_empty() && !plain.is_empty()).then(|| asymmetric_count(bn) > asymmetric_count(plain))
}

/// Per direction: the detector classed it asymmetric.
fn each_asymmetric(d: &[DirectionOutcome]) -> Vec<bool> {
    d.iter()
        .map(|d| d.class == ValleyClass::Asymmetric)
        .collect()
}

impl SeedFacts {
    /// Reads the properties off one seed's outcome.
    pub fn of(s: &SeedOutcome) -> SeedFacts {
        let line = s.line.as_ref();
        SeedFacts {
            swa_beats_sgd_bn: Some(swa_beats_sgd(&s.bn.sgd, &s.bn.swa)),
            swa_beats_sgd_plain: Some(swa_beats_sgd(&s.plain.sgd, &s.plain.swa)),
            rule_fires: Some(s.restart.selected.is_some()),
            swa_on_flat_side: line.and_then(|l| l.swa_on_flat_side()),
            test_min_between: line.map(|l| (0.0..=1.0).contains(&l.test_min_t)),
            inside_gain_region: line
                .and_then(|l| l.gain_region())
                .map(|g| g == GainRegion::Inside),
            zero_mean_shift: line.and_then(|l| l.shift.zero_mean_plausible()),
            beta_helps: line.filter(|l| !l.biased.is_empty()).map(|l| {
                l.biased
                    .iter()
                    .any(|(beta, r)| *beta > 0.0 && r.test.loss < s.bn.swa.test.loss)
            }),
            bn_more_asymmetric: more_asymmetric(&s.bn.uniform, &s.plain.uniform),
            bn_directions_asymmetric: each_asymmetric(&s.bn.uniform),
            bn_more_asymmetric_gaussian: more_asymmetric(&s.bn.gaussian, &s.plain.gaussian),
            bn_gaussian_asymmetric: each_asymmetric(&s.bn.gaussian),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::restart::Restart;
    use crate::experiment::seed_run::NetworkOutcome;
    use crate::experiment::study::findings;
    use crate::experiment::verdict::Verdict;
    use crate::train::Evaluation;

    fn result(test_loss: f64) -> SolutionResult {
        let e = |loss| Evaluation {
            loss,
            accuracy: 95.0,
        };
        SolutionResult {
            train: e(0.01),
            test: e(test_loss),
        }
    }

    fn direction(class: ValleyClass) -> DirectionOutcome {
        DirectionOutcome {
            class,
            rise_ratio: 3.0,
            abs_log_ratio: 3f64.ln(),
            curve: vec![],
        }
    }

    /// A seed without a fired restart: SGD/SWA test losses and U(0,1) direction classes given;
    /// the Gaussian directions get the other network's classes, so that a fact read off the
    /// wrong law shows.
    fn seed(
        bn: (f64, f64),
        plain: (f64, f64),
        bn_dirs: &[ValleyClass],
        plain_dirs: &[ValleyClass],
    ) -> SeedOutcome {
        SeedOutcome {
            seed: 0,
            bn: NetworkOutcome {
                sgd: result(bn.0),
                swa: result(bn.1),
                uniform: bn_dirs.iter().map(|&c| direction(c)).collect(),
                gaussian: plain_dirs.iter().map(|&c| direction(c)).collect(),
            },
            plain: NetworkOutcome {
                sgd: result(plain.0),
                swa: result(plain.1),
                uniform: plain_dirs.iter().map(|&c| direction(c)).collect(),
                gaussian: bn_dirs.iter().map(|&c| direction(c)).collect(),
            },
            restart: Restart {
                epochs: vec![],
                passing: vec![],
                selected: None,
            },
            line: None,
        }
    }

    #[test]
    fn swa_beats_sgd_means_a_strictly_lower_test_loss() {
        assert!(swa_beats_sgd(&result(0.30), &result(0.20)));
        assert!(!swa_beats_sgd(&result(0.20), &result(0.30)));
        assert!(!swa_beats_sgd(&result(0.20), &result(0.20)));
    }

    #[test]
    fn facts_follow_the_numbers_and_need_the_restart_for_the_line() {
        use ValleyClass::*;
        let s = seed(
            (0.30, 0.20),
            (0.10, 0.15),
            &[Asymmetric, Sharp],
            &[Sharp, Sharp],
        );
        let f = SeedFacts::of(&s);
        assert_eq!(f.swa_beats_sgd_bn, Some(true));
        assert_eq!(f.swa_beats_sgd_plain, Some(false));
        assert_eq!(f.rule_fires, Some(false));
        assert_eq!(f.bn_more_asymmetric, Some(true));
        assert_eq!(f.bn_directions_asymmetric, vec![true, false]);
        assert_eq!(f.bn_more_asymmetric_gaussian, Some(false));
        assert_eq!(f.bn_gaussian_asymmetric, vec![false, false]);
        // The rule did not fire: nothing that depends on the line is claimed either way.
        for v in [
            f.swa_on_flat_side,
            f.test_min_between,
            f.inside_gain_region,
            f.zero_mean_shift,
            f.beta_helps,
        ] {
            assert_eq!(v, None);
        }
    }

    #[test]
    fn the_summary_table_turns_seeds_into_verdicts() {
        use ValleyClass::*;
        // 8 seeds: SWA better with BN in all, without BN in 1; the rule never fires; no U(0,1)
        // direction with BN is asymmetric, and (the other network's classes) 7 of 8 Gaussian.
        let seeds: Vec<SeedFacts> = (0..8)
            .map(|i| {
                let plain = if i == 0 { (0.3, 0.2) } else { (0.2, 0.3) };
                let plain_dirs = if i == 0 { Sharp } else { Asymmetric };
                SeedFacts::of(&seed((0.3, 0.2), plain, &[Sharp], &[plain_dirs]))
            })
            .collect();
        let rows = findings(&seeds).unwrap();
        let by = |name: &str| rows.iter().find(|r| r.claim.starts_with(name)).unwrap();
        let bn = by("SWA's test loss is below SGD's (CNN with BN)");
        assert_eq!((bn.k, bn.n, bn.verdict), (8, 8, Verdict::Agrees));
        let plain = by("SWA's test loss is below SGD's (CNN without BN)");
        assert_eq!(
            (plain.k, plain.n, plain.verdict),
            (1, 8, Verdict::Disagrees)
        );
        let rule = by("the `sgd_after_swa.py` rule");
        assert_eq!((rule.k, rule.verdict), (0, Verdict::Disagrees));
        let line = by("the SWA→SGD line");
        assert_eq!((line.n, line.verdict), (0, Verdict::NotMeasured));
        let dirs = by("a U(0,1) direction");
        assert_eq!((dirs.k, dirs.n, dirs.verdict), (0, 8, Verdict::Disagrees));
        // The Gaussian control is not a claim of the paper: the same interval rule, other words.
        let gauss = by("a Gaussian direction");
        assert_eq!(
            (gauss.k, gauss.n, gauss.verdict),
            (7, 8, Verdict::MostSeeds)
        );
        let more = by("more Gaussian directions");
        assert_eq!((more.k, more.n, more.verdict), (7, 8, Verdict::MostSeeds));
        let more_u = by("more U(0,1) directions");
        assert_eq!((more_u.k, more_u.verdict), (0, Verdict::Disagrees));
    }
}
