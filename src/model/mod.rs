//! Small models built with tch, with BatchNorm layers that re-estimation can drive.
pub mod batch_norm;
pub mod digits_net;

pub use batch_norm::BatchNorm;
pub use digits_net::{DigitsNet, DigitsNetConfig};

use crate::error::Result;
use tch::Tensor;

/// A network mapping a batch of inputs to logits, in train or eval mode.
pub trait Network: crate::bn::BatchNormModel {
    /// The forward pass; `train` selects batch statistics (and updates running ones).
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor>;
}
