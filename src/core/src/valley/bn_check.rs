//! Does every BatchNorm layer of a TorchScript model really behave as BatchNorm?
//!
//! A traced graph bakes in the mode it was traced in. Traced in train mode, a layer normalizes
//! with batch statistics even in eval mode (and updates its running statistics there), so stale
//! and re-estimated statistics give the same, wrong, profile. Traced in eval mode, it never
//! updates its running statistics in train mode, so re-estimation cannot work. A layer that
//! `forward` never calls does neither. Each is measured on one batch, per layer:
//! - *uses*: the eval-mode output changes when the layer's running mean is moved by 1;
//! - *updates in train mode*: a train-mode forward moves a running mean set to a sentinel;
//! - *updates in eval mode*: an eval-mode forward moves it (a train-mode trace).
//!
//! Every buffer is restored afterwards, whatever the outcome.
use super::torchscript::{BnLayer, ScriptModel, MEASURE_SEED};
use crate::error::{Error, Result};
use tch::{Kind, Tensor};

/// What one BatchNorm layer was seen to do.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BnBehaviour {
    /// The layer's module path.
    pub layer: String,
    /// Its running statistics change the eval-mode output.
    pub uses_running_stats: bool,
    /// A train-mode forward updates them.
    pub updates_in_train: bool,
    /// An eval-mode forward updates them.
    pub updates_in_eval: bool,
}

/// A value no batch mean takes: whether the running mean moved from it is then unambiguous.
const SENTINEL: f64 = 12345.0;

fn moved(l: &BnLayer) -> Result<bool> {
    Ok(l.mean.f_ne(SENTINEL)?.f_any()?.f_int64_value(&[])? != 0)
}

fn set_mean(l: &BnLayer, v: f64) -> Result<()> {
    let _ = l.mean.shallow_clone().f_fill_(v)?;
    Ok(())
}

impl ScriptModel {
    /// Measures every (non-excluded) BatchNorm layer on `xs` (see the module docs).
    pub fn batch_norm_behaviour(&self, xs: &Tensor) -> Result<Vec<BnBehaviour>> {
        let layers = self.bn_layers()?;
        if layers.is_empty() {
            return Ok(Vec::new());
        }
        let _guard = tch::no_grad_guard();
        let saved: Vec<(Tensor, Tensor, Option<Tensor>)> = layers
            .iter()
            .map(|l| -> Result<_> {
                Ok((
                    l.mean.f_detach_copy()?,
                    l.var.f_detach_copy()?,
                    l.count.as_ref().map(|c| c.f_detach_copy()).transpose()?,
                ))
            })
            .collect::<Result<_>>()?;
        let restore = |layers: &[BnLayer]| -> Result<()> {
            for (l, (m, v, c)) in layers.iter().zip(&saved) {
                l.mean.shallow_clone().f_copy_(m)?;
                l.var.shallow_clone().f_copy_(v)?;
                if let (Some(t), Some(c)) = (&l.count, c) {
                    t.shallow_clone().f_copy_(c)?;
                }
            }
            Ok(())
        };
        let outcome = (|| -> Result<Vec<BnBehaviour>> {
            self.set_train(false)?;
            // The same seed before every compared forward: a train-mode trace keeps dropout on.
            tch::manual_seed(MEASURE_SEED);
            let base = self.forward_raw(xs)?.f_to_kind(Kind::Double)?;
            restore(&layers)?;
            let mut out = Vec::with_capacity(layers.len());
            for (i, l) in layers.iter().enumerate() {
                let shifted = saved[i].0.f_add_scalar(1.0)?;
                l.mean.shallow_clone().f_copy_(&shifted)?;
                tch::manual_seed(MEASURE_SEED);
                let y = self.forward_raw(xs)?.f_to_kind(Kind::Double)?;
                let uses = !y.equal(&base);
                restore(&layers)?;
                set_mean(l, SENTINEL)?;
                let _ = self.forward_raw(xs)?;
                let in_eval = moved(l)?;
                restore(&layers)?;
                self.set_train(true)?;
                set_mean(l, SENTINEL)?;
                let r = self.forward_raw(xs);
                self.set_train(false)?;
                let _ = r?;
                let in_train = moved(l)?;
                restore(&layers)?;
                out.push(BnBehaviour {
                    layer: l.name.clone(),
                    uses_running_stats: uses,
                    updates_in_train: in_train,
                    updates_in_eval: in_eval,
                });
            }
            Ok(out)
        })();
        let back = self.set_train(false).and_then(|()| restore(&layers));
        let out = outcome?;
        back?;
        Ok(out)
    }

    /// Refuses re-estimation (`--bn full` or `k=K`) when a layer cannot be re-estimated, naming
    /// the layer and what to do; then measures the momenta re-estimation needs (with the
    /// buffers restored), so the first grid point spends no forwards on it.
    pub fn check_batch_norm(&self, xs: &Tensor) -> Result<()> {
        for b in self.batch_norm_behaviour(xs)? {
            let why = if b.updates_in_eval || (b.updates_in_train && !b.uses_running_stats) {
                Some(
                    "normalizes with batch statistics even in eval mode (a model traced in \
                     train mode does): stale and re-estimated statistics would both be ignored. \
                     Trace it after model.eval() or script it (torch.jit.script); --bn stale \
                     measures the loss with batch statistics",
                )
            } else if !b.updates_in_train && b.uses_running_stats {
                Some(
                    "never updates its running statistics in train mode (a model traced in \
                     eval mode freezes them): use --bn stale, or script the model \
                     (torch.jit.script) so that they can be re-estimated",
                )
            } else if !b.updates_in_train {
                Some(
                    "is not used by forward (its statistics neither change nor matter): \
                     leave it out with --bn-exclude LAYER",
                )
            } else {
                None
            };
            if let Some(why) = why {
                return Err(Error::invalid(
                    "bn",
                    format!("re-estimation: BatchNorm layer `{}`", b.layer),
                    format!("a layer that re-estimation can update; this one {why}"),
                ));
            }
        }
        let layers = self.bn_layers()?;
        let _guard = tch::no_grad_guard();
        let saved: Vec<(Tensor, Tensor)> = layers
            .iter()
            .map(|l| Ok((l.mean.f_detach_copy()?, l.var.f_detach_copy()?)))
            .collect::<Result<_>>()?;
        let counts: Vec<Option<Tensor>> = layers
            .iter()
            .map(|l| l.count.as_ref().map(|c| c.f_detach_copy()).transpose())
            .collect::<std::result::Result<_, _>>()?;
        self.set_train(true)?;
        let r = self.measure_momenta(&layers, xs);
        let back = self.set_train(false);
        for ((l, (m, v)), c) in layers.iter().zip(&saved).zip(&counts) {
            l.mean.shallow_clone().f_copy_(m)?;
            l.var.shallow_clone().f_copy_(v)?;
            if let (Some(t), Some(c)) = (&l.count, c) {
                t.shallow_clone().f_copy_(c)?;
            }
        }
        r?;
        back
    }
}
