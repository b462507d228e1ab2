//! Are the sharpest directions the asymmetric ones? The asymmetry of the Hessian's top
//! eigenvectors against random directions of the same (unit) norm, with intervals.
//!
//! Per group: the asymmetric fraction `k/n` with its Wilson 95% interval, and the median
//! `|ln R|` with a percentile-bootstrap 95% interval (over the group's directions). The verdict
//! rests on the fraction's Wilson intervals, which stay honest for a group of one or two
//! eigenvectors (a bootstrap median of one value is a point, and would "separate" from anything):
//! `sharp-more-asymmetric` when the eigenvectors' interval lies wholly above the random
//! directions', `sharp-less-asymmetric` when wholly below, else `inconclusive`.
use super::asymmetry::ValleyClass;
use super::report::DirectionReport;
use crate::error::{Error, Result};
use crate::stats::{bootstrap_median, wilson, Z95};

/// One group's asymmetry.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GroupAsymmetry {
    /// The directions' indices in the report.
    pub indices: Vec<usize>,
    /// How many directions.
    pub directions: usize,
    /// How many are classed asymmetric.
    pub asymmetric: usize,
    /// `asymmetric / directions`.
    pub fraction_asymmetric: f64,
    /// Wilson 95% interval of the fraction.
    pub fraction_ci: [f64; 2],
    /// Median `|ln R|` over the group (NaN R, from a flat profile, left out).
    pub median_abs_log_ratio: f64,
    /// Percentile-bootstrap 95% interval of that median (None with fewer than 2 values).
    pub median_ci: Option<[f64; 2]>,
}

/// What the comparison says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The eigenvectors' asymmetric fraction is above the random directions', intervals apart.
    SharpMoreAsymmetric,
    /// Below, intervals apart.
    SharpLessAsymmetric,
    /// The intervals overlap.
    Inconclusive,
}

/// The Hessian eigenvectors against random directions.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SharpVsRandom {
    /// The top eigenvectors.
    pub sharp: GroupAsymmetry,
    /// The random directions.
    pub random: GroupAsymmetry,
    /// Whether the fraction intervals separate, and which way.
    pub verdict: Verdict,
}

/// The asymmetry of `group` (reports of one kind of direction); `seed` drives the bootstrap.
pub fn group_asymmetry(group: &[&DirectionReport], seed: u64) -> Result<GroupAsymmetry> {
    if group.is_empty() {
        return Err(Error::invalid(
            "group",
            "no directions",
            "at least one direction per group",
        ));
    }
    let n = group.len();
    let k = group
        .iter()
        .filter(|r| r.class == ValleyClass::Asymmetric)
        .count();
    let (lo, hi) = wilson(k as u64, n as u64, Z95)?;
    let logs: Vec<f64> = group
        .iter()
        .map(|r| r.rise_ratio.ln().abs())
        .filter(|x| x.is_finite())
        .collect();
    let median = if logs.is_empty() {
        f64::NAN
    } else {
        crate::stats::median(&logs)?
    };
    let median_ci = if logs.len() >= 2 {
        let (a, b) = bootstrap_median(&logs, 0.95, 2000, seed)?;
        Some([a, b])
    } else {
        None
    };
    Ok(GroupAsymmetry {
        indices: group.iter().map(|r| r.index).collect(),
        directions: n,
        asymmetric: k,
        fraction_asymmetric: k as f64 / n as f64,
        fraction_ci: [lo, hi],
        median_abs_log_ratio: median,
        median_ci,
    })
}

/// Compares `sharp` (the eigenvectors' reports) with `random` (see the module's rule).
pub fn compare(
    sharp: &[&DirectionReport],
    random: &[&DirectionReport],
    seed: u64,
) -> Result<SharpVsRandom> {
    let sharp = group_asymmetry(sharp, seed)?;
    let random = group_asymmetry(random, seed.wrapping_add(1))?;
    let verdict = if sharp.fraction_ci[0] > random.fraction_ci[1] {
        Verdict::SharpMoreAsymmetric
    } else if sharp.fraction_ci[1] < random.fraction_ci[0] {
        Verdict::SharpLessAsymmetric
    } else {
        Verdict::Inconclusive
    };
    Ok(SharpVsRandom {
        sharp,
        random,
        verdict,
    })
}
