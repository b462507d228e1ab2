//! Input validation for the TorchScript ops, on plain tensor descriptions.
//!
//! The C++ shim describes each tensor (dtype, shape, device, the bytes it spans) and these pure
//! functions decide whether a call may touch them. Nothing here reads tensor data, so a check
//! costs no device synchronization and can run on meta tensors under `torch.compile`.
use avcore::error::{Error, Result};

/// c10 `ScalarType` codes (stable: they are part of PyTorch's serialization format).
mod code {
    pub const BYTE: i32 = 0;
    pub const CHAR: i32 = 1;
    pub const SHORT: i32 = 2;
    pub const INT: i32 = 3;
    pub const LONG: i32 = 4;
    pub const HALF: i32 = 5;
    pub const FLOAT: i32 = 6;
    pub const DOUBLE: i32 = 7;
    pub const BFLOAT16: i32 = 15;
}

/// What the checks need to know about one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Desc {
    /// c10 `ScalarType` code.
    pub dtype: i32,
    /// The shape.
    pub sizes: Vec<i64>,
    /// The device as PyTorch prints it (`cpu`, `cuda:0`, `meta`).
    pub device: String,
    /// `[start, end)` of the bytes the tensor's elements occupy; `None` without storage (meta).
    pub span: Option<(usize, usize)>,
}

/// PyTorch's name for a dtype code (`torch.float32`).
pub fn dtype_name(code: i32) -> String {
    let name = match code {
        code::BYTE => "uint8",
        code::CHAR => "int8",
        code::SHORT => "int16",
        code::INT => "int32",
        code::LONG => "int64",
        code::HALF => "float16",
        code::FLOAT => "float32",
        code::DOUBLE => "float64",
        8 => "complex32",
        9 => "complex64",
        10 => "complex128",
        11 => "bool",
        code::BFLOAT16 => "bfloat16",
        23 => "float8_e5m2",
        24 => "float8_e4m3fn",
        other => return format!("scalar type #{other}"),
    };
    format!("torch.{name}")
}

fn is_float(code: i32) -> bool {
    matches!(
        code,
        code::HALF | code::FLOAT | code::DOUBLE | code::BFLOAT16
    )
}

fn is_integer(code: i32) -> bool {
    matches!(
        code,
        code::BYTE | code::CHAR | code::SHORT | code::INT | code::LONG
    )
}

const FLOATS: &str =
    "a floating-point tensor (torch.float16, torch.bfloat16, torch.float32 or torch.float64)";

/// One named list of tensors, as the op's schema names it.
#[derive(Clone, Copy, Debug)]
pub struct Arg<'a> {
    /// The argument name (`avg`, `params`).
    pub name: &'static str,
    /// Its tensors.
    pub tensors: &'a [Desc],
    /// Whether the op writes into it.
    pub mutated: bool,
}

/// How a source's dtype may relate to its destination's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DtypeRule {
    /// The source's dtype, or any floating source when the destination is fp32/fp64 (an fp32
    /// average of a bf16 model). A half-precision destination accepts only its own dtype, so
    /// no precision is lost silently.
    Accumulate,
    /// Any floating pair (writing an fp32 average back into a bf16 model).
    Convert,
}

fn mismatch(what: &'static str, name: String, got: String, expected: String) -> Error {
    Error::Mismatch {
        what,
        name,
        got,
        expected,
    }
}

fn fmt_shape(s: &[i64]) -> String {
    format!("{s:?}")
}

/// Checks that `dst` and each source list pair up element by element: non-empty, the same
/// lengths, floating dtypes (related by `rule`), equal shapes and devices.
pub fn check_pairing(op: &'static str, dst: Arg, srcs: &[Arg], rule: DtypeRule) -> Result<()> {
    if dst.tensors.is_empty() {
        return Err(Error::invalid(
            dst.name,
            format!("an empty list (in {op})"),
            "at least one tensor",
        ));
    }
    for src in srcs {
        if src.tensors.len() != dst.tensors.len() {
            return Err(Error::LengthMismatch {
                op,
                expected_name: dst.name,
                expected: dst.tensors.len(),
                name: src.name,
                got: src.tensors.len(),
            });
        }
    }
    for (i, d) in dst.tensors.iter().enumerate() {
        if !is_float(d.dtype) {
            return Err(mismatch(
                "dtype of",
                format!("{}[{i}] (in {op})", dst.name),
                dtype_name(d.dtype),
                FLOATS.into(),
            ));
        }
        for src in srcs {
            let s = &src.tensors[i];
            let name = || format!("{}[{i}] (in {op})", src.name);
            if !is_float(s.dtype) {
                return Err(mismatch(
                    "dtype of",
                    name(),
                    dtype_name(s.dtype),
                    FLOATS.into(),
                ));
            }
            let dtype_ok = s.dtype == d.dtype
                || rule == DtypeRule::Convert
                || matches!(d.dtype, code::FLOAT | code::DOUBLE);
            if !dtype_ok {
                return Err(mismatch(
                    "dtype of",
                    name(),
                    dtype_name(s.dtype),
                    format!(
                        "{} (the dtype of {}[{i}]; only a float32/float64 {} accepts other dtypes)",
                        dtype_name(d.dtype),
                        dst.name,
                        dst.name
                    ),
                ));
            }
            if s.sizes != d.sizes {
                return Err(mismatch(
                    "shape of",
                    name(),
                    fmt_shape(&s.sizes),
                    format!("{} (the shape of {}[{i}])", fmt_shape(&d.sizes), dst.name),
                ));
            }
            if s.device != d.device {
                return Err(mismatch(
                    "device of",
                    name(),
                    s.device.clone(),
                    format!("{} (the device of {}[{i}])", d.device, dst.name),
                ));
            }
        }
    }
    Ok(())
}

/// Checks that `n_averaged` is a 0-dim integer tensor on the CPU or on the device of `avg[0]`.
pub fn check_counter(op: &'static str, n: &Desc, avg0: &Desc) -> Result<()> {
    let name = || format!("n_averaged (in {op})");
    if !n.sizes.is_empty() || !is_integer(n.dtype) {
        return Err(mismatch(
            "type of",
            name(),
            format!(
                "a {} tensor of shape {}",
                dtype_name(n.dtype),
                fmt_shape(&n.sizes)
            ),
            "a 0-dim integer tensor (shape [], e.g. torch.tensor(0))".into(),
        ));
    }
    if n.device != "cpu" && n.device != avg0.device {
        return Err(mismatch(
            "device of",
            name(),
            n.device.clone(),
            format!("cpu or {} (the device of avg[0])", avg0.device),
        ));
    }
    Ok(())
}

/// Checks a decay for `ema_update_`: a number in the open interval (0, 1).
pub fn check_decay(op: &'static str, decay: f64) -> Result<()> {
    if !(decay > 0.0 && decay < 1.0) {
        return Err(Error::invalid(
            "decay",
            format!("{decay} (in {op})"),
            "a number in the open interval (0, 1)",
        ));
    }
    Ok(())
}

/// Checks that no tensor the op writes shares memory with any other tensor of the call.
///
/// Sweeps the byte ranges in address order keeping the furthest-reaching range seen so far, both
/// over all tensors and over the written ones: every overlapping pair with a written member is
/// then caught when its later-starting member is reached. Overlaps among read-only tensors
/// (tied weights) are allowed.
pub fn check_aliasing(op: &'static str, args: &[(&'static str, &[Desc], bool)]) -> Result<()> {
    let mut spans: Vec<(usize, usize, &'static str, usize, bool)> = Vec::new();
    for &(name, tensors, mutated) in args {
        for (i, d) in tensors.iter().enumerate() {
            if let Some((start, end)) = d.span {
                if end > start {
                    spans.push((start, end, name, i, mutated));
                }
            }
        }
    }
    spans.sort_unstable_by_key(|s| (s.0, s.1));
    let mut any: Option<(usize, &'static str, usize)> = None;
    let mut written: Option<(usize, &'static str, usize)> = None;
    for &(start, end, name, i, mutated) in &spans {
        let hit = if mutated {
            any.filter(|a| start < a.0)
        } else {
            written.filter(|w| start < w.0)
        };
        if let Some((_, other, j)) = hit {
            return Err(Error::invalid(
                "aliasing",
                format!("{}[{j}] and {}[{i}] share memory (in {op})", other, name),
                "distinct tensors: a tensor the op writes must not overlap any other argument",
            ));
        }
        if any.map_or(true, |a| end > a.0) {
            any = Some((end, name, i));
        }
        if mutated && written.map_or(true, |w| end > w.0) {
            written = Some((end, name, i));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(dtype: i32, sizes: &[i64], span: (usize, usize)) -> Desc {
        Desc {
            dtype,
            sizes: sizes.to_vec(),
            device: "cpu".into(),
            span: Some(span),
        }
    }

    #[test]
    fn check_pairing_accepts_bf16_into_fp32_and_rejects_the_reverse() {
        let avg = [desc(code::FLOAT, &[2], (0, 8))];
        let p = [desc(code::BFLOAT16, &[2], (100, 104))];
        let ok = check_pairing(
            "t",
            Arg {
                name: "avg",
                tensors: &avg,
                mutated: true,
            },
            &[Arg {
                name: "params",
                tensors: &p,
                mutated: false,
            }],
            DtypeRule::Accumulate,
        );
        assert!(ok.is_ok());
        let err = check_pairing(
            "t",
            Arg {
                name: "avg",
                tensors: &p,
                mutated: true,
            },
            &[Arg {
                name: "params",
                tensors: &avg,
                mutated: false,
            }],
            DtypeRule::Accumulate,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("params[0]") && err.contains("torch.float32"),
            "{err}"
        );
    }

    #[test]
    fn check_aliasing_finds_a_written_overlap_hidden_behind_a_long_read_range() {
        let params = [
            desc(code::FLOAT, &[100], (0, 400)),
            desc(code::FLOAT, &[1], (10, 14)),
        ];
        let avg = [
            desc(code::FLOAT, &[1], (5, 9)),
            desc(code::FLOAT, &[1], (500, 504)),
        ];
        let err = check_aliasing("t", &[("avg", &avg, true), ("params", &params, false)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("avg[0]") && err.contains("params[0]"), "{err}");
        // Overlapping read-only tensors (tied weights) are fine.
        let avg = [
            desc(code::FLOAT, &[1], (500, 504)),
            desc(code::FLOAT, &[1], (600, 604)),
        ];
        assert!(check_aliasing("t", &[("avg", &avg, true), ("params", &params, false)]).is_ok());
    }

    #[test]
    fn check_counter_rejects_float_and_1d() {
        let avg0 = desc(code::FLOAT, &[2], (0, 8));
        assert!(check_counter("t", &desc(code::LONG, &[], (0, 8)), &avg0).is_ok());
        assert!(check_counter("t", &desc(code::FLOAT, &[], (0, 4)), &avg0).is_err());
        assert!(check_counter("t", &desc(code::LONG, &[1], (0, 8)), &avg0).is_err());
    }

    #[test]
    fn check_decay_rejects_the_closed_ends_and_nan() {
        for d in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
            assert!(check_decay("t", d).is_err(), "{d}");
        }
        assert!(check_decay("t", 0.999).is_ok());
    }
}
