//! The command-line front ends; each subcommand is one file with its clap `Args` and a `run`.
pub mod demo;
pub mod probe;
pub mod theory;
