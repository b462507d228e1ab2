//! The harness's error type.

/// Everything that can go wrong in the harness.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum HarnessError {
    /// Occurs when a parameter is outside its allowed range (`eta = -1`, `batches = 0`).
    #[error("invalid {field} = {value}: expected {expected}")]
    InvalidConfig {
        /// The parameter's name.
        field: &'static str,
        /// The value given, formatted.
        value: String,
        /// The allowed range.
        expected: &'static str,
    },
    /// Occurs when an SGD run leaves every bounded region (step size too large for the curvature).
    #[error(
        "sgd diverged: x = {x} after {step} steps (eta too large for the valley's curvature?)"
    )]
    Diverged {
        /// Steps taken.
        step: u64,
        /// The last iterate (its largest coordinate in d dimensions).
        x: f64,
    },
}

impl HarnessError {
    pub(crate) fn invalid(
        field: &'static str,
        value: impl std::fmt::Display,
        expected: &'static str,
    ) -> Self {
        HarnessError::InvalidConfig {
            field,
            value: value.to_string(),
            expected,
        }
    }
}
