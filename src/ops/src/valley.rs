//! The body of `torch.ops.asymvalley.valley_asymmetry(offsets: Tensor, losses: Tensor) -> Tensor`
//! (registered in `src/csrc/valley_op.cpp`).
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
use avcore::valley::asymmetry::{analyze, AsymmetryConfig};
use std::ffi::CString;
use std::os::raw::c_char;

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

fn message(s: String) -> *mut c_char {
    CString::new(s.replace('\0', " "))
        .map(CString::into_raw)
        .unwrap_or(std::ptr::null_mut())
}

/// The number of output fields (the C++ kernel sizes its output with it).
#[no_mangle]
pub extern "C" fn asymvalley_valley_asymmetry_fields() -> usize {
    FIELDS.len()
}

/// Frees a message returned by [`asymvalley_valley_asymmetry_raw`].
///
/// # Safety
/// `msg` is NULL or a pointer returned by `asymvalley_valley_asymmetry_raw`, freed once.
#[no_mangle]
pub unsafe extern "C" fn asymvalley_valley_free_rust_message(msg: *mut c_char) {
    if !msg.is_null() {
        // SAFETY: per the contract, msg came from CString::into_raw and is freed once.
        drop(unsafe { CString::from_raw(msg) });
    }
}

/// C entry point of the op: reads `n` offsets and losses, writes `out_len` fields.
/// Returns NULL, or an error message (never unwinds into C++).
///
/// # Safety
/// `offsets` and `losses` point to `n` readable doubles, `out` to `out_len` writable ones.
#[no_mangle]
pub unsafe extern "C" fn asymvalley_valley_asymmetry_raw(
    offsets: *const f64,
    losses: *const f64,
    n: usize,
    out: *mut f64,
    out_len: usize,
) -> *mut c_char {
    if offsets.is_null() || losses.is_null() || out.is_null() || out_len != FIELDS.len() {
        return message(format!(
            "invalid buffers (out_len = {out_len}, expected {})",
            FIELDS.len()
        ));
    }
    // SAFETY: per the contract the three buffers are valid for n, n and out_len doubles.
    let (o, l, dst) = unsafe {
        (
            std::slice::from_raw_parts(offsets, n),
            std::slice::from_raw_parts(losses, n),
            std::slice::from_raw_parts_mut(out, out_len),
        )
    };
    match std::panic::catch_unwind(|| valley_asymmetry(o, l)) {
        Ok(Ok(fields)) => {
            dst.copy_from_slice(&fields);
            std::ptr::null_mut()
        }
        Ok(Err(e)) => message(e.to_string()),
        Err(_) => message("internal error (panic) in valley_asymmetry".into()),
    }
}
