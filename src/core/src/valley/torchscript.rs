//! Probing TorchScript models saved from PyTorch (`torch.jit.save`), with data from safetensors.
//!
//! Why not `tch::CModule`: in tch 0.24 it exposes `named_parameters` (aliases, so parameters can
//! be moved) but no buffers, and a scripted BatchNorm's momentum is a TorchScript constant; so
//! through `CModule` alone BatchNorm statistics can only be stale. [`ScriptModel`] is a small
//! handle on the same `torch::jit::Module` ([`crate::shim::jit`]) that also exposes buffers.
//!
//! BatchNorm re-estimation without setting the momentum (exact up to float rounding): every BN
//! layer's train-mode update is `r ← (1 − m)·r + m·s` (s the batch statistic; m its momentum, or
//! `1/num_batches_tracked` when momentum is None). Once per model, m is measured on one batch:
//! start from r = 0, then from r = 1 (with `num_batches_tracked` = 0); the two results differ by
//! `1 − m`. Then for each batch: r ← 0, forward, `s = r/m`. The official `bn_update` result
//! `Σ_b size_b·s_b / Σ_b size_b` is accumulated in float64 and written back.
use super::model::ProbeModel;
use crate::error::{Error, Result};
use crate::shim::jit::JitModule;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// A TorchScript module loaded from a file, in eval mode.
#[derive(Debug)]
pub struct ScriptModel {
    module: JitModule,
    path: PathBuf,
    /// Measured BatchNorm momenta, one per layer (see the module docs), once measured.
    momenta: RefCell<Option<Vec<f64>>>,
    /// BatchNorm layers left out of re-estimation (unused by `forward`), by name.
    excluded: Vec<String>,
}

/// One BatchNorm layer's running statistics (aliases into the module).
pub(super) struct BnLayer {
    /// Its module path (`net.1`).
    pub(super) name: String,
    pub(super) mean: Tensor,
    pub(super) var: Tensor,
    pub(super) count: Option<Tensor>,
}

/// The seed the momentum measurement's two forwards share, so that dropout draws the same mask
/// in both and the batch statistic cancels exactly.
pub(super) const MEASURE_SEED: i64 = 0x5eed;

impl ScriptModel {
    /// Loads `path` (a `torch.jit.save` file) and puts it in eval mode.
    pub fn load(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "model file not found"),
            ));
        }
        let module = JitModule::load(path).map_err(|e| Error::Data {
            path: path.to_path_buf(),
            reason: format!("not a loadable TorchScript model: {e}"),
        })?;
        Ok(ScriptModel {
            module,
            path: path.to_path_buf(),
            momenta: RefCell::new(None),
            excluded: Vec::new(),
        })
    }

    /// Loads a module from the bytes of a `torch.jit.save`, in eval mode; `label` stands for
    /// the path in reports and errors (e.g. `<nn.Module Sequential>`).
    pub fn load_bytes(bytes: &[u8], label: &str) -> Result<Self> {
        let module = JitModule::load_bytes(bytes).map_err(|e| Error::Data {
            path: PathBuf::from(label),
            reason: format!("not a loadable TorchScript model: {e}"),
        })?;
        Ok(ScriptModel {
            module,
            path: PathBuf::from(label),
            momenta: RefCell::new(None),
            excluded: Vec::new(),
        })
    }

    /// Moves the model to `device` (`--device`): the CPU always, CUDA when libtorch sees a GPU.
    pub fn to_device(&self, device: tch::Device) -> Result<()> {
        if let tch::Device::Cuda(i) = device {
            let n = tch::Cuda::device_count();
            if !tch::Cuda::is_available() || i as i64 >= n {
                return Err(Error::invalid(
                    "device",
                    format!("cuda:{i}"),
                    format!(
                        "a CUDA device that libtorch can see ({n} visible; this libtorch \
                         build or machine has {}), or cpu",
                        if n == 0 { "none" } else { "fewer" }
                    ),
                ));
            }
        }
        self.module.to_device(device)
    }

    /// Leaves the BatchNorm layers `names` out of re-estimation and of
    /// [`check_batch_norm`](Self::check_batch_norm) (for layers `forward` never uses). Each name
    /// must be a BatchNorm layer of the model.
    pub fn exclude_batch_norm(&mut self, names: &[String]) -> Result<()> {
        let all: Vec<String> = self.all_bn_layers()?.into_iter().map(|l| l.name).collect();
        if let Some(n) = names.iter().find(|n| !all.contains(n)) {
            return Err(Error::invalid(
                "bn-exclude",
                n,
                format!("the name of a BatchNorm layer of the model (it has {all:?})"),
            ));
        }
        self.excluded = names.to_vec();
        *self.momenta.borrow_mut() = None;
        Ok(())
    }

    /// The same model named `label` in errors and reports instead of its file (a module
    /// handed over as bytes is loaded from a temporary file that no user has seen).
    pub fn with_label(mut self, label: impl Into<PathBuf>) -> Self {
        self.path = label.into();
        self
    }

    /// The file it was loaded from (or its label, see [`with_label`](Self::with_label)).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn named(&self, buffers: bool) -> Result<Vec<(String, Tensor)>> {
        let mut v = self.module.named(buffers)?;
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    }

    pub(super) fn set_train(&self, on: bool) -> Result<()> {
        self.module.train(on)
    }

    pub(super) fn forward_raw(&self, xs: &Tensor) -> Result<Tensor> {
        self.module.forward(xs).map_err(|e| {
            // TorchScript prefixes the cause with its interpreter traceback: keep the cause.
            let text = e.to_string();
            let cause = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or(&text);
            Error::Data {
                path: self.path.clone(),
                reason: format!(
                    "the model does not accept inputs of shape {:?} and dtype {:?}: {}",
                    xs.size(),
                    xs.kind(),
                    cause.trim()
                ),
            }
        })
    }

    /// The BatchNorm layers that take part (all but the excluded ones).
    pub(super) fn bn_layers(&self) -> Result<Vec<BnLayer>> {
        let mut v = self.all_bn_layers()?;
        v.retain(|l| !self.excluded.contains(&l.name));
        Ok(v)
    }

    fn all_bn_layers(&self) -> Result<Vec<BnLayer>> {
        let buffers = self.named(true)?;
        let mut layers = Vec::new();
        for (name, mean) in &buffers {
            let Some(prefix) = name.strip_suffix("running_mean") else {
                continue;
            };
            let find = |n: &str| {
                buffers
                    .iter()
                    .find(|(b, _)| *b == format!("{prefix}{n}"))
                    .map(|(_, t)| t.shallow_clone())
            };
            let var = find("running_var").ok_or_else(|| Error::MissingVariable {
                name: format!("{prefix}running_var"),
                missing_from: "the TorchScript model",
            })?;
            layers.push(BnLayer {
                name: prefix.trim_end_matches('.').to_string(),
                mean: mean.shallow_clone(),
                var,
                count: find("num_batches_tracked"),
            });
        }
        Ok(layers)
    }

    /// Sets every layer's running stats to `value` and its counter to 0, then one train forward.
    fn forward_from(&self, layers: &[BnLayer], xs: &Tensor, value: f64) -> Result<()> {
        for l in layers {
            let (mut m, mut v) = (l.mean.shallow_clone(), l.var.shallow_clone());
            let _ = m.f_fill_(value)?;
            let _ = v.f_fill_(value)?;
            if let Some(c) = &l.count {
                let _ = c.shallow_clone().f_zero_()?;
            }
        }
        self.forward_raw(xs).map(|_| ())
    }

    /// Measures each layer's momentum (see the module docs); returns the forwards it ran.
    pub(super) fn measure_momenta(&self, layers: &[BnLayer], xs: &Tensor) -> Result<usize> {
        if self.momenta.borrow().is_some() {
            return Ok(0);
        }
        tch::manual_seed(MEASURE_SEED);
        self.forward_from(layers, xs, 0.0)?;
        let from0: Vec<Tensor> = layers
            .iter()
            .map(|l| l.mean.f_to_kind(Kind::Double))
            .collect::<std::result::Result<_, _>>()?;
        tch::manual_seed(MEASURE_SEED);
        self.forward_from(layers, xs, 1.0)?;
        let mut momenta = Vec::with_capacity(layers.len());
        for (l, r0) in layers.iter().zip(&from0) {
            let one_minus_m = l
                .mean
                .f_to_kind(Kind::Double)?
                .f_sub(r0)?
                .f_mean(Kind::Double)?
                .f_double_value(&[])?;
            let m = 1.0 - one_minus_m;
            if !(m > 1e-6 && m <= 1.0 + 1e-6) {
                return Err(Error::invalid(
                    "bn",
                    format!("full (layer `{}` has momentum {m})", l.name),
                    "BatchNorm layers that update their running statistics in train mode \
                     (a model traced in eval mode, or a layer that forward never uses, does \
                     not): use --bn stale, script the model, or --bn-exclude the layer",
                ));
            }
            momenta.push(m.min(1.0));
        }
        *self.momenta.borrow_mut() = Some(momenta);
        Ok(2)
    }
}

impl ProbeModel for ScriptModel {
    fn named_tensors(&self, buffers: bool) -> Result<Vec<(String, Tensor)>> {
        self.named(buffers)
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_raw(xs)
    }

    fn reestimate_batch_norm(&self, inputs: &[Tensor]) -> Result<usize> {
        let layers = self.bn_layers()?;
        let Some(first) = inputs.first() else {
            return Ok(0);
        };
        if layers.is_empty() {
            return Ok(0);
        }
        let _guard = tch::no_grad_guard();
        self.set_train(true)?;
        let outcome = (|| -> Result<usize> {
            let mut forwards = self.measure_momenta(&layers, first)?;
            let momenta = self.momenta.borrow().clone().unwrap_or_default();
            let mut acc: Vec<(Tensor, Tensor)> = Vec::with_capacity(layers.len());
            for l in &layers {
                acc.push((
                    l.mean.f_zeros_like()?.f_to_kind(Kind::Double)?,
                    l.var.f_zeros_like()?.f_to_kind(Kind::Double)?,
                ));
            }
            let mut seen = 0i64;
            for xs in inputs {
                let b = xs.size().first().copied().unwrap_or(0);
                self.forward_from(&layers, xs, 0.0)?;
                forwards += 1;
                for ((l, m), (am, av)) in layers.iter().zip(&momenta).zip(acc.iter_mut()) {
                    // r = m·s from r = 0, so s = r/m; weight b (official bn_update).
                    *am = am.f_add(&l.mean.f_to_kind(Kind::Double)?.f_mul_scalar(b as f64 / m)?)?;
                    *av = av.f_add(&l.var.f_to_kind(Kind::Double)?.f_mul_scalar(b as f64 / m)?)?;
                }
                seen += b;
            }
            for (l, (am, av)) in layers.iter().zip(&acc) {
                l.mean
                    .shallow_clone()
                    .f_copy_(&am.f_div_scalar(seen as f64)?)?;
                l.var
                    .shallow_clone()
                    .f_copy_(&av.f_div_scalar(seen as f64)?)?;
                if let Some(c) = &l.count {
                    let _ = c.shallow_clone().f_fill_(inputs.len() as i64)?;
                }
            }
            Ok(forwards)
        })();
        let back = self.set_train(false);
        let n = outcome?;
        back?;
        Ok(n)
    }
}

/// Reads `inputs_name` and `targets_name` from a safetensors file, with clear errors.
pub fn load_data(path: &Path, inputs_name: &str, targets_name: &str) -> Result<(Tensor, Tensor)> {
    if !path.is_file() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "data file not found"),
        ));
    }
    let all = Tensor::read_safetensors(path).map_err(|e| Error::Data {
        path: path.to_path_buf(),
        reason: format!("not a readable safetensors file: {e}"),
    })?;
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    let get = |want: &str, flag: &str| {
        all.iter()
            .find(|(n, _)| n == want)
            .map(|(_, t)| t.shallow_clone())
            .ok_or_else(|| Error::Data {
                path: path.to_path_buf(),
                reason: format!(
                    "tensor `{want}` is missing (the file holds {names:?}; name another with {flag})"
                ),
            })
    };
    Ok((
        get(inputs_name, "--inputs")?,
        get(targets_name, "--targets")?,
    ))
}
