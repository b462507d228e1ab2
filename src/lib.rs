//! asymvalley: weight averaging (SWA, EMA, flat-side bias) and asymmetric-valley detection on libtorch.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod average;
pub mod checkpoint;
pub mod error;
pub mod shim;

pub use error::{Error, Result};
pub mod bn;
pub mod cli;
pub mod data;
pub mod model;
pub mod op;
pub mod train;
