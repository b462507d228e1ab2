//! What the detector probes: a model's named parameters and buffers, its eval-mode forward, its
//! BatchNorm re-estimation, and the data and loss it is scored on.
use crate::bn::{reestimate_batch_norm, BatchNormModel, BnWeighting};
use crate::error::{Error, Result};
use crate::network::Network;
use crate::var_store::{sorted_variables, Vars};
use tch::{nn::VarStore, Kind, Tensor};

/// A named tensor of the probed model. The tensor aliases the model's storage: writing into it
/// (under `no_grad`) moves the model.
#[derive(Debug)]
pub struct NamedTensor {
    /// The model's name for it (`hidden0.bn.weight`, `layer1.0.conv1.weight`).
    pub name: String,
    /// The tensor (an alias, not a copy).
    pub tensor: Tensor,
    /// True when it belongs to a BatchNorm layer (its module also holds a `running_mean` buffer).
    pub batch_norm: bool,
}

/// The loss a profile measures, per example.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// Cross-entropy of logits `[B, C]` against class indices `[B]` (int64).
    CrossEntropy,
    /// Squared error averaged over every non-batch element; output and target shapes must match.
    Mse,
}

impl LossKind {
    /// Per-example losses `[B]` (float64) of `output` against `targets`.
    pub fn per_example(self, output: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let (o, t) = (output.size(), targets.size());
        match self {
            LossKind::CrossEntropy => {
                if o.len() != 2 || t.len() != 1 || o[0] != t[0] {
                    return Err(Error::Mismatch {
                        what: "shape for cross-entropy (output [B, C], targets [B])",
                        name: "model output / targets".into(),
                        got: format!("{o:?} / {t:?}"),
                        expected: "[B, C] / [B]".into(),
                    });
                }
                if t_is_float(targets) {
                    return Err(Error::Mismatch {
                        what: "dtype of targets for cross-entropy",
                        name: "targets".into(),
                        got: format!("{:?}", targets.kind()),
                        expected: "an integer class index tensor (int64)".into(),
                    });
                }
                Ok(output
                    .f_to_kind(Kind::Double)?
                    .f_cross_entropy_loss::<Tensor>(
                        &targets.f_to_kind(Kind::Int64)?,
                        None,
                        tch::Reduction::None,
                        -100,
                        0.0,
                    )?)
            }
            LossKind::Mse => {
                if o != t {
                    return Err(Error::Mismatch {
                        what: "shape for mse (output and targets must match)",
                        name: "model output / targets".into(),
                        got: format!("{o:?} / {t:?}"),
                        expected: format!("targets of shape {o:?}"),
                    });
                }
                let b = o.first().copied().unwrap_or(1);
                let diff = output
                    .f_to_kind(Kind::Double)?
                    .f_sub(&targets.f_to_kind(Kind::Double)?)?;
                Ok(diff.f_square()?.f_reshape([b, -1])?.f_mean_dim(
                    Some([1i64].as_slice()),
                    false,
                    Kind::Double,
                )?)
            }
        }
    }
}

fn t_is_float(t: &Tensor) -> bool {
    matches!(
        t.kind(),
        Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16
    )
}

/// Evaluation data: fixed mini-batches of inputs and targets, always visited in the same order,
/// so a profile's points see the same examples (common random numbers).
#[derive(Debug)]
pub struct ProbeData {
    /// `(inputs, targets)` batches.
    pub batches: Vec<(Tensor, Tensor)>,
}

impl ProbeData {
    /// Batches of `batch` rows of `inputs` / `targets` (the first dimension is the example).
    pub fn from_tensors(inputs: &Tensor, targets: &Tensor, batch: i64) -> Result<Self> {
        if batch < 1 {
            return Err(Error::invalid("batch", batch, "an integer >= 1"));
        }
        let n = inputs.size().first().copied().unwrap_or(0);
        let m = targets.size().first().copied().unwrap_or(0);
        if inputs.dim() == 0 || targets.dim() == 0 || n != m || n == 0 {
            return Err(Error::Mismatch {
                what: "number of examples",
                name: "inputs / targets".into(),
                got: format!("{:?} / {:?}", inputs.size(), targets.size()),
                expected: "the same non-zero first dimension".into(),
            });
        }
        let mut batches = Vec::new();
        let mut start = 0;
        while start < n {
            let len = batch.min(n - start);
            batches.push((
                inputs.f_narrow(0, start, len)?,
                targets.f_narrow(0, start, len)?,
            ));
            start += len;
        }
        Ok(ProbeData { batches })
    }

    /// The number of examples.
    pub fn len(&self) -> i64 {
        self.batches
            .iter()
            .map(|(_, y)| y.size().first().copied().unwrap_or(0))
            .sum()
    }

    /// True when there is no example.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The inputs only, for BatchNorm re-estimation.
    pub fn inputs(&self) -> Vec<Tensor> {
        self.batches
            .iter()
            .map(|(x, _)| x.shallow_clone())
            .collect()
    }
}

/// A model the detector can probe.
///
/// Probing writes `w + t·d` into [`parameters`](Self::parameters) (aliases) and may rewrite the
/// BatchNorm buffers; [`crate::valley::profile`] saves both before and restores them after.
pub trait ProbeModel {
    /// The model's tensors sorted by name (aliases into the model): its trainable parameters
    /// when `buffers` is false, its buffers (BatchNorm running statistics and counters) when true.
    fn named_tensors(&self, buffers: bool) -> Result<Vec<(String, Tensor)>>;
    /// The trainable parameters, sorted by name, each tagged with whether it sits in a
    /// BatchNorm module (one that also holds a `running_mean` buffer).
    fn parameters(&self) -> Result<Vec<NamedTensor>> {
        let buffers: Vec<String> = self
            .named_tensors(true)?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        Ok(self
            .named_tensors(false)?
            .into_iter()
            .map(|(name, tensor)| NamedTensor {
                batch_norm: in_batch_norm_module(&name, &buffers),
                name,
                tensor,
            })
            .collect())
    }
    /// The buffers, sorted by name.
    fn buffers(&self) -> Result<Vec<NamedTensor>> {
        Ok(self
            .named_tensors(true)?
            .into_iter()
            .map(|(name, tensor)| NamedTensor {
                batch_norm: true,
                name,
                tensor,
            })
            .collect())
    }
    /// The eval-mode forward pass (running BatchNorm statistics).
    fn forward(&self, xs: &Tensor) -> Result<Tensor>;
    /// Recomputes every BatchNorm layer's running statistics from `inputs` with the official
    /// `bn_update` weighting: `Σ_b size_b·stat_b / Σ_b size_b` (unbiased batch variances).
    /// Returns the number of train-mode forward passes it ran.
    fn reestimate_batch_norm(&self, inputs: &[Tensor]) -> Result<usize>;
    /// True when the model has at least one BatchNorm layer.
    fn has_batch_norm(&self) -> Result<bool> {
        Ok(self
            .buffers()?
            .iter()
            .any(|b| b.name.ends_with("running_mean")))
    }
}

/// True when `name` (`a.b.weight`) sits in a module that also holds a `running_mean` buffer.
pub fn in_batch_norm_module(name: &str, buffer_names: &[String]) -> bool {
    let prefix = match name.rfind('.') {
        Some(i) => &name[..=i],
        None => "",
    };
    let want = format!("{prefix}running_mean");
    buffer_names.contains(&want)
}

/// A forward pass `f(xs, train)`.
type ForwardFn<'a> = Box<dyn Fn(&Tensor, bool) -> Result<Tensor> + 'a>;

/// A tch model: a `VarStore` (trainable variables are parameters, the others buffers) and a
/// forward closure, plus its BatchNorm layers when it has any.
pub struct TchModel<'a> {
    vs: &'a VarStore,
    forward: ForwardFn<'a>,
    bn: Option<&'a dyn BatchNormModel>,
}

impl<'a> TchModel<'a> {
    /// Wraps a [`Network`] whose variables live in `vs`.
    pub fn from_network<N: Network>(vs: &'a VarStore, net: &'a N) -> Self {
        TchModel {
            vs,
            forward: Box::new(move |xs, train| net.forward_t(xs, train)),
            bn: Some(net),
        }
    }

    /// Wraps a forward closure `f(xs, train)` over the variables of `vs` (no BatchNorm).
    pub fn from_closure(
        vs: &'a VarStore,
        forward: impl Fn(&Tensor, bool) -> Result<Tensor> + 'a,
    ) -> Self {
        TchModel {
            vs,
            forward: Box::new(forward),
            bn: None,
        }
    }
}

impl ProbeModel for TchModel<'_> {
    fn named_tensors(&self, buffers: bool) -> Result<Vec<(String, Tensor)>> {
        Ok(sorted_variables(
            self.vs,
            if buffers {
                Vars::Buffers
            } else {
                Vars::Trainable
            },
        ))
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        (self.forward)(xs, false)
    }

    fn reestimate_batch_norm(&self, inputs: &[Tensor]) -> Result<usize> {
        match self.bn {
            Some(bn) if !bn.batch_norms().is_empty() => {
                reestimate_batch_norm(
                    bn,
                    inputs.iter().map(|x| x.shallow_clone()),
                    BnWeighting::SampleWeighted,
                )?;
                Ok(inputs.len())
            }
            _ => Ok(0),
        }
    }
}

crate::names::from_kebab_str!(LossKind, "loss", "cross-entropy, mse");
