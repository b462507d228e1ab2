//! The line between two checkpoints of one model, as the official `interpulation.py` probes it.
//!
//! `w(t) = w_A + t·(w_B − w_A)` over the model's trainable parameters (never BatchNorm buffers,
//! which `interpulation.py` leaves out of `parameters_to_vector` too), on the grid
//! `t_i = (i − D)/P`, `i = 0 … 2D + P` ([`super::profile::grid_interpolation`]): t = 0 is A,
//! t = 1 is B, and the grid extends `D/P` past both ends. The model is first moved to A
//! (parameters and whatever buffers A holds), so the probed point, its stale BatchNorm
//! statistics and the rises are A's. With BatchNorm re-estimated at every point (`--bn full`)
//! the buffers A holds do not matter.
use super::directions::{Direction, ParamSubset};
use super::model::ProbeModel;
use crate::error::{Error, Result};
use std::path::Path;
use tch::Tensor;

/// A checkpoint's tensors matched to the model: one per parameter (same order as
/// [`ProbeModel::parameters`]) and the buffers it holds, by name.
#[derive(Debug)]
pub struct Checkpoint {
    /// One tensor per parameter, in the model's sorted order.
    pub parameters: Vec<Tensor>,
    /// `(buffer name, tensor)` for the model's buffers the file holds.
    pub buffers: Vec<(String, Tensor)>,
}

impl Checkpoint {
    /// Reads a safetensors state dict (keys as the model names its parameters and buffers) and
    /// checks it against `model`: every key must name a parameter or buffer, every parameter must
    /// be there, with the model's shape and a floating-point dtype. The error names the file
    /// and the first offending key.
    pub fn read(path: &Path, model: &dyn ProbeModel) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "checkpoint file not found"),
            ));
        }
        let all = Tensor::read_safetensors(path).map_err(|e| Error::Data {
            path: path.to_path_buf(),
            reason: format!("not a readable safetensors state dict: {e}"),
        })?;
        Self::from_named(path, all, model)
    }

    /// The same checks as [`read`](Self::read) on a state dict already in memory (from Python);
    /// `origin` names it in errors.
    pub fn from_named(
        origin: &Path,
        mut all: Vec<(String, Tensor)>,
        model: &dyn ProbeModel,
    ) -> Result<Self> {
        let bad = |reason: String| Error::Data {
            path: origin.to_path_buf(),
            reason,
        };
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let params = model.parameters()?;
        let buffers = model.buffers()?;
        for (name, t) in &all {
            let target = params
                .iter()
                .chain(&buffers)
                .find(|p| p.name == *name)
                .ok_or_else(|| {
                    bad(format!(
                        "tensor `{name}` names no parameter or buffer of the model"
                    ))
                })?;
            if t.size() != target.tensor.size() {
                return Err(bad(format!(
                    "tensor `{name}` has shape {:?}, the model's has {:?}",
                    t.size(),
                    target.tensor.size()
                )));
            }
            if t.is_floating_point() != target.tensor.is_floating_point() {
                return Err(bad(format!(
                    "tensor `{name}` has dtype {:?}, the model's has {:?}",
                    t.kind(),
                    target.tensor.kind()
                )));
            }
        }
        let mut parameters = Vec::with_capacity(params.len());
        for p in &params {
            let t = all
                .iter()
                .find(|(n, _)| *n == p.name)
                .map(|(_, t)| t.shallow_clone())
                .ok_or_else(|| bad(format!("parameter `{}` is missing", p.name)))?;
            parameters.push(
                t.f_to_kind(p.tensor.kind())?
                    .f_to_device(p.tensor.device())?,
            );
        }
        let buffers = all
            .into_iter()
            .filter(|(n, _)| buffers.iter().any(|b| b.name == *n))
            .collect();
        Ok(Checkpoint {
            parameters,
            buffers,
        })
    }

    /// Writes the checkpoint into `model` (parameters and the buffers it holds).
    pub fn write_into(&self, model: &dyn ProbeModel) -> Result<()> {
        let _guard = tch::no_grad_guard();
        for (p, t) in model.parameters()?.iter().zip(&self.parameters) {
            p.tensor.shallow_clone().f_copy_(t)?;
        }
        let buffers = model.buffers()?;
        for (name, t) in &self.buffers {
            if let Some(b) = buffers.iter().find(|b| b.name == *name) {
                b.tensor.shallow_clone().f_copy_(t)?;
            }
        }
        Ok(())
    }
}

/// Moves `model` to checkpoint `a` and returns the direction `b − a` over `subset` (`t = 1` is
/// `b`). Both files are checked before the model is touched, so a refused pair changes nothing.
pub fn line_between(
    model: &dyn ProbeModel,
    a: &Path,
    b: &Path,
    subset: &ParamSubset,
) -> Result<Direction> {
    let (ca, cb) = (Checkpoint::read(a, model)?, Checkpoint::read(b, model)?);
    line_through(model, &ca, &cb, subset)
}

/// [`line_between`] for checkpoints already read and checked.
pub fn line_through(
    model: &dyn ProbeModel,
    ca: &Checkpoint,
    cb: &Checkpoint,
    subset: &ParamSubset,
) -> Result<Direction> {
    let params = model.parameters()?;
    let d = Direction::between(&params, &ca.parameters, &cb.parameters, subset)?;
    ca.write_into(model)?;
    Ok(d)
}
