//! The switch of the op library's fused CUDA path: `ASYMVALLEY_OP_FUSED_CUDA`.
//!
//! Off by default: the fused CUDA kernel has been compile-checked and host-tested only, so the
//! ops keep `at::_foreach_*` on CUDA until a GPU run (benches/gpu/run.sh, which measures both
//! settings) justifies flipping it. The C++ side reads the variable once per process, at the first
//! CUDA update (`csrc/fused_cuda.cpp`); `torch.ops.asymvalley._set_fused_cuda(bool)` overrides it.

/// The environment variable's name.
pub const VAR: &str = "ASYMVALLEY_OP_FUSED_CUDA";

/// What the variable's value means: unset, empty, `0`, `false`, `off` or `no` turn the path off;
/// `1`, `true`, `on` or `yes` turn it on (case and surrounding blanks ignored).
///
/// # Errors
/// Any other value, named with the variable and what was expected (a typo must not silently
/// leave the path off, or on).
pub fn parse(value: Option<&str>) -> Result<bool, String> {
    let Some(raw) = value else {
        return Ok(false);
    };
    match raw.trim().to_ascii_lowercase().as_str() {
        "" | "0" | "false" | "off" | "no" => Ok(false),
        "1" | "true" | "on" | "yes" => Ok(true),
        _ => Err(format!(
            "{VAR} = {raw:?}: expected 1/true/on/yes (fused CUDA kernel) or 0/false/off/no/unset \
             (the `_foreach` path)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn off_unless_asked_for() {
        for v in [
            None,
            Some(""),
            Some("0"),
            Some("false"),
            Some(" OFF "),
            Some("no"),
        ] {
            assert_eq!(parse(v), Ok(false), "{v:?}");
        }
        for v in ["1", "true", "On", " yes\n", "TRUE"] {
            assert_eq!(parse(Some(v)), Ok(true), "{v:?}");
        }
    }

    #[test]
    fn anything_else_is_refused_by_name() {
        for v in ["2", "enable", "1.0", "y"] {
            let e = parse(Some(v)).expect_err(v);
            assert!(e.contains("ASYMVALLEY_OP_FUSED_CUDA"), "{e}");
            assert!(e.contains(&format!("{v:?}")), "{e}");
            assert!(e.contains("expected"), "{e}");
        }
    }
}
