//! What one seed shows, property by property: `Some(true/false)` where the seed measured it,
//! `None` where it could not (every line property needs the restart rule to have fired).
use super::directions::asymmetric_count;
use super::gain_region::GainRegion;
use super::seed_run::SeedOutcome;
use super::solution::SolutionResult;
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
            bn_more_asymmetric: if s.bn.uniform.is_empty() || s.plain.uniform.is_empty() {
                None
            } else {
                Some(asymmetric_count(&s.bn.uniform) > asymmetric_count(&s.plain.uniform))
            },
            bn_directions_asymmetric: s
                .bn
                .uniform
                .iter()
                .map(|d| d.class == asymvalley::valley::asymmetry::ValleyClass::Asymmetric)
                .collect(),
        }
    }
}
