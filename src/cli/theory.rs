//! `asymvalley theory` (being built).
use crate::error::{Error, Result};

/// Arguments of `asymvalley theory`.
#[derive(clap::Args, Debug)]
pub struct TheoryArgs {}

/// Runs `asymvalley theory`.
pub fn run(_args: TheoryArgs) -> Result<()> {
    Err(Error::invalid(
        "command",
        "theory",
        "a command that is built (this one is not yet)",
    ))
}
