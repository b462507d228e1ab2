//! Measuring a profile's asymmetry: rise ratio, two-sided fit, bootstrap intervals, flat side
//! and class.
//!
//! With `Δ±(r) = L(±r) − L(0)` the rises at matched radius r:
//! - rise ratio `R(r) = Δ+(r)/Δ−(r)` (our measure: the paper draws the profiles but defines no number for them).
//!   Rises are floored at [`RISE_FLOOR`] so that R stays finite when one side does not rise;
//! - two-sided power fit `Δ(t) ≈ c± |t|^p` on each side with one shared exponent p (free, or
//!   fixed: p = 2 is the curvature model `½a±t²` with `a± = 2c±`), fitted by least squares on
//!   `ln Δ = ln c± + p ln|t|` over the points whose rise exceeds the floor. Its ratio `c+/c−` is
//!   the asymmetry at every radius under the model, and it feeds [`crate::valley::bias`];
//! - bootstrap: examples are resampled with replacement (the same resample at every offset:
//!   common random numbers) and R and `c+/c−` recomputed; percentile intervals.
//!
//! Classification (thresholds in [`AsymmetryConfig`]):
//! - **asymmetric** when `|ln R| ≥ ln ratio_threshold` (default 2: one side rises at least twice
//!   as much as the other at the probe radius) and, when a bootstrap interval exists, the interval
//!   of `ln R` excludes 0. The flat side is the side that rises less: `flat_side = +1` when R < 1;
//! - otherwise **flat** when both rises are at most `flat_rise` (default 0.1 loss units at the
//!   probe radius; a radius-dependent notion, so the radius is reported alongside);
//! - otherwise **sharp**; `flat_side = 0` for flat and sharp.
//!
//! Honest scoring (the probed point need not be the valley's minimum):
//! - `t_min` is the grid offset of the smallest loss. When `L(t_min) < L(0) − RISE_FLOOR` and
//!   t_min is inside the grid, every rise, ratio and fit is taken around t_min on the grid
//!   re-centred at t_min (`t ↦ t − t_min`), and a warning says how far t_min is from the probed
//!   point: scored around 0, a symmetric valley whose minimum sits off centre would get `R ≈ 1e±9`;
//! - when the minimum is at an end of the grid the profile falls monotonically toward that end:
//!   the class is **slope** (`flat_side = 0`), the numbers are those around 0, with a warning.
//!
//! Offsets must be finite and strictly increasing (no duplicates).
//!
//! Mirroring the profile (`t ↦ −t`) maps R to 1/R, swaps `c+` and `c−` and flips the flat side.
use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};

/// The smallest rise used in a ratio: rises below it count as this (no rise at all).
pub const RISE_FLOOR: f64 = 1e-9;

/// Thresholds and bootstrap settings.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AsymmetryConfig {
    /// A direction is asymmetric when `max(R, 1/R) ≥ ratio_threshold` (> 1).
    pub ratio_threshold: f64,
    /// A symmetric direction is flat when both rises are ≤ this (loss units, at the radius).
    pub flat_rise: f64,
    /// The radius of the headline ratio; `None`: the largest matched radius of the grid.
    pub radius: Option<f64>,
    /// Bootstrap resamples (0: no intervals).
    pub bootstrap: usize,
    /// Confidence level of the intervals.
    pub confidence: f64,
    /// The fit's exponent; `None` fits it (shared by both sides).
    pub exponent: Option<f64>,
    /// Seed of the bootstrap.
    pub seed: u64,
}

impl Default for AsymmetryConfig {
    fn default() -> Self {
        AsymmetryConfig {
            ratio_threshold: 2.0,
            flat_rise: 0.1,
            radius: None,
            bootstrap: 200,
            confidence: 0.95,
            exponent: None,
            seed: 0,
        }
    }
}

impl AsymmetryConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if !(self.ratio_threshold > 1.0 && self.ratio_threshold.is_finite()) {
            return Err(Error::invalid(
                "ratio_threshold",
                self.ratio_threshold,
                "a finite number > 1",
            ));
        }
        if !(self.flat_rise >= 0.0 && self.flat_rise.is_finite()) {
            return Err(Error::invalid(
                "flat_rise",
                self.flat_rise,
                "a finite number >= 0",
            ));
        }
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(Error::invalid(
                "confidence",
                self.confidence,
                "a number in (0, 1)",
            ));
        }
        if let Some(p) = self.exponent {
            if !(p > 0.0 && p.is_finite()) {
                return Err(Error::invalid("exponent", p, "a finite number > 0"));
            }
        }
        Ok(())
    }
}

/// The class of a direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ValleyClass {
    /// Both sides rise by at most `flat_rise`, and comparably.
    Flat,
    /// Both sides rise comparably, by more than `flat_rise`.
    Sharp,
    /// One side rises at least `ratio_threshold` times more than the other.
    Asymmetric,
    /// The loss keeps falling toward one end of the grid: the point is on a slope, not in a valley.
    Slope,
}

impl ValleyClass {
    /// The class's number in `torch.ops.asymvalley.valley_asymmetry`'s `class` field: 0 flat,
    /// 1 sharp, 2 asymmetric, 3 slope. Defined here, once, so a new class cannot miss the op.
    pub fn code(self) -> u8 {
        match self {
            ValleyClass::Flat => 0,
            ValleyClass::Sharp => 1,
            ValleyClass::Asymmetric => 2,
            ValleyClass::Slope => 3,
        }
    }
}

/// `Δ(t) ≈ c± |t|^p`, one coefficient per side and a shared exponent.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct TwoSidedFit {
    /// Coefficient on the + side.
    pub c_plus: f64,
    /// Coefficient on the − side.
    pub c_minus: f64,
    /// The exponent p.
    pub exponent: f64,
    /// `c+/c−`: < 1 when + is the flat side.
    pub ratio: f64,
    /// Root-mean-square residual of the fit in `ln Δ`.
    pub rms_log_residual: f64,
    /// Points used on the + and − sides.
    pub points: [usize; 2],
}

impl TwoSidedFit {
    /// The fitted rise at offset t.
    pub fn rise(&self, t: f64) -> f64 {
        let c = if t >= 0.0 { self.c_plus } else { self.c_minus };
        c * t.abs().powf(self.exponent)
    }
}

/// A direction's asymmetry.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Asymmetry {
    /// L at the point the rises are measured from: L(t_min) when re-centred, else L(0).
    pub center_loss: f64,
    /// The grid offset of the smallest loss.
    pub t_min: f64,
    /// The offset the rises are measured from (t_min when re-centred, else 0); the ratio's radius
    /// and the fit's offsets are relative to it.
    pub scored_at: f64,
    /// Why the verdict needs care (minimum off centre, slope).
    pub warnings: Vec<String>,
    /// The radius of the headline ratio.
    pub radius: f64,
    /// Δ+ at the radius.
    pub rise_plus: f64,
    /// Δ− at the radius.
    pub rise_minus: f64,
    /// R = Δ+/Δ− at the radius (floored rises).
    pub rise_ratio: f64,
    /// ln R.
    pub log_rise_ratio: f64,
    /// Bootstrap percentile interval of R.
    pub rise_ratio_ci: Option<[f64; 2]>,
    /// R(r) at every matched radius, `[r, R(r)]`.
    pub ratio_curve: Vec<[f64; 2]>,
    /// The two-sided fit, when both sides rise somewhere.
    pub fit: Option<TwoSidedFit>,
    /// Bootstrap percentile interval of the fit's `c+/c−`.
    pub fit_ratio_ci: Option<[f64; 2]>,
    /// +1 when +t is the flat side, −1 when −t is, 0 when neither.
    pub flat_side: i8,
    /// The class.
    pub class: ValleyClass,
}

/// How close two offsets must be to count as the same grid point. Relative 1e-6 of the grid's
/// extent, because float32 grids (torch.linspace) put 0 and ±r within a few ulps; never more
/// than 1e-3 of the smallest spacing, so that on a wide grid a near-zero point is not taken
/// for 0 (offsets are strictly increasing when this is called).
fn tolerance(offsets: &[f64]) -> f64 {
    let scale = offsets.iter().fold(0.0f64, |m, t| m.max(t.abs()));
    let gap = offsets
        .windows(2)
        .fold(f64::INFINITY, |m, w| m.min(w[1] - w[0]));
    (1e-6 * scale).min(1e-3 * gap)
}

fn find(offsets: &[f64], t: f64, tol: f64) -> Option<usize> {
    offsets.iter().position(|&o| (o - t).abs() <= tol)
}

/// Pairs `(r, i(+r), i(−r))` for every matched radius, in increasing r.
fn matched(offsets: &[f64]) -> Vec<(f64, usize, usize)> {
    let tol = tolerance(offsets);
    let mut out: Vec<(f64, usize, usize)> = offsets
        .iter()
        .enumerate()
        .filter(|(_, &t)| t > tol)
        .filter_map(|(i, &t)| find(offsets, -t, tol).map(|j| (t, i, j)))
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

fn ratio(up: f64, down: f64) -> f64 {
    up.max(RISE_FLOOR) / down.max(RISE_FLOOR)
}

/// Fits `ln Δ = ln c± + p ln|t|` (p shared; fixed when `exponent` is given).
pub fn fit_two_sided(
    offsets: &[f64],
    losses: &[f64],
    center: usize,
    exponent: Option<f64>,
) -> Option<TwoSidedFit> {
    let l0 = losses[center];
    let mut sides: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    for (&t, &l) in offsets.iter().zip(losses) {
        let rise = l - l0;
        if t != 0.0 && rise > RISE_FLOOR {
            sides[usize::from(t < 0.0)].push((t.abs().ln(), rise.ln()));
        }
    }
    if sides.iter().any(|s| s.is_empty()) {
        return None;
    }
    let means: Vec<(f64, f64)> = sides
        .iter()
        .map(|s| {
            let n = s.len() as f64;
            (
                s.iter().map(|p| p.0).sum::<f64>() / n,
                s.iter().map(|p| p.1).sum::<f64>() / n,
            )
        })
        .collect();
    let p = match exponent {
        Some(p) => p,
        None => {
            let (mut sxy, mut sxx) = (0.0, 0.0);
            for (s, m) in sides.iter().zip(&means) {
                for (x, y) in s {
                    sxy += (x - m.0) * (y - m.1);
                    sxx += (x - m.0) * (x - m.0);
                }
            }
            if sxx <= 0.0 {
                return None;
            }
            sxy / sxx
        }
    };
    let c: Vec<f64> = means.iter().map(|m| (m.1 - p * m.0).exp()).collect();
    let (mut ss, mut n) = (0.0, 0usize);
    for (s, ci) in sides.iter().zip(&c) {
        for (x, y) in s {
            let r = y - (ci.ln() + p * x);
            ss += r * r;
            n += 1;
        }
    }
    let fit = TwoSidedFit {
        c_plus: c[0],
        c_minus: c[1],
        exponent: p,
        ratio: c[0] / c[1],
        rms_log_residual: (ss / n as f64).sqrt(),
        points: [sides[0].len(), sides[1].len()],
    };
    (fit.ratio.is_finite() && p.is_finite()).then_some(fit)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Analyzes one profile: `losses[i]` at `offsets[i]` (0 must be on the grid, with matched ±r).
/// `per_example[i][j]` (optional) are the losses of example j at offset i, for the bootstrap.
pub fn analyze(
    offsets: &[f64],
    losses: &[f64],
    per_example: Option<&[Vec<f32>]>,
    config: &AsymmetryConfig,
) -> Result<Asymmetry> {
    config.validate()?;
    if offsets.len() != losses.len() {
        return Err(Error::LengthMismatch {
            op: "valley asymmetry",
            expected_name: "offsets",
            expected: offsets.len(),
            name: "losses",
            got: losses.len(),
        });
    }
    if let Some((i, &l)) = losses.iter().enumerate().find(|(_, l)| !l.is_finite()) {
        return Err(Error::NotFinite {
            what: format!("loss at offset t = {}", offsets[i]),
            value: l,
        });
    }
    if let Some(&t) = offsets.iter().find(|t| !t.is_finite()) {
        return Err(Error::NotFinite {
            what: "offset".to_string(),
            value: t,
        });
    }
    if let Some(w) = offsets.windows(2).find(|w| w[0] >= w[1]) {
        return Err(Error::invalid(
            "offsets",
            format!("{} followed by {}", w[0], w[1]),
            "strictly increasing offsets (sorted, no duplicates)",
        ));
    }
    let scale = offsets.iter().fold(0.0f64, |m, t| m.max(t.abs()));
    let zero = find(offsets, 0.0, tolerance(offsets)).ok_or_else(|| {
        Error::invalid(
            "offsets",
            "a grid without t = 0",
            "a grid that contains t = 0",
        )
    })?;
    let imin = (0..losses.len()).fold(zero, |m, i| if losses[i] < losses[m] { i } else { m });
    let below = losses[imin] < losses[zero] - RISE_FLOOR;
    let at_end = imin == 0 || imin + 1 == losses.len();
    let slope = below && at_end;
    let mut warnings = Vec::new();
    let center = if below && !at_end {
        warnings.push(format!(
            "the profile's minimum is at t = {} (distance {} from the probed point); \
             rises are scored around it",
            offsets[imin],
            offsets[imin].abs()
        ));
        imin
    } else {
        if slope {
            warnings.push(format!(
                "the loss falls toward the grid's end t = {}: the point is on a slope, not at a \
                 minimum; the ratio is scored around t = 0 and means little",
                offsets[imin]
            ));
        }
        zero
    };
    let offsets_center = offsets[center];
    let shifted: Vec<f64> = offsets.iter().map(|&t| t - offsets_center).collect();
    let offsets = &shifted[..];
    let pairs = matched(offsets);
    let Some(&last) = pairs.last() else {
        return Err(Error::invalid(
            "offsets",
            "no matched pair ±r",
            "a grid with some r > 0 and −r both present",
        ));
    };
    let (radius, ip, im) = match config.radius {
        None => last,
        // Re-centred, the configured radius may have no partner: the largest one up to it.
        Some(r) if center != zero => pairs
            .iter()
            .copied()
            .rev()
            .find(|p| p.0 <= r * (1.0 + 1e-9))
            .unwrap_or(pairs[0]),
        Some(r) => pairs
            .iter()
            .copied()
            .find(|p| (p.0 - r).abs() <= 1e-9 * scale.max(1.0))
            .ok_or_else(|| Error::invalid("radius", r, "a matched radius of the grid"))?,
    };
    let l0 = losses[center];
    let (rise_plus, rise_minus) = (losses[ip] - l0, losses[im] - l0);
    let rise_ratio = ratio(rise_plus, rise_minus);
    let ratio_curve = pairs
        .iter()
        .map(|&(r, a, b)| [r, ratio(losses[a] - l0, losses[b] - l0)])
        .collect();
    let fit = fit_two_sided(offsets, losses, center, config.exponent);

    let (mut rise_ratio_ci, mut fit_ratio_ci) = (None, None);
    if let Some(per) = per_example.filter(|_| config.bootstrap > 0) {
        let n = per.first().map_or(0, Vec::len);
        if per.len() != offsets.len() || per.iter().any(|r| r.len() != n) || n == 0 {
            return Err(Error::invalid(
                "per_example",
                "a ragged or empty matrix",
                "one row of equal length per offset",
            ));
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
        let (mut logs, mut fits) = (Vec::new(), Vec::new());
        let mut counts = vec![0u32; n];
        let mut means = vec![0.0; offsets.len()];
        for _ in 0..config.bootstrap {
            counts.iter_mut().for_each(|c| *c = 0);
            for _ in 0..n {
                counts[rng.gen_range(0..n)] += 1;
            }
            for (m, row) in means.iter_mut().zip(per) {
                *m = row
                    .iter()
                    .zip(&counts)
                    .map(|(&l, &c)| l as f64 * c as f64)
                    .sum::<f64>()
                    / n as f64;
            }
            let b0 = means[center];
            logs.push(ratio(means[ip] - b0, means[im] - b0).ln());
            if let Some(f) = fit_two_sided(offsets, &means, center, config.exponent) {
                fits.push(f.ratio.ln());
            }
        }
        let alpha = (1.0 - config.confidence) / 2.0;
        let interval = |mut v: Vec<f64>| -> Option<[f64; 2]> {
            if v.len() < config.bootstrap / 2 || v.is_empty() {
                return None;
            }
            v.sort_by(f64::total_cmp);
            Some([
                percentile(&v, alpha).exp(),
                percentile(&v, 1.0 - alpha).exp(),
            ])
        };
        rise_ratio_ci = interval(logs);
        fit_ratio_ci = interval(fits);
    }

    let log_r = rise_ratio.ln();
    let excludes_one = rise_ratio_ci.map_or(true, |[lo, hi]| lo > 1.0 || hi < 1.0);
    let (class, flat_side) = if slope {
        (ValleyClass::Slope, 0)
    } else if log_r.abs() >= config.ratio_threshold.ln() && excludes_one {
        (ValleyClass::Asymmetric, if log_r < 0.0 { 1 } else { -1 })
    } else if rise_plus.max(rise_minus) <= config.flat_rise {
        (ValleyClass::Flat, 0)
    } else {
        (ValleyClass::Sharp, 0)
    };
    Ok(Asymmetry {
        center_loss: l0,
        t_min: shifted[imin] + offsets_center,
        scored_at: offsets_center,
        warnings,
        radius,
        rise_plus,
        rise_minus,
        rise_ratio,
        log_rise_ratio: log_r,
        rise_ratio_ci,
        ratio_curve,
        fit,
        fit_ratio_ci,
        flat_side,
        class,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quad(a_plus: f64, a_minus: f64) -> (Vec<f64>, Vec<f64>) {
        let t: Vec<f64> = (-10..=10).map(|i| i as f64 * 0.1).collect();
        let l = t
            .iter()
            .map(|&x| 0.3 + 0.5 * if x >= 0.0 { a_plus } else { a_minus } * x * x)
            .collect();
        (t, l)
    }

    /// A piecewise quadratic is recovered exactly: ratio a₊/a₋, exponent 2, flat side +.
    #[test]
    fn asymmetry_recovers_piecewise_quadratic() {
        let (t, l) = quad(1.0, 10.0);
        let a = analyze(&t, &l, None, &AsymmetryConfig::default()).unwrap();
        assert!((a.rise_ratio - 0.1).abs() < 1e-12);
        let f = a.fit.unwrap();
        assert!((f.exponent - 2.0).abs() < 1e-9 && (f.ratio - 0.1).abs() < 1e-9);
        assert!((f.c_plus - 0.5).abs() < 1e-9 && (f.c_minus - 5.0).abs() < 1e-9);
        assert_eq!((a.class, a.flat_side), (ValleyClass::Asymmetric, 1));
    }

    /// Mirroring t ↦ −t inverts R, swaps c± and flips the flat side.
    #[test]
    fn asymmetry_mirror_flips_sign() {
        let (t, l) = quad(1.0, 10.0);
        let mut m = l.clone();
        m.reverse();
        let (a, b) = (
            analyze(&t, &l, None, &AsymmetryConfig::default()).unwrap(),
            analyze(&t, &m, None, &AsymmetryConfig::default()).unwrap(),
        );
        assert!((a.rise_ratio * b.rise_ratio - 1.0).abs() < 1e-12);
        assert_eq!(a.flat_side, -b.flat_side);
        assert!((a.fit.unwrap().ratio * b.fit.unwrap().ratio - 1.0).abs() < 1e-9);
    }

    /// Symmetric valleys are flat or sharp depending on the rise, never asymmetric.
    #[test]
    fn asymmetry_symmetric_classes() {
        let (t, l) = quad(0.1, 0.1);
        let a = analyze(&t, &l, None, &AsymmetryConfig::default()).unwrap();
        assert_eq!((a.class, a.flat_side), (ValleyClass::Flat, 0));
        let (t, l) = quad(5.0, 5.0);
        let a = analyze(&t, &l, None, &AsymmetryConfig::default()).unwrap();
        assert_eq!((a.class, a.flat_side), (ValleyClass::Sharp, 0));
    }

    /// A symmetric quadratic whose minimum sits at t = 0.3 is scored around t_min: symmetric
    /// (R = 1 exactly on the re-centred grid), with t_min reported and a warning; scored around
    /// 0 it would be called asymmetric.
    #[test]
    fn asymmetry_recentres_on_off_centre_minimum() {
        let t: Vec<f64> = (-10..=10).map(|i| i as f64 * 0.1).collect();
        let l: Vec<f64> = t
            .iter()
            .map(|&x| 1.0 + 2.0 * (x - 0.3) * (x - 0.3))
            .collect();
        let a = analyze(&t, &l, None, &AsymmetryConfig::default()).unwrap();
        assert!((a.t_min - 0.3).abs() < 1e-12 && (a.scored_at - 0.3).abs() < 1e-12);
        assert!((a.rise_ratio - 1.0).abs() < 1e-9, "R = {}", a.rise_ratio);
        // Largest matched radius around 0.3 on [-1, 1] is 0.7: rise 2·0.49.
        assert!((a.radius - 0.7).abs() < 1e-9 && (a.rise_plus - 0.98).abs() < 1e-9);
        assert_eq!((a.class, a.flat_side), (ValleyClass::Sharp, 0));
        assert_eq!(a.warnings.len(), 1);
        assert!((a.center_loss - 1.0).abs() < 1e-12);
        let f = a.fit.unwrap();
        assert!((f.exponent - 2.0).abs() < 1e-9 && (f.ratio - 1.0).abs() < 1e-9);
    }

    /// A monotone profile is a slope, not an asymmetric valley; a centred one has no warning.
    #[test]
    fn asymmetry_slope_class() {
        let t: Vec<f64> = (-10..=10).map(|i| i as f64 * 0.1).collect();
        let l: Vec<f64> = t.iter().map(|&x| 1.0 - 0.5 * x).collect();
        let a = analyze(&t, &l, None, &AsymmetryConfig::default()).unwrap();
        assert_eq!((a.class, a.flat_side), (ValleyClass::Slope, 0));
        assert!((a.t_min - 1.0).abs() < 1e-12 && a.scored_at == 0.0);
        assert_eq!(a.warnings.len(), 1);
        let (t, l) = quad(1.0, 10.0);
        let a = analyze(&t, &l, None, &AsymmetryConfig::default()).unwrap();
        assert!(a.warnings.is_empty() && a.t_min == 0.0 && a.scored_at == 0.0);
    }

    /// On a wide grid a near-zero offset is not taken for 0 (the tolerance follows the spacing).
    #[test]
    fn asymmetry_zero_tolerance_follows_spacing() {
        let c = AsymmetryConfig::default();
        assert!(analyze(&[-1e6, -0.5, 0.5, 1e6], &[1.0, 0.5, 0.5, 1.0], None, &c).is_err());
        // float32 rounding of a linspace grid still matches 0 and ±r.
        let t: Vec<f64> = (-5..=5).map(|i| f64::from(i as f32 * 0.1f32)).collect();
        let l: Vec<f64> = t.iter().map(|x| x * x).collect();
        assert!(analyze(&t, &l, None, &c).is_ok());
    }

    /// Non-finite, duplicate or unsorted offsets are refused.
    #[test]
    fn asymmetry_rejects_bad_offsets() {
        let c = AsymmetryConfig::default();
        let l = [1.0, 0.5, 1.0];
        for t in [
            [-1.0, 0.0, f64::NAN],
            [-1.0, 0.0, f64::INFINITY],
            [-1.0, 0.0, 0.0],
            [1.0, 0.0, -1.0],
        ] {
            assert!(analyze(&t, &l, None, &c).is_err(), "{t:?}");
        }
        assert!(analyze(&[-1.0, 0.0, 1.0], &l, None, &c).is_ok());
    }

    /// No t = 0 or non-finite losses are errors, not panics.
    #[test]
    fn asymmetry_rejects_bad_profiles() {
        assert!(analyze(&[-1.0, 1.0], &[1.0, 1.0], None, &AsymmetryConfig::default()).is_err());
        assert!(analyze(
            &[-1.0, 0.0, 1.0],
            &[1.0, f64::NAN, 1.0],
            None,
            &AsymmetryConfig::default()
        )
        .is_err());
        assert!(analyze(&[0.0, 1.0], &[1.0, 2.0], None, &AsymmetryConfig::default()).is_err());
    }
}
