//! `asymvalley probe` (being built).
use crate::error::{Error, Result};

/// Arguments of `asymvalley probe`.
#[derive(clap::Args, Debug)]
pub struct ProbeArgs {}

/// Runs `asymvalley probe`.
pub fn run(_args: ProbeArgs) -> Result<()> {
    Err(Error::invalid(
        "command",
        "probe",
        "a command that is built (this one is not yet)",
    ))
}
