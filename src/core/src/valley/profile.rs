//! 1-D loss profiles `L(w + t·d)` on a grid of offsets `t`, with BatchNorm handled at each point.
//!
//! Cost: a point costs its evaluation forwards (one per evaluation batch and data set) plus its
//! BatchNorm forwards (all re-estimation batches in `full` mode, k in `k=K` mode, none when
//! stale) and `2·#params` elementwise ops to write `w + t·d`, written from the saved origin each
//! time (no drift from repeated `add_`, a known trap of landscape tools that step in place).
use super::directions::Direction;
use super::model::{LossKind, ProbeData, ProbeModel};
use crate::error::{Error, Result};
use tch::{Kind, Tensor};

/// How BatchNorm statistics are set at every probe point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BnMode {
    /// Eval with the running statistics of the probed point, never updated.
    Stale,
    /// Re-estimated over all re-estimation batches (the official `bn_update`) at every point.
    Full,
    /// Re-estimated on the first `k` batches of a fixed shuffled list, the same at every point.
    Batches(usize),
}

impl std::str::FromStr for BnMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "stale" => Ok(BnMode::Stale),
            "full" => Ok(BnMode::Full),
            _ => match s.strip_prefix("k=").map(str::parse::<usize>) {
                Some(Ok(k)) if k >= 1 => Ok(BnMode::Batches(k)),
                _ => Err(Error::invalid("bn", s, "stale, full or k=K with K >= 1")),
            },
        }
    }
}

impl std::fmt::Display for BnMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BnMode::Stale => write!(f, "stale"),
            BnMode::Full => write!(f, "full"),
            BnMode::Batches(k) => write!(f, "k={k}"),
        }
    }
}

/// A BatchNorm mode with the batches it re-estimates on (fixed: common random numbers).
#[derive(Debug)]
pub struct BnPlan {
    /// The mode.
    pub mode: BnMode,
    /// The inputs re-estimation runs on (empty when stale).
    pub inputs: Vec<Tensor>,
    /// Common random numbers: when set, torch's global RNG is seeded with `seed ⊕ i` before
    /// the re-estimation and again before the evaluation at grid point i, so dropout draws the
    /// same masks at the same point of every profile and every run.
    pub seed: Option<u64>,
}

impl BnPlan {
    /// Stale statistics.
    pub fn stale() -> Self {
        BnPlan {
            mode: BnMode::Stale,
            inputs: Vec::new(),
            seed: None,
        }
    }

    /// The plan for `mode` over `batches` (already shuffled by the caller, once): all of them
    /// for `full`, the first k for `k=K` (an error when fewer than k exist).
    pub fn new(mode: BnMode, batches: Vec<Tensor>) -> Result<Self> {
        let inputs = match mode {
            BnMode::Stale => Vec::new(),
            BnMode::Full => batches,
            BnMode::Batches(k) => {
                if k > batches.len() {
                    return Err(Error::invalid(
                        "bn",
                        mode,
                        format!(
                            "k <= {} (the number of re-estimation batches)",
                            batches.len()
                        ),
                    ));
                }
                batches.into_iter().take(k).collect()
            }
        };
        if mode != BnMode::Stale && inputs.is_empty() {
            return Err(Error::invalid(
                "bn",
                mode,
                "at least one re-estimation batch",
            ));
        }
        Ok(BnPlan {
            mode,
            inputs,
            seed: None,
        })
    }

    /// The same plan with common random numbers from `seed` (see [`BnPlan::seed`]).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
}

/// One data set's loss along a line.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Profile {
    /// The offsets t.
    pub offsets: Vec<f64>,
    /// Mean loss at each offset.
    pub loss: Vec<f64>,
    /// Top-1 accuracy in percent at each offset (cross-entropy only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<Vec<f64>>,
    /// Per-example losses, `per_example[i][j]` at offset i for example j (for the bootstrap).
    #[serde(skip)]
    pub per_example: Vec<Vec<f32>>,
}

/// `points` offsets evenly spaced on `[−radius, radius]`; `points` is made odd so that 0 is on
/// the grid and every `+t` has its `−t`.
pub fn grid_through(points: usize, radius: f64) -> Result<Vec<f64>> {
    if points < 3 || !(radius > 0.0 && radius.is_finite()) {
        return Err(Error::invalid(
            "points/radius",
            format!("{points}/{radius}"),
            "points >= 3 and a finite radius > 0",
        ));
    }
    let half = (points / 2) as i64;
    Ok((-half..=half)
        .map(|i| radius * i as f64 / half as f64)
        .collect())
}

/// The official `interpulation.py` grid: `t_i = (i − D)/P`, i = 0..2D+P, with `D = extend·P`:
/// t ∈ [−extend, 1 + extend], 0 at the line's start and 1 at its end, both exactly on the grid.
pub fn grid_line(extend: usize, division: usize) -> Result<Vec<f64>> {
    if division == 0 {
        return Err(Error::invalid("division", division, "an integer >= 1"));
    }
    let d = (extend * division) as i64;
    Ok((0..=(2 * d + division as i64))
        .map(|i| (i - d) as f64 / division as f64)
        .collect())
}

/// The `interpulation.py` grid with its own arguments: `t_i = (i − distances)/division`,
/// i = 0..2·distances + division, so t ∈ [−distances/division, 1 + distances/division]
/// (README values 80/40: 201 points on [−2, 3]; argparse defaults 20/40: 81 on [−0.5, 1.5]).
pub fn grid_interpolation(distances: usize, division: usize) -> Result<Vec<f64>> {
    if division == 0 {
        return Err(Error::invalid("division", division, "an integer >= 1"));
    }
    if distances == 0 {
        // Without points before A there is no −t to match any +t, so no rise ratio.
        return Err(Error::invalid(
            "distances",
            distances,
            "an integer >= 1 (points before the line's start)",
        ));
    }
    let d = distances as i64;
    Ok((0..=(2 * d + division as i64))
        .map(|i| (i - d) as f64 / division as f64)
        .collect())
}

/// Restores parameters and buffers when dropped, so an error mid-profile leaves the model as it was.
pub(crate) struct Restore<'a> {
    targets: Vec<Tensor>,
    saved: Vec<Tensor>,
    _marker: std::marker::PhantomData<&'a ()>,
}

impl Restore<'_> {
    /// Saves every parameter and buffer of `model` (the parameters' saved copies are returned
    /// too: they are the origin points are written from).
    pub(crate) fn snapshot(model: &dyn ProbeModel) -> Result<(Self, Vec<Tensor>)> {
        let _guard = tch::no_grad_guard();
        let mut targets = Vec::new();
        let mut saved = Vec::new();
        let mut origin = Vec::new();
        for p in model.parameters()? {
            let o = p.tensor.f_detach_copy()?;
            origin.push(o.shallow_clone());
            saved.push(o);
            targets.push(p.tensor);
        }
        for b in model.buffers()? {
            saved.push(b.tensor.f_detach_copy()?);
            targets.push(b.tensor);
        }
        Ok((
            Restore {
                targets,
                saved,
                _marker: std::marker::PhantomData,
            },
            origin,
        ))
    }
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let _guard = tch::no_grad_guard();
        for (t, s) in self.targets.iter_mut().zip(&self.saved) {
            let _ = t.f_copy_(s);
        }
    }
}

/// Mean loss, per-example losses and accuracy of `model` (eval mode) on `data`.
pub fn evaluate(
    model: &dyn ProbeModel,
    data: &ProbeData,
    loss: LossKind,
) -> Result<(f64, Vec<f32>, Option<f64>)> {
    let _guard = tch::no_grad_guard();
    let mut per = Vec::with_capacity(data.len() as usize);
    let mut correct = 0i64;
    for (xs, ys) in &data.batches {
        let out = model.forward(xs)?;
        let l = loss.per_example(&out, ys)?;
        per.extend(Vec::<f32>::try_from(
            l.f_to_kind(Kind::Float)?.f_flatten(0, -1)?,
        )?);
        if loss == LossKind::CrossEntropy {
            correct += out
                .f_argmax(-1, false)?
                .f_eq_tensor(&ys.f_to_kind(Kind::Int64)?)?
                .f_sum(Kind::Int64)?
                .f_int64_value(&[])?;
        }
    }
    if per.is_empty() {
        return Err(Error::invalid(
            "data",
            "no examples",
            "at least one example",
        ));
    }
    let mean = per.iter().map(|&x| x as f64).sum::<f64>() / per.len() as f64;
    if !mean.is_finite() {
        return Err(Error::NotFinite {
            what: "loss of the probed model".into(),
            value: mean,
        });
    }
    let acc = (loss == LossKind::CrossEntropy).then(|| 100.0 * correct as f64 / per.len() as f64);
    Ok((mean, per, acc))
}

/// What one profile run did, for the cost accounting.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ProfileCost {
    /// Eval-mode forward passes.
    pub eval_forwards: usize,
    /// Train-mode forward passes spent on BatchNorm re-estimation.
    pub bn_forwards: usize,
}

/// Profiles `model` along `direction` through its current point: for every offset t, writes
/// `w + t·d` into the parameters, sets BatchNorm by `bn`, and evaluates `loss` on each of `evals`.
/// Returns one [`Profile`] per evaluation set and the cost. The model's parameters and buffers
/// are restored afterwards (also on error). `on_point(i)` is called after each point.
pub fn profile(
    model: &dyn ProbeModel,
    direction: &Direction,
    offsets: &[f64],
    evals: &[&ProbeData],
    loss: LossKind,
    bn: &BnPlan,
    mut on_point: impl FnMut(usize),
) -> Result<(Vec<Profile>, ProfileCost)> {
    let params = model.parameters()?;
    let buffers = model.buffers()?;
    if params.len() != direction.tensors.len() {
        return Err(Error::LengthMismatch {
            op: "profile",
            expected_name: "model parameters",
            expected: params.len(),
            name: "direction tensors",
            got: direction.tensors.len(),
        });
    }
    let _guard = tch::no_grad_guard();
    let mut origin = Vec::with_capacity(params.len());
    // The far end w0 + d of the unit step: each point is then one fused `lerp` pass
    // (read w0 and w0 + d, write w), with no temporaries, so probing costs little beyond the
    // model evaluations themselves.
    let mut far_ends = Vec::with_capacity(params.len());
    for (p, d) in params.iter().zip(&direction.tensors) {
        if p.tensor.size() != d.size() {
            return Err(Error::Mismatch {
                what: "shape of direction tensor",
                name: p.name.clone(),
                got: format!("{:?}", d.size()),
                expected: format!("{:?}", p.tensor.size()),
            });
        }
        let o = p.tensor.f_detach_copy()?;
        far_ends.push(
            o.f_add(
                &d.f_to_kind(p.tensor.kind())?
                    .f_to_device(p.tensor.device())?,
            )?,
        );
        origin.push(o);
    }
    let mut targets: Vec<Tensor> = params.iter().map(|p| p.tensor.shallow_clone()).collect();
    let mut saved: Vec<Tensor> = origin.iter().map(|t| t.shallow_clone()).collect();
    for b in &buffers {
        targets.push(b.tensor.shallow_clone());
        saved.push(b.tensor.f_detach_copy()?);
    }
    let restore = Restore {
        targets,
        saved,
        _marker: std::marker::PhantomData,
    };
    let mut out: Vec<Profile> = evals
        .iter()
        .map(|_| Profile {
            offsets: offsets.to_vec(),
            loss: Vec::with_capacity(offsets.len()),
            accuracy: (loss == LossKind::CrossEntropy).then(Vec::new),
            per_example: Vec::with_capacity(offsets.len()),
        })
        .collect();
    let mut cost = ProfileCost::default();
    for (i, &t) in offsets.iter().enumerate() {
        for ((p, o), far) in params.iter().zip(&origin).zip(&far_ends) {
            // w = lerp(w0, w0 + d, t) = w0 + t·d, from the saved origin: exactly w0 at t = 0
            // (ATen's lerp returns its start for weight 0), no error accumulated along the grid.
            let dst = p.tensor.shallow_clone();
            let _ = o.f_lerp_scalar_out(&dst, far, t)?;
        }
        let measured = measure_point(
            model,
            bn,
            i as u64,
            evals,
            loss,
            &format!("offset t = {t}"),
            &mut cost,
        )?;
        for ((mean, per, acc), prof) in measured.into_iter().zip(out.iter_mut()) {
            prof.loss.push(mean);
            prof.per_example.push(per);
            if let (Some(a), Some(v)) = (prof.accuracy.as_mut(), acc) {
                a.push(v);
            }
        }
        on_point(i);
    }
    drop(restore);
    Ok((out, cost))
}

/// One data set at one point: mean loss, per-example losses, accuracy (cross-entropy only).
pub(crate) type Measured = (f64, Vec<f32>, Option<f64>);

/// Measures the model at the point already written into it: sets BatchNorm by `bn`, then
/// evaluates `loss` on each of `evals`. With common random numbers, torch's RNG is seeded with
/// `seed ⊕ key` before the re-estimation and before each evaluation, so the point's dropout
/// masks depend on its key only. `at` names the point in a non-finite-loss error.
pub(crate) fn measure_point(
    model: &dyn ProbeModel,
    bn: &BnPlan,
    key: u64,
    evals: &[&ProbeData],
    loss: LossKind,
    at: &str,
    cost: &mut ProfileCost,
) -> Result<Vec<Measured>> {
    let crn = || {
        if let Some(seed) = bn.seed {
            // Bit pattern kept: the seed is a label, not a number.
            tch::manual_seed((seed ^ key) as i64);
        }
    };
    if bn.mode != BnMode::Stale {
        crn();
        cost.bn_forwards += model.reestimate_batch_norm(&bn.inputs)?;
    }
    let mut out = Vec::with_capacity(evals.len());
    for data in evals {
        crn();
        out.push(evaluate(model, data, loss).map_err(|e| match e {
            Error::NotFinite { value, .. } => Error::NotFinite {
                what: format!("loss at {at}"),
                value,
            },
            other => other,
        })?);
        cost.eval_forwards += data.batches.len();
    }
    Ok(out)
}
