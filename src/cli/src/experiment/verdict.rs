//! A finding over seeds: "k of N seeds", its Wilson interval, and what it says about the paper.
//!
//! A seed either shows a property or not, so over N seeds the count k is binomial with an
//! unknown rate p. The paper's statements are about what typically happens, which we read as
//! p > 1/2. With the Wilson 95 % interval `[lo, hi]` of p:
//! - `lo > 1/2`: the property holds in most runs → agrees (paper says yes) or disagrees (paper
//!   says no);
//! - `hi < 1/2`: it fails in most runs → the reverse;
//! - otherwise the seeds cannot tell: inconclusive.
//!
//! With N = 8 that needs k ≥ 7 (lo = 0.53) or k ≤ 1 (hi = 0.47); N = 3 can never decide.
use asymvalley::error::Result;
use asymvalley::stats::{wilson, Z95};
use serde::Serialize;

/// What the paper says about a property.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Paper {
    /// The paper states (or its experiment shows) that it holds.
    Holds,
    /// The paper does not state it (a descriptive finding of this study only).
    NotStated,
}

/// The verdict of a finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The interval lies above 1/2 and the paper says it holds.
    Agrees,
    /// The interval lies below 1/2 and the paper says it holds.
    Disagrees,
    /// The interval contains 1/2.
    Inconclusive,
    /// The interval lies above 1/2, for a property the paper does not state.
    MostSeeds,
    /// The interval lies below 1/2, for a property the paper does not state.
    FewSeeds,
    /// No seed could measure it (e.g. it needs the restart rule, which never fired).
    NotMeasured,
}

impl Verdict {
    /// The word the report prints.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Agrees => "agrees",
            Verdict::Disagrees => "disagrees",
            Verdict::Inconclusive => "inconclusive",
            Verdict::MostSeeds => "holds in most seeds",
            Verdict::FewSeeds => "fails in most seeds",
            Verdict::NotMeasured => "not measured",
        }
    }
}

/// One row of the summary table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// Short name of the property (the claim).
    pub claim: String,
    /// What the paper says.
    pub paper: Paper,
    /// Seeds that show it.
    pub k: u64,
    /// Seeds that could measure it.
    pub n: u64,
    /// Wilson 95 % interval of the rate (`None` when n = 0).
    pub interval: Option<(f64, f64)>,
    /// The verdict.
    pub verdict: Verdict,
}

/// The verdict for `k` of `n` seeds (the rule in the module doc).
pub fn verdict(k: u64, n: u64, paper: Paper) -> Result<(Option<(f64, f64)>, Verdict)> {
    if n == 0 {
        return Ok((None, Verdict::NotMeasured));
    }
    let (lo, hi) = wilson(k, n, Z95)?;
    let v = match (lo > 0.5, hi < 0.5, paper) {
        (true, _, Paper::Holds) => Verdict::Agrees,
        (_, true, Paper::Holds) => Verdict::Disagrees,
        (true, _, Paper::NotStated) => Verdict::MostSeeds,
        (_, true, Paper::NotStated) => Verdict::FewSeeds,
        _ => Verdict::Inconclusive,
    };
    Ok((Some((lo, hi)), v))
}

/// A finding from per-seed outcomes: `None` where the seed could not measure the property.
pub fn finding(claim: &str, paper: Paper, per_seed: &[Option<bool>]) -> Result<Finding> {
    let measured: Vec<bool> = per_seed.iter().flatten().copied().collect();
    let k = measured.iter().filter(|&&b| b).count() as u64;
    let n = measured.len() as u64;
    let (interval, verdict) = verdict(k, n, paper)?;
    Ok(Finding {
        claim: claim.to_string(),
        paper,
        k,
        n,
        interval,
        verdict,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_decides_not_the_majority() {
        // Wilson 95 % at n = 8: k = 7 → [0.529, 0.978] (above 1/2), k = 6 → [0.409, 0.929].
        assert_eq!(verdict(8, 8, Paper::Holds).unwrap().1, Verdict::Agrees);
        assert_eq!(verdict(7, 8, Paper::Holds).unwrap().1, Verdict::Agrees);
        assert_eq!(
            verdict(6, 8, Paper::Holds).unwrap().1,
            Verdict::Inconclusive
        );
        assert_eq!(
            verdict(2, 8, Paper::Holds).unwrap().1,
            Verdict::Inconclusive
        );
        assert_eq!(verdict(1, 8, Paper::Holds).unwrap().1, Verdict::Disagrees);
        assert_eq!(verdict(0, 8, Paper::Holds).unwrap().1, Verdict::Disagrees);
        // Three seeds never decide: 3/3 has lo = 0.438.
        assert_eq!(
            verdict(3, 3, Paper::Holds).unwrap().1,
            Verdict::Inconclusive
        );
        assert_eq!(
            verdict(0, 3, Paper::Holds).unwrap().1,
            Verdict::Inconclusive
        );
        assert_eq!(
            verdict(8, 8, Paper::NotStated).unwrap().1,
            Verdict::MostSeeds
        );
        assert_eq!(
            verdict(0, 8, Paper::NotStated).unwrap().1,
            Verdict::FewSeeds
        );
        assert_eq!(
            verdict(0, 0, Paper::Holds).unwrap(),
            (None, Verdict::NotMeasured)
        );
    }

    #[test]
    fn seeds_that_cannot_measure_are_left_out_of_n() {
        let f = finding(
            "x",
            Paper::Holds,
            &[Some(true), None, Some(true), Some(false), None],
        )
        .unwrap();
        assert_eq!((f.k, f.n), (2, 3));
        let f = finding("x", Paper::Holds, &[None, None]).unwrap();
        assert_eq!((f.k, f.n, f.verdict), (0, 0, Verdict::NotMeasured));
    }
}
