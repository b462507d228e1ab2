//! A BatchNorm layer whose momentum can be set per batch, which re-estimation needs.
//!
//! tch's `nn::BatchNorm` keeps its momentum private, so the official `bn_update` (momentum
//! `b/(n+b)` before each batch) cannot be expressed with it. This layer stores its statistics in
//! the VarStore under PyTorch's names (`running_mean`, `running_var`, `num_batches_tracked`,
//! `weight`, `bias`) so averaging, checkpoints and TorchScript interop see the usual layout.
use crate::error::Result;
use std::cell::Cell;
use tch::{nn, Kind, Tensor};

/// Batch normalization over dimension 1 (`(N, C)` or `(N, C, …)`), PyTorch semantics:
/// train mode normalizes with the batch statistics and updates
/// `running ← (1 − m)·running + m·batch` (unbiased variance); eval mode uses the running ones.
#[derive(Debug)]
pub struct BatchNorm {
    /// γ, trainable.
    pub weight: Tensor,
    /// β, trainable.
    pub bias: Tensor,
    /// Running mean (a buffer).
    pub running_mean: Tensor,
    /// Running unbiased variance (a buffer).
    pub running_var: Tensor,
    /// The number of train-mode batches seen (an int64 buffer; copied, never averaged).
    pub num_batches_tracked: Tensor,
    /// ε in `x̂ = (x − μ)/√(σ² + ε)`.
    pub eps: f64,
    momentum: Cell<f64>,
}

impl BatchNorm {
    /// A layer over `features` channels under `path`, γ = 1, β = 0, momentum 0.1, ε = 1e-5.
    pub fn new(path: nn::Path, features: i64) -> Result<Self> {
        let device = path.device();
        Ok(BatchNorm {
            weight: path.f_ones("weight", &[features])?,
            bias: path.f_zeros("bias", &[features])?,
            running_mean: path.f_zeros_no_train("running_mean", &[features])?,
            running_var: path.f_ones_no_train("running_var", &[features])?,
            num_batches_tracked: path.add(
                "num_batches_tracked",
                Tensor::f_zeros([], (Kind::Int64, device))?,
                false,
            ),
            eps: 1e-5,
            momentum: Cell::new(0.1),
        })
    }

    /// The momentum used by the next train-mode forward.
    pub fn momentum(&self) -> f64 {
        self.momentum.get()
    }

    /// Sets the momentum used by train-mode forwards (re-estimation sets it before each batch).
    pub fn set_momentum(&self, momentum: f64) {
        self.momentum.set(momentum)
    }

    /// Resets the running statistics to mean 0, variance 1, no batches (PyTorch's `reset_running_stats`).
    pub fn reset_running_stats(&self) -> Result<()> {
        let _guard = tch::no_grad_guard();
        let (mut mean, mut var, mut count) = (
            self.running_mean.shallow_clone(),
            self.running_var.shallow_clone(),
            self.num_batches_tracked.shallow_clone(),
        );
        let _ = mean.f_zero_()?;
        let _ = var.f_fill_(1.0)?;
        let _ = count.f_zero_()?;
        Ok(())
    }

    /// Normalizes `xs`; in train mode also updates the running statistics.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            let _guard = tch::no_grad_guard();
            let mut count = self.num_batches_tracked.shallow_clone();
            let _ = count.f_add_scalar_(1)?;
        }
        Ok(Tensor::f_batch_norm(
            xs,
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            self.momentum.get(),
            self.eps,
            false,
        )?)
    }
}
