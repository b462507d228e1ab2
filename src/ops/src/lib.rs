//! The Rust half of the TorchScript op library (`torch.ops.asymvalley.*`, `torch.classes.asymvalley.Averager`).
//!
//! The C++ side (`src/ops/csrc/ops.cpp`) registers the ops and calls `at::_foreach_*`; before it
//! touches a tensor it asks these `extern "C"` functions whether the call is valid, and the
//! custom class asks what each `update` does ([`AveragerConfig::action`], the same decision the
//! Rust [`avcore::average::Averager`] makes). The shim passes plain descriptions of its tensors
//! (dtype code, shape, device name, byte span), so nothing here can throw a C++ exception or
//! read device memory, and every entry point runs under `catch_unwind`: no panic crosses into C++.
//!
//! Each function returns NULL on success or an error message that the caller must hand back to
//! [`asymvalley_op_free_error`]; the shim rethrows it with `TORCH_CHECK`, which Python sees as a
//! `RuntimeError`.
//!
//! Hot path: `swa_update_` / `ema_update_` / `Averager.update` first run `quick_update_ok` in the
//! shim, a tight C++ loop over the checks of [`check_update`] on the live tensors (about a tenth
//! of the cost of building descriptions for this module: no device strings, no size vectors).
//! It may only accept calls that [`check_update`] accepts; anything it is unsure of comes here,
//! and this module stays the one place that decides and words every error. A change to
//! [`check_update`] or [`check`] that rejects more must be mirrored there.
pub mod check;
pub mod valley;

use avcore::average::{Action, AveragerConfig, EmaConfig, Rule, Warmup};
use avcore::error::{Error, Result};
use check::{Arg, Desc, DtypeRule};
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A tensor as the C++ shim describes it (must match `AsvTensorDesc` in `src/csrc/ops.cpp`).
#[repr(C)]
pub struct AsvTensorDesc {
    /// c10 `ScalarType` code.
    pub dtype: i32,
    /// Whether `[start, end)` is meaningful (false for tensors without storage, such as meta).
    pub has_span: i32,
    /// Number of dimensions.
    pub ndim: i64,
    /// `ndim` sizes.
    pub sizes: *const i64,
    /// NUL-terminated device name (`cpu`, `cuda:0`).
    pub device: *const c_char,
    /// First byte the elements occupy.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

/// Copies `n` descriptions into owned values.
///
/// # Safety
/// `p` points to `n` valid `AsvTensorDesc`s (or `n == 0`), each with `ndim` readable sizes and a
/// NUL-terminated device name, all alive for the call.
unsafe fn descs(p: *const AsvTensorDesc, n: usize) -> Vec<Desc> {
    if n == 0 || p.is_null() {
        return Vec::new();
    }
    // SAFETY: the caller guarantees `n` elements at `p`.
    let raw = unsafe { std::slice::from_raw_parts(p, n) };
    raw.iter()
        .map(|d| {
            let ndim = usize::try_from(d.ndim).unwrap_or(0);
            let sizes = if ndim == 0 || d.sizes.is_null() {
                Vec::new()
            } else {
                // SAFETY: `ndim` sizes are readable (caller's contract).
                unsafe { std::slice::from_raw_parts(d.sizes, ndim) }.to_vec()
            };
            let device = if d.device.is_null() {
                String::from("?")
            } else {
                // SAFETY: NUL-terminated and alive for the call (caller's contract).
                unsafe { CStr::from_ptr(d.device) }
                    .to_string_lossy()
                    .into_owned()
            };
            Desc {
                dtype: d.dtype,
                sizes,
                device,
                span: (d.has_span != 0).then_some((d.start, d.end)),
            }
        })
        .collect()
}

/// # Safety
/// `p` is NULL or NUL-terminated and alive for the call.
unsafe fn text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: caller's contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn into_message(result: std::thread::Result<Result<()>>) -> *mut c_char {
    let msg = match result {
        Ok(Ok(())) => return std::ptr::null_mut(),
        Ok(Err(e)) => e.to_string(),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            format!("asymvalley internal error (please report): {what}")
        }
    };
    CString::new(msg.replace('\0', " "))
        .map(CString::into_raw)
        .unwrap_or(std::ptr::null_mut())
}

/// Frees a message returned by one of the `asymvalley_op_*` functions.
///
/// # Safety
/// `msg` is NULL or a pointer returned by this module and not freed yet.
#[no_mangle]
pub unsafe extern "C" fn asymvalley_op_free_error(msg: *mut c_char) {
    if !msg.is_null() {
        // SAFETY: it came from `CString::into_raw` in `into_message`.
        drop(unsafe { CString::from_raw(msg) });
    }
}

/// The SWA weight of the (n+1)-th snapshot, `1/(n+1)` in f64 ([`avcore::average::swa_weight`]).
///
/// PyTorch's `AveragedModel` computes the same update two ways: on CUDA `_foreach_lerp_` with
/// `1/(n+1)` rounded to fp32; on the CPU (no foreach kernels there, for it) `avg + (θ − avg)/(n+1)`.
/// The op always lerps with the exact weight: within an ulp or two of either, and fp64 averages
/// are not limited to an fp32-rounded weight.
#[no_mangle]
pub extern "C" fn asymvalley_op_swa_weight(n_averaged: i64) -> f64 {
    avcore::average::swa_weight(u64::try_from(n_averaged).unwrap_or(0))
}

/// Validates `swa_update_` / `ema_update_` (and `Averager.update`): `avg` is written from
/// `params`; `counter` (nullable) is `n_averaged`; `decay` is checked when `has_decay != 0`.
///
/// # Safety
/// Every pointer follows the contract of [`AsvTensorDesc`]; `op` is NUL-terminated.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn asymvalley_op_check_update(
    op: *const c_char,
    avg: *const AsvTensorDesc,
    n_avg: usize,
    params: *const AsvTensorDesc,
    n_params: usize,
    counter: *const AsvTensorDesc,
    decay: f64,
    has_decay: i32,
) -> *mut c_char {
    into_message(catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: forwarded caller contract.
        let (op, avg, params) = unsafe { (text(op), descs(avg, n_avg), descs(params, n_params)) };
        // SAFETY: forwarded caller contract (NULL gives an empty list).
        let counter = unsafe { descs(counter, usize::from(!counter.is_null())) };
        check_update(
            leak_op(&op),
            &avg,
            &params,
            counter.first(),
            (has_decay != 0).then_some(decay),
        )
    })))
}

/// Op names are few and fixed; mapping them to `'static` keeps [`Error`]'s `&'static str` fields.
fn leak_op(op: &str) -> &'static str {
    match op {
        "swa_update_" => "swa_update_",
        "ema_update_" => "ema_update_",
        "bias_toward_flat_" => "bias_toward_flat_",
        "Averager.update" => "Averager.update",
        "Averager.copy_to" => "Averager.copy_to",
        "Averager.swap" => "Averager.swap",
        _ => "asymvalley op",
    }
}

/// The checks of `swa_update_` / `ema_update_` in order: lists, dtypes, shapes, devices, counter,
/// decay, aliasing.
pub fn check_update(
    op: &'static str,
    avg: &[Desc],
    params: &[Desc],
    counter: Option<&Desc>,
    decay: Option<f64>,
) -> Result<()> {
    check::check_pairing(
        op,
        Arg {
            name: "avg",
            tensors: avg,
            mutated: true,
        },
        &[Arg {
            name: "params",
            tensors: params,
            mutated: false,
        }],
        DtypeRule::Accumulate,
    )?;
    if let Some(n) = counter {
        check::check_counter(op, n, &avg[0])?;
    }
    if let Some(d) = decay {
        check::check_decay(op, d)?;
    }
    let n = counter.map(std::slice::from_ref).unwrap_or(&[]);
    check::check_aliasing(
        op,
        &[
            ("avg", avg, true),
            ("params", params, false),
            ("n_averaged", n, true),
        ],
    )
}

/// Validates `bias_toward_flat_(out, avg, anchor, beta)`. `out` may alias `avg` or `anchor` (the
/// kernel computes into a temporary first) but not itself.
///
/// # Safety
/// Every pointer follows the contract of [`AsvTensorDesc`].
#[no_mangle]
pub unsafe extern "C" fn asymvalley_op_check_bias(
    out: *const AsvTensorDesc,
    n_out: usize,
    avg: *const AsvTensorDesc,
    n_avg: usize,
    anchor: *const AsvTensorDesc,
    n_anchor: usize,
    beta: f64,
) -> *mut c_char {
    into_message(catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: forwarded caller contract.
        let (out, avg, anchor) = unsafe {
            (
                descs(out, n_out),
                descs(avg, n_avg),
                descs(anchor, n_anchor),
            )
        };
        check_bias(&out, &avg, &anchor, beta)
    })))
}

/// The checks of `bias_toward_flat_`.
pub fn check_bias(out: &[Desc], avg: &[Desc], anchor: &[Desc], beta: f64) -> Result<()> {
    let op = "bias_toward_flat_";
    // `avg` is the reference list: `anchor` accumulates into its dtype, `out` takes any float.
    check::check_pairing(
        op,
        Arg {
            name: "avg",
            tensors: avg,
            mutated: false,
        },
        &[Arg {
            name: "anchor",
            tensors: anchor,
            mutated: false,
        }],
        DtypeRule::Accumulate,
    )?;
    check::check_pairing(
        op,
        Arg {
            name: "avg",
            tensors: avg,
            mutated: false,
        },
        &[Arg {
            name: "out",
            tensors: out,
            mutated: true,
        }],
        DtypeRule::Convert,
    )?;
    if !beta.is_finite() {
        return Err(Error::invalid(
            "beta",
            format!("{beta} (in {op})"),
            "a finite number",
        ));
    }
    check::check_aliasing(op, &[("out", out, true)])
}

/// Validates `Averager.copy_to` / `Averager.swap`: `dst` (the model's tensors) is written from the
/// average; any floating dtypes convert. `swap` also writes the average (`src_mutated`).
///
/// # Safety
/// Every pointer follows the contract of [`AsvTensorDesc`]; `op` is NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn asymvalley_op_check_write(
    op: *const c_char,
    dst: *const AsvTensorDesc,
    n_dst: usize,
    src: *const AsvTensorDesc,
    n_src: usize,
    src_mutated: i32,
) -> *mut c_char {
    into_message(catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: forwarded caller contract.
        let (op, dst, src) = unsafe { (text(op), descs(dst, n_dst), descs(src, n_src)) };
        let op = leak_op(&op);
        if dst.len() != src.len() {
            return Err(Error::LengthMismatch {
                op,
                expected_name: "the averaged tensors",
                expected: src.len(),
                name: "params",
                got: dst.len(),
            });
        }
        check::check_pairing(
            op,
            Arg {
                name: "params",
                tensors: &dst,
                mutated: true,
            },
            &[Arg {
                name: "average",
                tensors: &src,
                mutated: src_mutated != 0,
            }],
            DtypeRule::Convert,
        )?;
        check::check_aliasing(
            op,
            &[("params", &dst, true), ("average", &src, src_mutated != 0)],
        )
    })))
}

#[allow(clippy::too_many_arguments)]
fn averager_config(
    mode: &str,
    warmup: &str,
    decay: f64,
    inv_gamma: f64,
    power: f64,
    min_decay: f64,
    update_after_step: i64,
    update_every: i64,
) -> Result<AveragerConfig> {
    let warmup = match warmup {
        "none" => Warmup::None,
        "tf" => Warmup::TfStyle,
        "power" => Warmup::Power {
            gamma: inv_gamma,
            power,
            min_decay,
        },
        other => {
            return Err(Error::invalid(
                "warmup",
                format!("{other:?}"),
                "\"none\", \"tf\" or \"power\"",
            ))
        }
    };
    let rule = match mode {
        "swa" => Rule::Swa,
        "ema" => Rule::Ema(EmaConfig { decay, warmup }),
        other => {
            return Err(Error::invalid(
                "mode",
                format!("{other:?}"),
                "\"swa\" or \"ema\"",
            ))
        }
    };
    let update_after_step = u64::try_from(update_after_step)
        .map_err(|_| Error::invalid("update_after_step", update_after_step, "an integer >= 0"))?;
    let update_every = u64::try_from(update_every)
        .map_err(|_| Error::invalid("update_every", update_every, "an integer >= 1"))?;
    let config = AveragerConfig {
        rule,
        update_after_step,
        update_every,
        average_buffers: false,
    };
    config.validate()?;
    Ok(config)
}

/// What `Averager.update` does after `steps` earlier calls with `n_averaged` averages so far:
/// writes 0 (skip), 1 (mirror: copy, not counted), 2 (copy: the first average) or 3 (lerp with
/// `*weight`) to `*action`. Also validates the configuration (so the constructor calls it with
/// `steps = 0`). `mode` is `swa` or `ema`; `warmup` is `none`, `tf` or `power`.
///
/// # Safety
/// `mode` and `warmup` are NUL-terminated; `action` and `weight` are writable.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn asymvalley_op_averager_plan(
    mode: *const c_char,
    warmup: *const c_char,
    decay: f64,
    inv_gamma: f64,
    power: f64,
    min_decay: f64,
    update_after_step: i64,
    update_every: i64,
    steps: i64,
    n_averaged: i64,
    action: *mut i32,
    weight: *mut f64,
) -> *mut c_char {
    into_message(catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: forwarded caller contract.
        let (mode, warmup) = unsafe { (text(mode), text(warmup)) };
        let config = averager_config(
            &mode,
            &warmup,
            decay,
            inv_gamma,
            power,
            min_decay,
            update_after_step,
            update_every,
        )?;
        let steps =
            u64::try_from(steps).map_err(|_| Error::invalid("steps", steps, "an integer >= 0"))?;
        let n = u64::try_from(n_averaged)
            .map_err(|_| Error::invalid("n_averaged", n_averaged, "an integer >= 0"))?;
        let (code, w) = match config.action(steps, n) {
            Action::Skip => (0, 0.0),
            Action::Mirror => (1, 1.0),
            Action::Copy => (2, 1.0),
            Action::Lerp { weight } => (3, weight),
        };
        if action.is_null() || weight.is_null() {
            return Err(Error::invalid("action/weight", "NULL", "writable pointers"));
        }
        // SAFETY: both are writable (caller's contract) and non-null (checked).
        unsafe {
            *action = code;
            *weight = w;
        }
        Ok(())
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swa_weight_is_the_exact_reciprocal() {
        assert_eq!(asymvalley_op_swa_weight(0), 1.0);
        assert_eq!(asymvalley_op_swa_weight(3), 0.25);
    }

    #[test]
    fn averager_config_rejects_bad_strings_and_ranges() {
        let ok = |m: &str, w: &str, d: f64, every: i64| {
            averager_config(m, w, d, 1.0, 0.75, 0.0, 0, every).map(|_| ())
        };
        assert!(ok("ema", "tf", 0.999, 1).is_ok());
        assert!(ok("swa", "none", 0.999, 1).is_ok());
        assert!(ok("sma", "none", 0.999, 1)
            .unwrap_err()
            .to_string()
            .contains("\"sma\""));
        assert!(ok("ema", "cosine", 0.999, 1).is_err());
        assert!(ok("ema", "none", 1.0, 1).is_err());
        assert!(ok("ema", "none", 0.9, 0).is_err());
    }
}
