//! The body of `torch.ops.asymvalley.valley_asymmetry(offsets: Tensor, losses: Tensor) -> Tensor`
//! (registered in `src/ops/csrc/valley_op.cpp`).
//!
//! `offsets` is `[P]` (must contain 0 and matched pairs ±r), `losses` is `[P]` or `[B, P]`
//! (B profiles on the same grid). The result is float64, `[F]` or `[B, F]`, on the losses'
//! device, with the fields of [`FIELDS`] in this order (the default [`AsymmetryConfig`]:
//! headline radius = largest matched radius, ratio threshold 2, flat rise 0.1, fitted exponent;
//! no bootstrap, since a mean profile has no per-example losses):
//!
//! | i | field | meaning |
//! |---|---|---|
//! | 0 | `rise_ratio` | R = (L(+r) − L(0)) / (L(−r) − L(0)), rises floored at 1e-9 |
//! | 1 | `log_rise_ratio` | ln R |
//! | 2 | `flat_side` | +1 (+t flat), −1 (−t flat), 0 (neither) |
//! | 3 | `class` | 0 flat, 1 sharp, 2 asymmetric, 3 slope |
//! | 4 | `radius` | r |
//! | 5 | `rise_plus` | L(+r) − L(0) |
//! | 6 | `rise_minus` | L(−r) − L(0) |
//! | 7 | `fit_c_plus` | c+ of `Δ ≈ c±|t|^p` (NaN when a side never rises) |
//! | 8 | `fit_c_minus` | c− |
//! | 9 | `fit_exponent` | p |
//! | 10 | `center_loss` | L(0) |
//!
//! The C entry points are in [`crate::ffi`].
use avcore::valley::asymmetry::{analyze, AsymmetryConfig};

/// The output fields, in order.
pub const FIELDS: [&str; 11] = [
    "rise_ratio",
    "log_rise_ratio",
    "flat_side",
    "class",
    "radius",
    "rise_plus",
    "rise_minus",
    "fit_c_plus",
    "fit_c_minus",
    "fit_exponent",
    "center_loss",
];

/// The op's fields for one profile (the same numbers the CLI reports, without intervals).
pub fn valley_asymmetry(offsets: &[f64], losses: &[f64]) -> crate::Result<[f64; 11]> {
    check_offsets(offsets)?;
    let a = analyze(offsets, losses, None, &AsymmetryConfig::default())?;
    let (cp, cm, p) = a.fit.map_or((f64::NAN, f64::NAN, f64::NAN), |f| {
        (f.c_plus, f.c_minus, f.exponent)
    });
    let class = f64::from(a.class.code());
    Ok([
        a.rise_ratio,
        a.log_rise_ratio,
        f64::from(a.flat_side),
        class,
        a.radius,
        a.rise_plus,
        a.rise_minus,
        cp,
        cm,
        p,
        a.center_loss,
    ])
}

/// Refuses a grid the analysis cannot read unambiguously: empty, non-finite, or not strictly
/// increasing (a duplicate offset would make "the loss at t" two numbers; an unsorted grid is
/// almost always a caller's mistake, and sorting it silently would hide it).
fn check_offsets(offsets: &[f64]) -> crate::Result<()> {
    if offsets.is_empty() {
        return Err(avcore::error::Error::invalid(
            "offsets",
            "[] (empty)",
            "at least 3 offsets (0 and a pair +-r)",
        ));
    }
    if let Some((i, t)) = offsets.iter().enumerate().find(|(_, t)| !t.is_finite()) {
        return Err(avcore::error::Error::invalid(
            "offsets",
            format!("{t} at index {i}"),
            "finite numbers",
        ));
    }
    if let Some(i) = (1..offsets.len()).find(|&i| offsets[i] <= offsets[i - 1]) {
        return Err(avcore::error::Error::invalid(
            "offsets",
            format!("{} after {} at index {i}", offsets[i], offsets[i - 1]),
            "strictly increasing offsets (sorted, no duplicates)",
        ));
    }
    Ok(())
}
