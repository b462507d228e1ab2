//! The shift between the training and the held-out loss along the line, and the sign test of
//! the random-shift assumption it relies on.
//!
//! The held-out examples are split into `chunks` contiguous parts; each part's loss curve is
//! aligned horizontally with the training curve ([`estimate_shift`]), giving shifts δ₁..δ_m.
//! The theorem assumes δ symmetric with mean 0; then the RMS `σ̂ = √(Σδ²/m)` estimates its
//! standard deviation. If the δ's mostly share a sign the assumption is doubtful, so the exact
//! sign test of a zero median is reported with them (p < 0.05: rejected).
use asymvalley::error::{Error, Result};
use asymvalley::stats::sign_test;
use asymvalley::valley::bias::estimate_shift;
use asymvalley::valley::profile::Profile;
use serde::Serialize;

/// The level below which the sign test rejects the zero-median assumption.
pub const SIGN_TEST_LEVEL: f64 = 0.05;

/// The chunk shifts, their scale and their sign test.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ShiftEstimate {
    /// δ per held-out chunk.
    pub shifts: Vec<f64>,
    /// Their RMS σ̂.
    pub rms: f64,
    /// Shifts > 0.
    pub positive: u64,
    /// Shifts < 0.
    pub negative: u64,
    /// Two-sided exact sign-test p-value of a zero median.
    pub p_value: f64,
    /// Shifts that reached the search bound ±max_shift: the curves did not align within it, so
    /// the estimate is censored and says nothing about the shift's law.
    pub at_bound: u64,
}

impl ShiftEstimate {
    /// Summarizes `shifts` found within ±`max_shift` (exact zeros count for neither sign).
    pub fn of(shifts: Vec<f64>, max_shift: f64) -> Result<Self> {
        if shifts.is_empty() || shifts.iter().any(|s| !s.is_finite()) {
            return Err(Error::invalid(
                "shifts",
                format!("{shifts:?}"),
                "one or more finite shifts",
            ));
        }
        let positive = shifts.iter().filter(|&&s| s > 0.0).count() as u64;
        let negative = shifts.iter().filter(|&&s| s < 0.0).count() as u64;
        let rms = (shifts.iter().map(|s| s * s).sum::<f64>() / shifts.len() as f64).sqrt();
        // The grid search's last step lands within rounding of the bound.
        let at_bound = shifts
            .iter()
            .filter(|s| s.abs() >= max_shift * (1.0 - 1e-9))
            .count() as u64;
        Ok(ShiftEstimate {
            at_bound,
            p_value: sign_test(positive, negative)?,
            shifts,
            rms,
            positive,
            negative,
        })
    }

    /// Whether the sign test leaves the zero-mean assumption standing (p ≥ 0.05); `None` when
    /// a shift is censored at the bound (no usable estimate).
    pub fn zero_mean_plausible(&self) -> Option<bool> {
        (self.at_bound == 0).then_some(self.p_value >= SIGN_TEST_LEVEL)
    }

    /// σ̂ when no shift is censored, else `None`.
    pub fn usable_scale(&self) -> Option<f64> {
        (self.at_bound == 0 && self.rms > 0.0).then_some(self.rms)
    }
}

/// The shifts of `chunks` contiguous held-out chunks against the training profile.
pub fn chunk_shifts(
    train: &Profile,
    test: &Profile,
    chunks: usize,
    max_shift: f64,
) -> Result<ShiftEstimate> {
    let n = test.per_example.first().map_or(0, Vec::len);
    if chunks == 0 || n < chunks {
        return Err(Error::invalid("chunks", chunks, format!("1..={n}")));
    }
    let mut shifts = Vec::with_capacity(chunks);
    for c in 0..chunks {
        let (lo, hi) = (c * n / chunks, (c + 1) * n / chunks);
        let curve: Vec<f64> = test
            .per_example
            .iter()
            .map(|row| row[lo..hi].iter().map(|&x| x as f64).sum::<f64>() / (hi - lo) as f64)
            .collect();
        shifts.push(estimate_shift(
            &train.offsets,
            &train.loss,
            &curve,
            max_shift,
        )?);
    }
    ShiftEstimate::of(shifts, max_shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifts_sharing_a_sign_reject_the_zero_mean() {
        let same = ShiftEstimate::of(vec![0.1, 0.2, 0.15, 0.3, 0.1, 0.2, 0.25, 0.1], 1.5).unwrap();
        assert_eq!((same.positive, same.negative), (8, 0));
        assert!((same.p_value - 2.0 / 256.0).abs() < 1e-15);
        assert_eq!(same.zero_mean_plausible(), Some(false));
        let mixed =
            ShiftEstimate::of(vec![0.1, -0.2, 0.15, -0.3, 0.0, 0.2, -0.25, 0.1], 1.5).unwrap();
        assert_eq!((mixed.positive, mixed.negative), (4, 3));
        assert_eq!(mixed.zero_mean_plausible(), Some(true));
        // A shift at the search bound is censored: no verdict, no scale.
        let censored = ShiftEstimate::of(vec![1.5, -0.2, 0.1, -1.5], 1.5).unwrap();
        assert_eq!(
            (censored.at_bound, censored.zero_mean_plausible()),
            (2, None)
        );
        assert_eq!(censored.usable_scale(), None);
        assert!((mixed.rms - (0.275f64 / 8.0).sqrt()).abs() < 1e-12);
        assert!(ShiftEstimate::of(vec![], 1.0).is_err());
    }

    #[test]
    fn chunks_of_a_shifted_curve_recover_the_shift() {
        // Train loss (t − 0.2)² and every held-out example (t − 0.5)²: each chunk is the
        // training curve moved right by 0.3, so L_test(t) = L_train(t − 0.3): δ = −0.3.
        let offsets: Vec<f64> = (0..41).map(|i| -2.0 + 0.1 * i as f64).collect();
        let train = Profile {
            loss: offsets.iter().map(|t| (t - 0.2) * (t - 0.2)).collect(),
            offsets: offsets.clone(),
            accuracy: None,
            per_example: vec![],
        };
        let test = Profile {
            loss: vec![],
            per_example: offsets
                .iter()
                .map(|t| vec![((t - 0.5) * (t - 0.5)) as f32; 16])
                .collect(),
            offsets,
            accuracy: None,
        };
        let est = chunk_shifts(&train, &test, 4, 1.0).unwrap();
        for s in &est.shifts {
            assert!((s + 0.3).abs() < 0.006, "{s}");
        }
        assert_eq!((est.positive, est.negative), (0, 4));
        assert!(chunk_shifts(&train, &test, 17, 1.0).is_err());
    }
}
