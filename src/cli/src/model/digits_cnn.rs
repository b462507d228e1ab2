//! The study's network: a small CNN on the 8×8 digits, with or without `BatchNorm2d`.
//!
//! `x ∈ R^{N×64}` is read as `N×1×8×8`, then
//! `conv3×3(1→c₁, pad 1) → [BN2d] → ReLU → conv3×3(c₁→c₂, pad 1) → [BN2d] → ReLU →
//! avg-pool 2×2 → linear(c₂·4·4 → 10)`.
//! The convolutions carry a bias only without BatchNorm (BN's β replaces it, as in the paper's
//! PreResNet), so the two variants differ in the normalization alone.
use super::Network;
use asymvalley::bn::{BatchNorm, BatchNormModel};
use asymvalley::error::{Error, Result};
use tch::{nn, nn::Module, Tensor};

/// Channel widths and whether to normalize.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DigitsCnnConfig {
    /// Channels of the first and the second convolution.
    pub channels: [i64; 2],
    /// Classes.
    pub classes: i64,
    /// `BatchNorm2d` after each convolution (before the ReLU).
    pub batch_norm: bool,
}

impl Default for DigitsCnnConfig {
    fn default() -> Self {
        DigitsCnnConfig {
            channels: [16, 32],
            classes: 10,
            batch_norm: true,
        }
    }
}

/// The CNN's layers.
#[derive(Debug)]
pub struct DigitsCnn {
    convs: Vec<(nn::Conv2D, Option<BatchNorm>)>,
    head: nn::Linear,
}

/// The side of the digits images.
const SIDE: i64 = 8;

impl DigitsCnn {
    /// Builds the variables under `path` (`conv{i}.*`, `bn{i}.*`, `head.*`).
    pub fn new(path: &nn::Path, config: &DigitsCnnConfig) -> Result<Self> {
        if config.channels.iter().any(|&c| c < 1) || config.classes < 2 {
            return Err(Error::invalid(
                "digits_cnn",
                format!("{config:?}"),
                "channels >= 1 and classes >= 2",
            ));
        }
        let mut convs = Vec::with_capacity(2);
        let mut width = 1;
        for (i, &c) in config.channels.iter().enumerate() {
            let conv = nn::conv2d(
                path / format!("conv{i}"),
                width,
                c,
                3,
                nn::ConvConfig {
                    padding: 1,
                    bias: !config.batch_norm,
                    ..Default::default()
                },
            );
            let bn = if config.batch_norm {
                Some(BatchNorm::new(path / format!("bn{i}"), c)?)
            } else {
                None
            };
            convs.push((conv, bn));
            width = c;
        }
        let pooled = width * (SIDE / 2) * (SIDE / 2);
        let head = nn::linear(path / "head", pooled, config.classes, Default::default());
        Ok(DigitsCnn { convs, head })
    }
}

impl BatchNormModel for DigitsCnn {
    fn batch_norms(&self) -> Vec<&BatchNorm> {
        self.convs
            .iter()
            .filter_map(|(_, bn)| bn.as_ref())
            .collect()
    }

    fn forward_train(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_t(xs, true)
    }
}

impl Network for DigitsCnn {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let n = xs.size().first().copied().unwrap_or(0);
        let mut h = xs.f_reshape([n, 1, SIDE, SIDE])?;
        for (conv, bn) in &self.convs {
            h = conv.forward(&h);
            if let Some(bn) = bn {
                h = bn.forward_t(&h, train)?;
            }
            h = h.f_relu()?;
        }
        let h = h.f_avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>)?;
        Ok(self.head.forward(&h.f_flatten(1, -1)?))
    }
}
