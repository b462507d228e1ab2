//! Small-sample statistics for multi-seed studies: median, quantiles, Wilson and bootstrap intervals.
//!
//! A study reports each finding as "k of N seeds" with an interval, and each measured number as a
//! median with its spread. These are the only estimators it uses, so that every report computes them
//! the same way:
//!
//! - [`quantile`]: one rule only, linear interpolation between order statistics (Hyndman & Fan
//!   type 7, NumPy's default): for sorted `x[0..n]` and `h = (n - 1) q`,
//!   `Q(q) = x[⌊h⌋] + (h - ⌊h⌋) (x[⌊h⌋ + 1] - x[⌊h⌋])`. [`median`] is `Q(0.5)`.
//! - [`wilson`]: the Wilson score interval for a proportion `p̂ = k / n` at normal quantile `z`,
//!   `(p̂ + z²/2n ± z √(p̂(1 - p̂)/n + z²/4n²)) / (1 + z²/n)`. Unlike the Wald interval it stays
//!   inside `[0, 1]` and is not degenerate at `k = 0` or `k = n`, which matters at N = 8 seeds.
//! - [`bootstrap_median`]: the percentile bootstrap interval for the median: resample the data with
//!   replacement `resamples` times from `StdRng::seed_from_u64(seed)`, take the median of each
//!   resample, report the `(1 - level)/2` and `(1 + level)/2` quantiles of those medians.
//!
//! Every function refuses empty input, non-finite values and out-of-range arguments with
//! [`Error::InvalidConfig`](crate::Error::InvalidConfig) instead of returning NaN.

use crate::{Error, Result};
use rand::{Rng, SeedableRng};

/// The standard normal quantile for a two-sided 95% interval, Φ⁻¹(0.975).
pub const Z95: f64 = 1.959_963_984_540_054;

fn invalid(field: &'static str, value: impl std::fmt::Display, expected: &str) -> Error {
    Error::InvalidConfig {
        field,
        value: value.to_string(),
        expected: expected.to_string(),
    }
}

/// Checks that `xs` is non-empty and finite, and returns a sorted copy.
fn sorted_finite(xs: &[f64]) -> Result<Vec<f64>> {
    if xs.is_empty() {
        return Err(invalid("data", "[]", "at least one value"));
    }
    if let Some(bad) = xs.iter().find(|x| !x.is_finite()) {
        return Err(invalid("data", bad, "finite values only"));
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    Ok(v)
}

/// Type-7 quantile of already sorted, non-empty, finite data (no checks).
fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// The `q`-quantile of `xs` by linear interpolation between order statistics (type 7).
pub fn quantile(xs: &[f64], q: f64) -> Result<f64> {
    if !(0.0..=1.0).contains(&q) {
        return Err(invalid("q", q, "a probability in [0, 1]"));
    }
    Ok(quantile_sorted(&sorted_finite(xs)?, q))
}

/// The median of `xs`, `quantile(xs, 0.5)`: the middle value, or the mean of the two middle ones.
pub fn median(xs: &[f64]) -> Result<f64> {
    quantile(xs, 0.5)
}

/// The Wilson score interval `(low, high)` for `k` successes in `n` trials at normal quantile `z`
/// (use [`Z95`] for 95%).
pub fn wilson(k: u64, n: u64, z: f64) -> Result<(f64, f64)> {
    if n == 0 {
        return Err(invalid("n", n, "at least one trial"));
    }
    if k > n {
        return Err(invalid("k", k, &format!("at most n = {n}")));
    }
    if !(z.is_finite() && z > 0.0) {
        return Err(invalid("z", z, "a finite positive normal quantile"));
    }
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let z2 = z * z;
    let centre = p + z2 / (2.0 * n);
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    let denom = 1.0 + z2 / n;
    // Clamp only the rounding at k = 0 and k = n (the exact bounds there are 0 and 1).
    Ok((
        ((centre - half) / denom).max(0.0),
        ((centre + half) / denom).min(1.0),
    ))
}

/// The percentile bootstrap interval `(low, high)` for the median of `xs` at confidence `level`,
/// from `resamples` resamples drawn with `StdRng::seed_from_u64(seed)` (same seed, same interval).
pub fn bootstrap_median(xs: &[f64], level: f64, resamples: usize, seed: u64) -> Result<(f64, f64)> {
    if !(level > 0.0 && level < 1.0) {
        return Err(invalid("level", level, "a confidence level in (0, 1)"));
    }
    if resamples < 2 {
        return Err(invalid("resamples", resamples, "at least 2"));
    }
    let data = sorted_finite(xs)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut draw = vec![0.0; data.len()];
    let mut medians = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        for d in draw.iter_mut() {
            *d = data[rng.gen_range(0..data.len())];
        }
        draw.sort_by(f64::total_cmp);
        medians.push(quantile_sorted(&draw, 0.5));
    }
    medians.sort_by(f64::total_cmp);
    let tail = (1.0 - level) / 2.0;
    Ok((
        quantile_sorted(&medians, tail),
        quantile_sorted(&medians, 1.0 - tail),
    ))
}

/// The exact two-sided sign test of "positive and negative signs are equally likely" (a zero
/// median), from `positive` and `negative` counts (zeros are dropped before counting): with
/// `n = positive + negative` and `m = min(positive, negative)`,
/// `p = min(1, 2 · Σ_{i ≤ m} C(n, i) / 2ⁿ)`. With no signs at all there is no evidence: p = 1.
pub fn sign_test(positive: u64, negative: u64) -> Result<f64> {
    let n = positive
        .checked_add(negative)
        .filter(|&n| n <= 1000)
        .ok_or_else(|| {
            invalid(
                "positive + negative",
                positive.saturating_add(negative),
                "at most 1000 signs",
            )
        })?;
    let m = positive.min(negative);
    // Σ C(n, i)/2ⁿ in f64 by the recurrence C(n, i+1) = C(n, i)(n − i)/(i + 1), starting at 2⁻ⁿ
    // in log space so that n up to 1000 does not underflow the first term.
    let mut term = (-(n as f64) * std::f64::consts::LN_2).exp();
    let mut tail = 0.0;
    for i in 0..=m {
        tail += term;
        term *= (n - i) as f64 / (i + 1) as f64;
    }
    Ok((2.0 * tail).min(1.0))
}

/// The quartiles of `xs` (type 7): `[Q(0.25), median, Q(0.75)]`, the "median [IQR]" of a report.
pub fn quartiles(xs: &[f64]) -> Result<[f64; 3]> {
    let s = sorted_finite(xs)?;
    Ok([
        quantile_sorted(&s, 0.25),
        quantile_sorted(&s, 0.5),
        quantile_sorted(&s, 0.75),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, StandardNormal};

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol, "{a} vs {b}");
    }

    #[test]
    fn quantiles_match_numpy_type_7() {
        // numpy.quantile([1, 2, 3, 4], [0, .25, .5, .9, 1]) = [1, 1.75, 2.5, 3.7, 4]
        let xs = [4.0, 1.0, 3.0, 2.0];
        for (q, want) in [(0.0, 1.0), (0.25, 1.75), (0.5, 2.5), (0.9, 3.7), (1.0, 4.0)] {
            close(quantile(&xs, q).unwrap(), want, 1e-12);
        }
        assert_eq!(median(&[3.0, 1.0, 2.0]).unwrap(), 2.0);
        assert_eq!(median(&[7.0]).unwrap(), 7.0);
    }

    #[test]
    fn wilson_matches_published_values() {
        // 8/10 at 95%: 0.4902..0.9433; 0/10: 0..0.2775; 10/10: 0.7225..1 (Newcombe 1998, method 3).
        let (l, h) = wilson(8, 10, Z95).unwrap();
        close(l, 0.4902, 1e-4);
        close(h, 0.9433, 1e-4);
        let (l, h) = wilson(0, 10, Z95).unwrap();
        close(l, 0.0, 1e-12);
        close(h, 0.2775, 1e-4);
        let (l, h) = wilson(10, 10, Z95).unwrap();
        close(l, 0.7225, 1e-4);
        close(h, 1.0, 1e-12);
    }

    #[test]
    fn bootstrap_median_covers_the_true_median() {
        // 200 samples of 25 standard normals; the true median is 0. The nominal coverage is 95%; a
        // coverage under 85% has binomial probability < 1e-6 if the true coverage is >= 93%.
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut covered = 0;
        for rep in 0..200 {
            let xs: Vec<f64> = (0..25).map(|_| StandardNormal.sample(&mut rng)).collect();
            let (l, h) = bootstrap_median(&xs, 0.95, 1000, rep).unwrap();
            let m = median(&xs).unwrap();
            assert!(
                l <= m && m <= h,
                "interval {l}..{h} misses the sample median {m}"
            );
            if l <= 0.0 && 0.0 <= h {
                covered += 1;
            }
        }
        assert!(covered >= 170, "coverage {covered}/200");
        // Same seed, same interval; constant data, a point.
        let xs = [1.0, 5.0, 2.0, 8.0, 3.0];
        assert_eq!(
            bootstrap_median(&xs, 0.9, 500, 3).unwrap(),
            bootstrap_median(&xs, 0.9, 500, 3).unwrap()
        );
        assert_eq!(
            bootstrap_median(&[2.0; 6], 0.95, 100, 0).unwrap(),
            (2.0, 2.0)
        );
    }

    #[test]
    fn bad_input_is_refused_with_the_argument_named() {
        let msg = |r: Result<f64>| r.unwrap_err().to_string();
        assert!(msg(median(&[])).contains("data"));
        assert!(msg(median(&[1.0, f64::NAN])).contains("NaN"));
        assert!(msg(quantile(&[1.0], 1.5)).contains("q = 1.5"));
        assert!(wilson(3, 2, Z95).unwrap_err().to_string().contains("k = 3"));
        assert!(wilson(0, 0, Z95).unwrap_err().to_string().contains("n = 0"));
        assert!(wilson(1, 2, -1.0).is_err());
        assert!(bootstrap_median(&[1.0], 1.0, 10, 0)
            .unwrap_err()
            .to_string()
            .contains("level"));
        assert!(bootstrap_median(&[1.0], 0.9, 1, 0)
            .unwrap_err()
            .to_string()
            .contains("resamples"));
    }
    #[test]
    fn sign_test_matches_the_binomial_tail() {
        // Exact values: 8 of 8 → 2/2⁸; 7 vs 1 → 2·(1 + 8)/2⁸; 4 vs 4 → 1 (capped); 9 vs 1 → 2·11/2¹⁰.
        close(sign_test(8, 0).unwrap(), 2.0 / 256.0, 1e-15);
        close(sign_test(1, 7).unwrap(), 18.0 / 256.0, 1e-15);
        close(sign_test(4, 4).unwrap(), 1.0, 0.0);
        close(sign_test(9, 1).unwrap(), 22.0 / 1024.0, 1e-15);
        close(sign_test(0, 0).unwrap(), 1.0, 0.0);
        // 2·Σ_{i≤20} C(100, i)/2¹⁰⁰ = 1.11591e-9 (exact integer arithmetic)
        close(sign_test(20, 80).unwrap() / 1.1159e-9, 1.0, 1e-3);
        assert!(sign_test(900, 900)
            .unwrap_err()
            .to_string()
            .contains("1800"));
    }

    #[test]
    fn quartiles_are_the_type_7_quantiles() {
        // numpy.quantile([1, 2, 3, 4, 10], [.25, .5, .75]) = [2, 3, 4]
        assert_eq!(
            quartiles(&[10.0, 1.0, 3.0, 2.0, 4.0]).unwrap(),
            [2.0, 3.0, 4.0]
        );
        assert!(quartiles(&[]).is_err());
    }
}
