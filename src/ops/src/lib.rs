//! The Rust half of the TorchScript op library (`torch.ops.asymvalley.*`,
//! `torch.classes.asymvalley.Averager`), built as `libasymvalley.so`.
//!
//! The C++ side (`src/ops/csrc/`) registers the ops and the class, validates every call before a
//! tensor is touched (`csrc/validate.cpp`, the one validator: it reads the tensors' fields
//! directly, with no description to build) and runs the `at::_foreach_*` kernels. Rust decides
//! what the class's rule does ([`rule`]: parsed once at construction into a `#[repr(C)]`
//! [`abi::AsvRule`], asked for an [`abi::AsvPlan`] at each update, by the same
//! [`avcore::average::AveragerConfig::action`] as the Rust averager) and computes
//! `valley_asymmetry` ([`valley`]).
//!
//! - [`abi`]: the types both languages share (`build.rs` writes their C++ header).
//! - [`switch`]: `ASYMVALLEY_OP_FUSED_CUDA`, the switch of the fused CUDA path.
//! - [`ffi`]: every `extern "C"` function and every `unsafe` of the crate.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod abi;
pub mod ffi;
pub mod probe;
pub mod rule;
pub mod switch;
pub mod valley;

use avcore::error::Result;
