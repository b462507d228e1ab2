//! asymvalley: weight averaging (SWA, EMA, flat-side bias) and asymmetric-valley detection on libtorch.
//!
//! He, Huang & Yuan (NeurIPS 2019, arXiv 1902.00744) observe that minima of deep networks are
//! *asymmetric valleys*: along many directions the loss rises steeply on one side and slowly on
//! the other. Under a random symmetric shift between training and test loss, a solution biased
//! toward the flat side generalizes better than the exact minimizer, and averaging SGD iterates
//! (SWA) produces that bias implicitly. This crate averages weights ([`average`]), re-estimates
//! BatchNorm ([`bn`]), checkpoints the averager ([`checkpoint`]), probes loss landscapes for
//! asymmetric directions ([`valley`]). The TorchScript op library `libasymvalley.so` is the
//! `asymvalley-ops` package built on this one; the command line is `asymvalley-cli`. The theorems
//! are property-tested in the `harness` crate.
//!
//! ```
//! use asymvalley::average::{Averager, AveragerConfig};
//! use tch::{nn, Device};
//! let vs = nn::VarStore::new(Device::Cpu);
//! let w = vs.root().randn_standard("w", &[4, 4]);
//! let mut ema = Averager::new(&vs, AveragerConfig::ema(0.99))?;
//! ema.update(&vs)?;                 // the first update copies
//! assert!(ema.averaged("w").unwrap().equal(&w));
//! ema.swap_in(&vs)?;                // evaluate with the average...
//! ema.swap_out(&vs)?;               // ...then continue training
//! # Ok::<(), asymvalley::Error>(())
//! ```
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
// Every `unsafe` of the crate is in `shim` (the one FFI boundary), which opts back in.
#![deny(unsafe_code)]

pub mod average;
pub mod bn;
pub mod checkpoint;
pub mod error;
pub mod names;
pub mod network;
pub mod optim;
pub mod plan;
pub mod shim;
pub mod stats;
mod threads;
pub mod valley;
pub mod var_store;

pub use error::{Error, Result};
