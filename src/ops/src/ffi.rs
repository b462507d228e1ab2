//! Every `extern "C"` function of the op library and every `unsafe` of this crate.
//!
//! The C++ side (`csrc/`) validates tensors itself (`csrc/validate.cpp`) and calls these for what
//! Rust decides: the `Averager` rule ([`asymvalley_op_rule_parse`] once per construction,
//! [`asymvalley_op_rule_plan`] per update) and the bodies of `valley_asymmetry` and `valley_probe`. The types are
//! those of [`crate::abi`], whose C++ header `build.rs` generates.
//!
//! Each function runs its body under `catch_unwind` (no panic crosses into C++) and returns NULL
//! on success or an error message, which the caller hands back to [`asymvalley_op_free_error`],
//! the one function that frees them; the C++ side rethrows it with `TORCH_CHECK`.
use crate::abi::{AsvPlan, AsvRule};
use crate::rule::{self, RuleArgs};
use avcore::error::Result;
use std::ffi::{c_char, c_void, CStr, CString};
use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `body`, turning an error or a panic into a message for C++.
fn guarded(body: impl FnOnce() -> Result<()>) -> *mut c_char {
    let msg = match catch_unwind(AssertUnwindSafe(body)) {
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

/// A message for a NULL pointer where the contract wants one.
fn null(what: &'static str) -> avcore::error::Error {
    avcore::error::Error::invalid(what, "NULL", "a valid pointer (asymvalley internal error)")
}

/// Frees a message returned by any function of this module.
///
/// # Safety
/// `msg` is NULL or a pointer returned by this module and not freed yet.
#[no_mangle]
pub unsafe extern "C" fn asymvalley_op_free_error(msg: *mut c_char) {
    if !msg.is_null() {
        // SAFETY: it came from `CString::into_raw` in `guarded` and is freed once (caller's contract).
        drop(unsafe { CString::from_raw(msg) });
    }
}

/// # Safety
/// `p` is NULL or NUL-terminated and alive for the call.
unsafe fn text<'a>(p: *const c_char) -> std::borrow::Cow<'a, str> {
    if p.is_null() {
        return std::borrow::Cow::Borrowed("");
    }
    // SAFETY: NUL-terminated and alive for the call (caller's contract).
    unsafe { CStr::from_ptr(p) }.to_string_lossy()
}

/// Parses and validates an `Averager`'s constructor arguments into `*out` (left untouched on
/// error). `mode` is `swa` or `ema`; `warmup` is `none`, `tf` or `power`.
///
/// # Safety
/// `mode` and `warmup` are NUL-terminated; `out` is writable.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn asymvalley_op_rule_parse(
    mode: *const c_char,
    warmup: *const c_char,
    decay: f64,
    inv_gamma: f64,
    power: f64,
    min_decay: f64,
    update_after_step: i64,
    update_every: i64,
    out: *mut AsvRule,
) -> *mut c_char {
    guarded(|| {
        // SAFETY: forwarded caller contract.
        let (mode, warmup) = unsafe { (text(mode), text(warmup)) };
        let parsed = rule::parse(&RuleArgs {
            mode: &mode,
            warmup: &warmup,
            decay,
            inv_gamma,
            power,
            min_decay,
            update_after_step,
            update_every,
        })?;
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: `out` is writable (caller's contract) and not NULL (checked).
        unsafe { out.write(parsed) };
        Ok(())
    })
}

/// Writes to `*out` what the update after `steps` earlier ones, with `n_averaged` averages so
/// far, does under `*rule`.
///
/// # Safety
/// `rule` points to an `AsvRule` written by [`asymvalley_op_rule_parse`] (so its enums hold valid
/// values); `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn asymvalley_op_rule_plan(
    rule: *const AsvRule,
    steps: i64,
    n_averaged: i64,
    out: *mut AsvPlan,
) -> *mut c_char {
    guarded(|| {
        if rule.is_null() || out.is_null() {
            return Err(null("rule/out"));
        }
        // SAFETY: a valid rule from `asymvalley_op_rule_parse` (caller's contract), not NULL.
        let plan = rule::plan(unsafe { &*rule }, steps, n_averaged)?;
        // SAFETY: `out` is writable (caller's contract) and not NULL (checked).
        unsafe { out.write(plan) };
        Ok(())
    })
}

/// The SWA weight of the (n+1)-th snapshot, `1/(n+1)` in f64 ([`avcore::average::swa_weight`]).
///
/// PyTorch's `AveragedModel` computes the same update two ways: on CUDA `_foreach_lerp_` with
/// `1/(n+1)` rounded to fp32; on the CPU `avg + (θ − avg)/(n+1)`. The op always lerps with the
/// exact weight: within an ulp or two of either, and fp64 averages are not limited to an
/// fp32-rounded weight. A negative `n` (refused by the caller first) gives the copy weight 1.
#[no_mangle]
pub extern "C" fn asymvalley_op_swa_weight(n_averaged: i64) -> f64 {
    avcore::average::swa_weight(u64::try_from(n_averaged).unwrap_or(0))
}

/// The number of output fields of `valley_asymmetry` (the C++ kernel sizes its output with it).
#[no_mangle]
pub extern "C" fn asymvalley_valley_asymmetry_fields() -> usize {
    crate::valley::FIELDS.len()
}

/// The body of `valley_asymmetry`: reads `n` offsets and losses, writes `out_len` fields.
///
/// # Safety
/// `offsets` and `losses` point to `n` readable doubles, `out` to `out_len` writable ones, none
/// overlapping `out`.
#[no_mangle]
pub unsafe extern "C" fn asymvalley_valley_asymmetry_raw(
    offsets: *const f64,
    losses: *const f64,
    n: usize,
    out: *mut f64,
    out_len: usize,
) -> *mut c_char {
    guarded(|| {
        let fields = crate::valley::FIELDS.len();
        if offsets.is_null() || losses.is_null() || out.is_null() || out_len != fields {
            return Err(avcore::error::Error::invalid(
                "buffers",
                format!("out_len = {out_len}"),
                format!("{fields} output fields and non-NULL pointers"),
            ));
        }
        // SAFETY: per the contract the two inputs hold n readable doubles each.
        let (o, l) = unsafe {
            (
                std::slice::from_raw_parts(offsets, n),
                std::slice::from_raw_parts(losses, n),
            )
        };
        let result = crate::valley::valley_asymmetry(o, l)?;
        // SAFETY: per the contract `out` holds out_len (== fields) writable doubles, apart
        // from the inputs.
        unsafe { std::slice::from_raw_parts_mut(out, out_len) }.copy_from_slice(&result);
        Ok(())
    })
}

/// Receives each output tensor of `valley_probe` (borrowed: the callee copies the handle).
pub type TensorSink = extern "C" fn(data: *mut c_void, t: *const torch_sys::C_tensor);

/// The body of `valley_probe` ([`crate::probe::valley_probe`]): takes ownership of the
/// `n_tensors` tensors, runs the probe, writes the reply JSON to `*out_json` (to be freed with
/// [`asymvalley_op_free_error`]) and hands each direction tensor to `sink(data, t)`.
///
/// # Safety
/// `module` points to `module_len` readable bytes; `tensors` to `n_tensors` pointers, each a
/// fresh `new at::Tensor` whose ownership passes here (all of them, whatever the outcome);
/// `request` is NUL-terminated; `out_json` is writable; `sink` may be called during the call.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn asymvalley_valley_probe_raw(
    module: *const u8,
    module_len: usize,
    tensors: *const *mut torch_sys::C_tensor,
    n_tensors: usize,
    has_test: c_int,
    request: *const c_char,
    out_json: *mut *mut c_char,
    sink: TensorSink,
    data: *mut c_void,
) -> *mut c_char {
    // Ownership is taken first, outside the guard's early returns, so no tensor leaks.
    let owned: Vec<tch::Tensor> = if tensors.is_null() {
        Vec::new()
    } else {
        // SAFETY: `n_tensors` pointers, each owned by us from here on (caller's contract).
        unsafe { std::slice::from_raw_parts(tensors, n_tensors) }
            .iter()
            .filter(|p| !p.is_null())
            // SAFETY: a fresh `at::Tensor*` handed over (caller's contract), freed once by Drop.
            .map(|&p| unsafe { tch::Tensor::from_ptr(p) })
            .collect()
    };
    guarded(|| {
        if module.is_null() || out_json.is_null() || owned.len() != n_tensors {
            return Err(null("module/out_json/tensors"));
        }
        // SAFETY: `module_len` readable bytes (caller's contract), not NULL (checked).
        let bytes = unsafe { std::slice::from_raw_parts(module, module_len) };
        // SAFETY: NUL-terminated (caller's contract).
        let request = unsafe { text(request) };
        let (json, out) = crate::probe::valley_probe(bytes, owned, has_test != 0, &request)?;
        for t in &out {
            sink(data, t.as_ptr());
        }
        let json = CString::new(json.replace('\0', " ")).map_err(|_| null("json"))?;
        // SAFETY: writable (caller's contract), not NULL (checked).
        unsafe { out_json.write(json.into_raw()) };
        Ok(())
    })
}

/// Writes to `*out` whether `value` (NULL: the variable is unset) turns the fused CUDA path on
/// ([`crate::switch::parse`]); an error message names the variable and the value otherwise.
///
/// # Safety
/// `value` is NULL or NUL-terminated; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn asymvalley_op_fused_cuda_switch(
    value: *const c_char,
    out: *mut c_int,
) -> *mut c_char {
    guarded(|| {
        // SAFETY: forwarded caller contract.
        let v = (!value.is_null()).then(|| unsafe { text(value) });
        let on = crate::switch::parse(v.as_deref()).map_err(|msg| {
            avcore::error::Error::InvalidConfig {
                field: crate::switch::VAR,
                value: v.as_deref().unwrap_or("").to_string(),
                expected: msg,
            }
        })?;
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: writable (caller's contract), not NULL (checked).
        unsafe { out.write(c_int::from(on)) };
        Ok(())
    })
}

/// The op library's fused CUDA plans: one per fingerprint of a call's pairs, so repeated updates
/// of one model reuse theirs (no table upload, no host-to-device copy per step).
fn plan_cache() -> &'static std::sync::Mutex<avcore::plan::PlanCache> {
    static CACHE: std::sync::OnceLock<std::sync::Mutex<avcore::plan::PlanCache>> =
        std::sync::OnceLock::new();
    CACHE.get_or_init(|| std::sync::Mutex::new(avcore::plan::PlanCache::default()))
}

/// How many fused CUDA launches this process ran through [`asymvalley_op_cuda_fused`].
static CUDA_LAUNCHES: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Tensors borrowed from C++ for one call: never freed here (C++ owns them), even on a panic.
struct Borrowed(Vec<tch::Tensor>);

impl Borrowed {
    /// # Safety
    /// `base` points to `n` live `at::Tensor`s laid `stride` bytes apart (a `TensorList`).
    unsafe fn new(base: *const c_void, stride: usize, n: usize) -> Self {
        Borrowed(
            (0..n)
                // SAFETY: inside the caller's array; tch's handle is an `at::Tensor*`.
                .map(|i| unsafe {
                    tch::Tensor::from_ptr(base.cast::<u8>().add(i * stride).cast_mut().cast())
                })
                .collect(),
        )
    }
}

impl Drop for Borrowed {
    fn drop(&mut self) {
        for t in self.0.drain(..) {
            std::mem::forget(t);
        }
    }
}

/// One fused CUDA pass (the core's kernel, [`avcore::plan::PlanCache`]) over the pairs
/// `(avg[t], model[t])`: `op` is 0 (lerp, weight `scalar`), 1 (copy-in) or 3 (bias: `model ←
/// avg + scalar·(avg − model)`), the codes of `fused/cpu.h`. When `scalar_tensor` is not NULL
/// (a 0-dim float64 tensor on the pairs' device), the kernel reads the scalar from it. Writes 1
/// to `*taken` when the kernel was launched, 0 when the pairs cannot take it (not contiguous,
/// mixed devices, a half average, no driver or NVRTC): nothing is then written and the caller
/// runs its `_foreach` path. The caller has validated the call.
///
/// # Safety
/// `avg` and `model` point to `n` live `at::Tensor`s each, `stride` bytes apart; `scalar_tensor`
/// is NULL or a live `at::Tensor`; `taken` is writable.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn asymvalley_op_cuda_fused(
    op: c_int,
    avg: *const c_void,
    model: *const c_void,
    n: usize,
    stride: usize,
    scalar: f64,
    scalar_tensor: *const c_void,
    taken: *mut c_int,
) -> *mut c_char {
    guarded(|| {
        if taken.is_null() || (n > 0 && (avg.is_null() || model.is_null())) {
            return Err(null("avg/model/taken"));
        }
        let op = match op {
            0 => avcore::plan::FusedOp::Lerp(scalar),
            1 => avcore::plan::FusedOp::CopyIn,
            3 => avcore::plan::FusedOp::Bias(scalar),
            other => {
                return Err(avcore::error::Error::invalid(
                    "op",
                    other,
                    "0 (lerp), 1 (copy-in) or 3 (bias)",
                ))
            }
        };
        // SAFETY: the caller's arrays (contract above).
        let (a, m) = unsafe {
            (
                Borrowed::new(avg, stride, n),
                Borrowed::new(model, stride, n),
            )
        };
        // SAFETY: a live tensor when not NULL (contract above).
        let s = (!scalar_tensor.is_null()).then(|| unsafe { Borrowed::new(scalar_tensor, 0, 1) });
        let mut cache = plan_cache()
            .lock()
            .map_err(|_| avcore::error::Error::Shim {
                op: "fused CUDA update",
                msg: "the plan cache's lock was poisoned by a panic".into(),
            })?;
        let ran = cache.apply(op, &a.0, &m.0, s.as_ref().and_then(|s| s.0.first()))?;
        if ran.is_ok() {
            CUDA_LAUNCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        // SAFETY: writable (contract above), not NULL (checked).
        unsafe { taken.write(c_int::from(ran.is_ok())) };
        Ok(())
    })
}

/// How many launches [`asymvalley_op_cuda_fused`] made, and how many plans its cache built (the
/// GPU check holds repeated updates to one build).
///
/// # Safety
/// `launches` and `builds` are writable.
#[no_mangle]
pub unsafe extern "C" fn asymvalley_op_cuda_fused_stats(
    launches: *mut i64,
    builds: *mut i64,
) -> *mut c_char {
    guarded(|| {
        if launches.is_null() || builds.is_null() {
            return Err(null("launches/builds"));
        }
        let cache = plan_cache().lock().map_err(|_| null("plan cache"))?;
        // SAFETY: writable (caller's contract), not NULL (checked).
        unsafe {
            launches.write(CUDA_LAUNCHES.load(std::sync::atomic::Ordering::Relaxed));
            builds.write(i64::try_from(cache.builds()).unwrap_or(i64::MAX));
        }
        Ok(())
    })
}
