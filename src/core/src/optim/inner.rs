//! [`InnerOptimizer`]: what the wrapper needs from the optimizer it wraps.
//!
//! Implemented for tch's `nn::Optimizer` (built from an `OptimizerConfig` over a `VarStore`) and
//! for the lower-level `tch::COptimizer` (parameters added by hand, fallible calls, per-group
//! learning rates), which is what a caller keeps when it wants the optimizer back afterwards
//! (e.g. to continue SGD from the SWA weights with the same momentum buffers).
use crate::error::Result;
use tch::{nn, COptimizer};

/// An optimizer the wrapper can step, zero and drive the learning rate of.
pub trait InnerOptimizer {
    /// One update from the current gradients.
    fn step(&mut self) -> Result<()>;
    /// Zeroes the gradients of the optimized tensors.
    fn zero_grad(&mut self) -> Result<()>;
    /// Sets the learning rate of every parameter group.
    fn set_lr(&mut self, lr: f64) -> Result<()>;
}

impl InnerOptimizer for nn::Optimizer {
    fn step(&mut self) -> Result<()> {
        nn::Optimizer::step(self);
        Ok(())
    }
    fn zero_grad(&mut self) -> Result<()> {
        nn::Optimizer::zero_grad(self);
        Ok(())
    }
    fn set_lr(&mut self, lr: f64) -> Result<()> {
        nn::Optimizer::set_lr(self, lr);
        Ok(())
    }
}

impl InnerOptimizer for COptimizer {
    fn step(&mut self) -> Result<()> {
        Ok(COptimizer::step(self)?)
    }
    fn zero_grad(&mut self) -> Result<()> {
        Ok(COptimizer::zero_grad(self)?)
    }
    fn set_lr(&mut self, lr: f64) -> Result<()> {
        Ok(COptimizer::set_learning_rate(self, lr)?)
    }
}
