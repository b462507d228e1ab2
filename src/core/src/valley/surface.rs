//! 2-D loss surfaces `L(w + a·d1 + b·d2)` on a grid, as Li et al.'s loss-landscape draws them.
//!
//! Every point is written from the saved origin: `w = lerp(w0, w0 + d1, a) + b·d2` (the `b·d2`
//! term skipped at `b = 0`), so the row `b = 0` is written exactly as the 1-D profile along `d1`
//! writes its points. BatchNorm is set at each point by the same [`BnPlan`] as the profile, and
//! common random numbers use the key `i ⊕ (j − j0)·2³²` at point `(a_i, b_j)`, `j0` the row of
//! `b = 0` (or 0): the row `b = 0` then draws the profile's own dropout masks and equals the
//! profile along `d1` exactly, and every other point has a key of its own.
//!
//! Cost: `|a|·|b|` points, each its evaluation forwards plus its BatchNorm forwards.
use super::directions::Direction;
use super::model::{LossKind, ProbeData, ProbeModel};
use super::profile::{measure_point, BnPlan, ProfileCost, Restore};
use crate::error::{Error, Result};
use tch::{Kind, Tensor};

/// The loss on the grid `a × b`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Surface {
    /// Offsets along `d1` (the x axis).
    pub a: Vec<f64>,
    /// Offsets along `d2` (the y axis).
    pub b: Vec<f64>,
    /// `loss[j][i]`: mean loss at `w + a_i·d1 + b_j·d2` (one row per `b`).
    pub loss: Vec<Vec<f64>>,
    /// Top-1 accuracy in percent, same layout (cross-entropy only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<Vec<Vec<f64>>>,
    /// Forward passes spent.
    pub cost: ProfileCost,
}

fn check_axis(name: &'static str, xs: &[f64]) -> Result<()> {
    if xs.is_empty() || xs.iter().any(|x| !x.is_finite()) {
        return Err(Error::invalid(
            name,
            format!("{xs:?}"),
            "a non-empty list of finite offsets",
        ));
    }
    Ok(())
}

/// The surface of `model` over `a × b` along `d1`, `d2` through its current point, BatchNorm by
/// `bn`, loss `loss` on `data`. The model's parameters and buffers are restored afterwards (also
/// on error). `on_point()` is called after each point.
#[allow(clippy::too_many_arguments)]
pub fn surface(
    model: &dyn ProbeModel,
    d1: &Direction,
    d2: &Direction,
    a: &[f64],
    b: &[f64],
    data: &ProbeData,
    loss: LossKind,
    bn: &BnPlan,
    mut on_point: impl FnMut(),
) -> Result<Surface> {
    check_axis("a", a)?;
    check_axis("b", b)?;
    let params = model.parameters()?;
    for (name, d) in [("d1", d1), ("d2", d2)] {
        if d.tensors.len() != params.len() {
            return Err(Error::LengthMismatch {
                op: "surface",
                expected_name: "model parameters",
                expected: params.len(),
                name,
                got: d.tensors.len(),
            });
        }
        for (p, t) in params.iter().zip(&d.tensors) {
            if p.tensor.size() != t.size() {
                return Err(Error::Mismatch {
                    what: "shape of direction tensor",
                    name: format!("{name}: {}", p.name),
                    got: format!("{:?}", t.size()),
                    expected: format!("{:?}", p.tensor.size()),
                });
            }
        }
    }
    let _guard = tch::no_grad_guard();
    let (restore, origin) = Restore::snapshot(model)?;
    let mut far_ends = Vec::with_capacity(params.len());
    let mut seconds = Vec::with_capacity(params.len());
    for ((p, o), (t1, t2)) in params
        .iter()
        .zip(&origin)
        .zip(d1.tensors.iter().zip(&d2.tensors))
    {
        let to = |t: &Tensor| -> Result<Tensor> {
            Ok(t.f_to_kind(p.tensor.kind())?
                .f_to_device(p.tensor.device())?)
        };
        // The same far end as the profile's, so the row b = 0 is written identically.
        far_ends.push(o.f_add(&to(t1)?)?);
        seconds.push(to(t2)?);
    }
    let j0 = b.iter().position(|&x| x == 0.0).unwrap_or(0) as i64;
    let mut cost = ProfileCost::default();
    let mut rows = Vec::with_capacity(b.len());
    let mut acc_rows = Vec::with_capacity(b.len());
    for (j, &bj) in b.iter().enumerate() {
        let mut row = Vec::with_capacity(a.len());
        let mut acc_row = Vec::with_capacity(a.len());
        for (i, &ai) in a.iter().enumerate() {
            for (((p, o), far), s) in params.iter().zip(&origin).zip(&far_ends).zip(&seconds) {
                let dst = p.tensor.shallow_clone();
                let _ = o.f_lerp_scalar_out(&dst, far, ai)?;
                if bj != 0.0 {
                    let mut dst = dst;
                    let _ = dst.f_add_(&s.f_mul_scalar(bj)?)?;
                }
            }
            let key = (i as u64) ^ (((j as i64 - j0) as u64) << 32);
            let at = format!("a = {ai}, b = {bj}");
            let mut m = measure_point(model, bn, key, &[data], loss, &at, &mut cost)?;
            let (mean, _, acc) = m.remove(0);
            row.push(mean);
            acc_row.push(acc.unwrap_or(f64::NAN));
            on_point();
        }
        rows.push(row);
        acc_rows.push(acc_row);
    }
    drop(restore);
    Ok(Surface {
        a: a.to_vec(),
        b: b.to_vec(),
        loss: rows,
        accuracy: (loss == LossKind::CrossEntropy).then_some(acc_rows),
        cost,
    })
}

/// `r` made orthogonal to `d` (Gram–Schmidt in float64) and rescaled to `d`'s norm, so the plane
/// of `d` and the result is drawn with equal, perpendicular axes: `b = 1` is as far from the
/// point as `a = 1`. Used for the line between two checkpoints, whose length sets the scale.
pub fn orthogonal_to(d: &Direction, r: &Direction) -> Result<Direction> {
    let _guard = tch::no_grad_guard();
    let f64s = |x: &Direction| -> Result<Vec<Tensor>> {
        x.tensors
            .iter()
            .map(|t| Ok(t.f_to_kind(Kind::Double)?))
            .collect()
    };
    let (dd, rr) = (f64s(d)?, f64s(r)?);
    let dot = |x: &[Tensor], y: &[Tensor]| -> Result<f64> {
        let mut s = 0.0;
        for (u, v) in x.iter().zip(y) {
            s += u
                .f_mul(&v.f_to_device(u.device())?)?
                .f_sum(Kind::Double)?
                .f_double_value(&[])?;
        }
        Ok(s)
    };
    let d_sq = dot(&dd, &dd)?;
    if !(d_sq > 0.0 && d_sq.is_finite()) {
        return Err(Error::NotFinite {
            what: "norm of the first surface direction".into(),
            value: d_sq.sqrt(),
        });
    }
    let coef = dot(&rr, &dd)? / d_sq;
    let mut out = Vec::with_capacity(rr.len());
    for (u, v) in rr.iter().zip(&dd) {
        out.push(u.f_sub(&v.f_to_device(u.device())?.f_mul_scalar(coef)?)?);
    }
    let o_sq = dot(&out, &out)?;
    if o_sq.is_nan() || o_sq <= 1e-24 * d_sq {
        return Err(Error::invalid(
            "direction",
            &r.kind,
            "a second direction not parallel to the first",
        ));
    }
    let scale = (d_sq / o_sq).sqrt();
    let mut tensors = Vec::with_capacity(out.len());
    for (t, orig) in out.iter().zip(&r.tensors) {
        tensors.push(t.f_mul_scalar(scale)?.f_to_kind(orig.kind())?);
    }
    let mut result = Direction {
        kind: r.kind.clone(),
        seed: r.seed,
        subset: r.subset.clone(),
        names: r.names.clone(),
        tensors,
        norm: 0.0,
        moved: r.moved,
    };
    result.norm = dot(&f64s(&result)?, &f64s(&result)?)?.sqrt();
    Ok(result)
}

/// Where one of a surface's two directions came from.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SurfaceAxis {
    /// `uniform`, `gaussian`, …, `hessian`, `line`, `loaded`.
    pub kind: String,
    /// Its seed (0 when not random).
    pub seed: u64,
    /// The parameter subset it moves.
    pub params: String,
    /// Its L2 norm.
    pub norm: f64,
    /// In words: how it was made.
    pub source: String,
}

impl SurfaceAxis {
    /// The provenance of `d`, described by `source`.
    pub fn of(d: &Direction, source: impl Into<String>) -> Self {
        SurfaceAxis {
            kind: d.kind.clone(),
            seed: d.seed,
            params: d.subset.clone(),
            norm: d.norm,
            source: source.into(),
        }
    }
}

/// A named point of the plane (the probed point; the two checkpoints of a line).
#[derive(Clone, Debug, serde::Serialize)]
pub struct SurfacePoint {
    /// Its label.
    pub label: String,
    /// Offset along `d1`.
    pub a: f64,
    /// Offset along `d2`.
    pub b: f64,
}

/// The JSON report of `asymvalley probe --surface`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SurfaceReport {
    /// The model file.
    pub model: String,
    /// The data file.
    pub data: String,
    /// Examples scored.
    pub examples: i64,
    /// `cross-entropy` or `mse`.
    pub loss: String,
    /// BatchNorm mode at each point.
    pub bn: String,
    /// Whether the model has BatchNorm layers.
    pub has_batch_norm: bool,
    /// The two directions: `[d1, d2]`.
    pub directions: [SurfaceAxis; 2],
    /// Where the directions were saved or loaded from.
    pub directions_file: Option<String>,
    /// The Hessian's eigenvalues, for `hessian` directions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hessian: Option<super::hessian::HessianSummary>,
    /// Marked points.
    pub points: Vec<SurfacePoint>,
    /// The grid and its losses.
    pub surface: Surface,
}
