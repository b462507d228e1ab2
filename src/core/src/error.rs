//! The crate's one error type.
//!
//! Every variant names the argument (or tensor) at fault, the value seen and what was expected,
//! so a message read in a log says what to change without opening the source.
use std::path::PathBuf;

/// Everything that can go wrong in asymvalley.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Occurs when a configuration value is outside its allowed range (`decay = 1.5`, `update_every = 0`).
    #[error("invalid {field} = {value}: expected {expected}")]
    InvalidConfig {
        /// The argument's name as the user spells it.
        field: &'static str,
        /// The value given, formatted.
        value: String,
        /// The allowed range or set.
        expected: String,
    },
    /// Occurs when two lists that must pair up element by element have different lengths.
    #[error("{op}: {name} has {got} tensors but {expected_name} has {expected}")]
    LengthMismatch {
        /// The operation that was called.
        op: &'static str,
        /// The list whose length is the reference.
        expected_name: &'static str,
        /// Its length.
        expected: usize,
        /// The list whose length differs.
        name: &'static str,
        /// Its length.
        got: usize,
    },
    /// Occurs when a tensor does not match its counterpart (shape, dtype, device) or the model
    /// and the averager (or a checkpoint) disagree about a named variable.
    #[error("{what} `{name}`: got {got}, expected {expected}")]
    Mismatch {
        /// What kind of mismatch ("shape of variable", "dtype of variable", ...).
        what: &'static str,
        /// The variable or argument name.
        name: String,
        /// What was found.
        got: String,
        /// What was expected.
        expected: String,
    },
    /// Occurs when a named variable is in one side of a pairing (model vs average, model vs
    /// checkpoint) but not in the other.
    #[error("variable `{name}` is missing from {missing_from}")]
    MissingVariable {
        /// The variable name.
        name: String,
        /// Where it is missing ("the model", "the checkpoint", ...).
        missing_from: &'static str,
    },
    /// Occurs when a checkpoint file cannot be read back: truncated, corrupted or not ours.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Occurs when a data file lacks a tensor or holds one of the wrong shape or dtype.
    #[error("data {path}: {reason}")]
    Data {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Occurs when a computation produced a non-finite number where a finite one is required.
    #[error("{what} is not finite ({value})")]
    NotFinite {
        /// What was being computed.
        what: String,
        /// The value.
        value: f64,
    },
    /// Occurs when a C++ kernel of the shim throws.
    #[error("{op}: {msg}")]
    Shim {
        /// The shim operation.
        op: &'static str,
        /// libtorch's message.
        msg: String,
    },
    /// Occurs when libtorch itself reports an error through tch.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// Occurs on a filesystem error.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Occurs when JSON (a report, a checkpoint's metadata) cannot be written or read.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::InvalidConfig`].
    pub fn invalid(
        field: &'static str,
        value: impl std::fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        Error::InvalidConfig {
            field,
            value: value.to_string(),
            expected: expected.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
