//! Snapshots of a VarStore's trainable variables (through the library's one sorted walk,
//! `asymvalley::var_store`), restores, and points on the line between two snapshots.
use asymvalley::error::{Error, Result};
use asymvalley::var_store::{sorted_variables, Vars};
use tch::{nn::VarStore, Tensor};

fn trainable_sorted(vs: &VarStore) -> Vec<(String, Tensor)> {
    sorted_variables(vs, Vars::Trainable)
}

/// Copies of the trainable variables (the parameters, never the BatchNorm buffers), by name.
pub fn snapshot(vs: &VarStore) -> Result<Vec<Tensor>> {
    trainable_sorted(vs)
        .iter()
        .map(|(_, t)| Ok(t.f_detach_copy()?))
        .collect()
}

/// Writes a [`snapshot`] back; refuses one of another length before writing anything.
pub fn restore(vs: &VarStore, saved: &[Tensor]) -> Result<()> {
    let mut vars = trainable_sorted(vs);
    if vars.len() != saved.len() {
        return Err(Error::LengthMismatch {
            op: "restore",
            expected_name: "model parameters",
            expected: vars.len(),
            name: "snapshot",
            got: saved.len(),
        });
    }
    let _guard = tch::no_grad_guard();
    for ((_, t), s) in vars.iter_mut().zip(saved) {
        t.f_copy_(s)?;
    }
    Ok(())
}

/// `a + t·(b − a)` tensor by tensor: t = 0 is `a` exactly, t = 1 is `b` up to rounding.
pub fn interpolate(a: &[Tensor], b: &[Tensor], t: f64) -> Result<Vec<Tensor>> {
    if a.len() != b.len() {
        return Err(Error::LengthMismatch {
            op: "interpolate",
            expected_name: "start weights",
            expected: a.len(),
            name: "end weights",
            got: b.len(),
        });
    }
    let _guard = tch::no_grad_guard();
    a.iter()
        .zip(b)
        .map(|(x, y)| Ok(x.f_add(&y.f_sub(x)?.f_mul_scalar(t)?)?))
        .collect()
}
