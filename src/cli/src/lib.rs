//! The asymvalley application: the `asymvalley` command line ([`commands`]), the paper at small
//! scale ([`experiment`]), and the demo's data ([`data`]), models ([`model`]), training
//! ([`train`]) and figures ([`plot`]). Everything here is built on the `asymvalley` library;
//! nothing in the library depends on it.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod commands;
pub mod contour;
pub mod data;
pub mod experiment;
pub mod model;
pub mod plot;
pub mod train;

pub use asymvalley::{Error, Result};
