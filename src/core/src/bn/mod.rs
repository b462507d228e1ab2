//! BatchNorm re-estimation after averaging (or after any weight edit).
//!
//! Averaged weights need statistics of their own: the running stats of the SGD iterates do not
//! belong to the average. Two weightings:
//! - [`BnWeighting::SampleWeighted`], the official code's `utils.bn_update` (He et al.; Izmailov
//!   et al.): reset to mean 0 / var 1, then before a batch of size b with n samples seen set the
//!   momentum to `b/(n+b)`. The result is `Σ_b size_b·stat_b / Σ_b size_b` (the first batch
//!   overwrites, its momentum being 1).
//! - [`BnWeighting::EqualPerBatch`], `torch.optim.swa_utils.update_bn` (momentum `None`, a
//!   cumulative average): momentum `1/(k+1)` before batch k, i.e. `(1/K) Σ_b stat_b`.
//!
//! Both restore every layer's momentum afterwards. Variances are PyTorch's unbiased batch variances.
use crate::error::Result;
mod layer;
pub use layer::BatchNorm;
use tch::Tensor;

/// A model with BatchNorm layers and a train-mode forward.
pub trait BatchNormModel {
    /// The model's BatchNorm layers (any order).
    fn batch_norms(&self) -> Vec<&BatchNorm>;
    /// A train-mode forward pass (labels unused).
    fn forward_train(&self, xs: &Tensor) -> Result<Tensor>;
}

/// How batches are weighted when re-estimating.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BnWeighting {
    /// By batch size: the official `bn_update` (momentum `b/(n+b)`).
    SampleWeighted,
    /// One weight per batch: PyTorch's `update_bn` (momentum `None`).
    EqualPerBatch,
}

/// Recomputes every BatchNorm layer's running statistics with one pass over `batches`.
/// Returns the number of samples seen. A model without BatchNorm is left alone.
pub fn reestimate_batch_norm<M: BatchNormModel + ?Sized>(
    model: &M,
    batches: impl IntoIterator<Item = Tensor>,
    weighting: BnWeighting,
) -> Result<i64> {
    let layers = model.batch_norms();
    if layers.is_empty() {
        return Ok(0);
    }
    let saved: Vec<f64> = layers.iter().map(|l| l.momentum()).collect();
    let outcome = (|| {
        for l in &layers {
            l.reset_running_stats()?;
        }
        let _guard = tch::no_grad_guard();
        let (mut seen, mut count) = (0i64, 0i64);
        for xs in batches {
            let b = xs.size().first().copied().unwrap_or(0);
            let momentum = match weighting {
                BnWeighting::SampleWeighted => b as f64 / (seen + b) as f64,
                BnWeighting::EqualPerBatch => 1.0 / (count + 1) as f64,
            };
            for l in &layers {
                l.set_momentum(momentum);
            }
            let _ = model.forward_train(&xs)?;
            seen += b;
            count += 1;
        }
        Ok(seen)
    })();
    // Restore the momenta whatever happened, so a failed pass leaves training settings intact.
    for (l, m) in layers.iter().zip(saved) {
        l.set_momentum(m);
    }
    outcome
}
