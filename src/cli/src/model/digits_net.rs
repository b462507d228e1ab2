//! The demo's network: an MLP on 8×8 digits, with or without BatchNorm after each hidden layer.
use super::Network;
use asymvalley::bn::BatchNorm;
use asymvalley::bn::BatchNormModel;
use asymvalley::error::{Error, Result};
use tch::{nn, nn::Module, Tensor};

/// Widths and whether to normalize.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DigitsNetConfig {
    /// Input features (64 for 8×8 digits).
    pub inputs: i64,
    /// Hidden widths.
    pub hidden: Vec<i64>,
    /// Classes.
    pub classes: i64,
    /// BatchNorm after each hidden linear layer (before the ReLU).
    pub batch_norm: bool,
}

impl Default for DigitsNetConfig {
    fn default() -> Self {
        DigitsNetConfig {
            inputs: 64,
            hidden: vec![128, 64],
            classes: 10,
            batch_norm: true,
        }
    }
}

/// `Linear → [BatchNorm] → ReLU` per hidden width, then a linear classifier.
#[derive(Debug)]
pub struct DigitsNet {
    hidden: Vec<(nn::Linear, Option<BatchNorm>)>,
    head: nn::Linear,
}

impl DigitsNet {
    /// Builds the network's variables under `path` (names `hidden{i}.linear.*`, `hidden{i}.bn.*`, `head.*`).
    pub fn new(path: &nn::Path, config: &DigitsNetConfig) -> Result<Self> {
        if config.hidden.iter().any(|&w| w < 1) || config.inputs < 1 || config.classes < 2 {
            return Err(Error::invalid(
                "digits_net",
                format!("{config:?}"),
                "inputs >= 1, every hidden width >= 1, classes >= 2",
            ));
        }
        let mut hidden = Vec::with_capacity(config.hidden.len());
        let mut width = config.inputs;
        for (i, &w) in config.hidden.iter().enumerate() {
            let p = path / format!("hidden{i}");
            let linear = nn::linear(&p / "linear", width, w, Default::default());
            let bn = if config.batch_norm {
                Some(BatchNorm::new(&p / "bn", w)?)
            } else {
                None
            };
            hidden.push((linear, bn));
            width = w;
        }
        let head = nn::linear(path / "head", width, config.classes, Default::default());
        Ok(DigitsNet { hidden, head })
    }
}

impl BatchNormModel for DigitsNet {
    fn batch_norms(&self) -> Vec<&BatchNorm> {
        self.hidden
            .iter()
            .filter_map(|(_, bn)| bn.as_ref())
            .collect()
    }

    fn forward_train(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_t(xs, true)
    }
}

impl Network for DigitsNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = xs.shallow_clone();
        for (linear, bn) in &self.hidden {
            h = linear.forward(&h);
            if let Some(bn) = bn {
                h = bn.forward_t(&h, train)?;
            }
            h = h.f_relu()?;
        }
        Ok(self.head.forward(&h))
    }
}
