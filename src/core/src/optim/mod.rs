//! An optimizer wrapper: SWA or EMA (and the flat-side bias) riding on any tch optimizer's step.
//!
//! - [`schedule`]: when to average (start, frequency, in steps or in epochs) and the learning
//!   rate through the averaging phase (constant, cosine or linear annealing as
//!   `torch.optim.swa_utils.SWALR` does, or the piecewise-linear schedule of the paper's official
//!   `train2.py`);
//! - [`inner`]: [`InnerOptimizer`], implemented for `nn::Optimizer` and `tch::COptimizer`;
//! - [`averaging`]: [`Averaging`], which owns the inner optimizer and an
//!   [`Averager`](crate::average::Averager) over the same `VarStore`, plus optionally a per-step
//!   EMA next to the scheduled average ([`Averaging::with_ema`]: SWA and EMA in one run).
//!
//! What tch can save: tch 0.24's `nn::Optimizer` and `COptimizer` expose no way to read or write its internal
//! state (SGD momentum buffers, Adam moments and step counts). [`Averaging::save`] therefore saves
//! the averaging state and the schedule position (which fixes the learning rate), and the model
//! itself is the caller's `VarStore::save`. A resume is bitwise only for an inner optimizer without
//! state (plain SGD, momentum 0); with momentum or Adam the inner optimizer restarts cold.
pub mod averaging;
pub mod inner;
pub mod schedule;

pub use averaging::Averaging;
pub use inner::InnerOptimizer;
pub use schedule::{Anneal, LrPolicy, Schedule, Unit};
