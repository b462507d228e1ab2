//! Weight averaging: the rules (maths, host-side) apart from the storage and the model walk.
//!
//! - [`swa`]: equal-weight running mean; [`ema`]: exponential moving average with warm-ups;
//!   [`bias`]: the flat-side bias `w̄ + β(w̄ − w_anchor)`;
//! - [`rule`]: what one update does, from host counters only;
//! - [`flat`]: one contiguous buffer per (device, dtype) group, updated by fused kernels;
//! - [`averager`]: a `VarStore` and its average (update, copy_to, swap, bias);
//!   `checkpoint` (crate root) saves and resumes it.
pub mod averager;
pub mod bias;
pub mod ema;
pub mod flat;
pub mod rule;
pub mod swa;

pub use averager::{Averager, Role, TrackedVar};
pub use bias::bias_toward_flat;
pub use ema::{EmaConfig, Warmup};
pub use rule::{Action, AveragerConfig, Rule};
pub use swa::swa_weight;
