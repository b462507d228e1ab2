//! A tch network the library can drive: a train/eval forward plus its BatchNorm layers.
use crate::bn::BatchNormModel;
use crate::error::Result;
use tch::Tensor;

/// A network mapping a batch of inputs to outputs, in train or eval mode.
pub trait Network: BatchNormModel {
    /// The forward pass; `train` selects batch statistics (and updates running ones).
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor>;
}
