//! The top eigen-directions of the training-loss Hessian and its trace, from Hessian-vector
//! products (double backward through the model), as PyHessian computes them.
//!
//! - **Hessian-vector product.** `Hv = ∇_w (∇_w L · v)`: one forward, one backward that keeps its
//!   graph, one backward of the dot product, per batch; summed with weights `b/N` so that L is the
//!   mean loss over all examples. The model is in eval mode (running BatchNorm statistics), and
//!   only the parameters of the subset take part (`v` is 0 elsewhere and `Hv` is projected back
//!   onto the subset: the Hessian restricted to it).
//! - **Top-k eigenpairs.** Power iteration with deflation: the i-th vector starts from a seeded
//!   Gaussian, is kept orthogonal to the i − 1 found before, and iterates `v ← Hv/‖Hv‖` until the
//!   Rayleigh quotient `λ = vᵀHv` changes by less than `tolerance·(|λ| + 1e−12)`. Power iteration
//!   finds the eigenvalues of largest magnitude (a negative one can come first at a saddle).
//! - **Hutchinson trace.** `tr H = E[zᵀHz]` for Rademacher z (±1 on the subset); reported with the
//!   standard error of the mean over the samples.
//!
//! The random vectors are drawn in Rust from `StdRng::seed_from_u64`, as the probe directions.
use super::directions::{Direction, ParamSubset};
use super::model::{LossKind, NamedTensor, ProbeData, ProbeModel};
use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use tch::{Kind, Tensor};

/// Settings of [`top_eigen`].
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct HessianConfig {
    /// How many eigenpairs (k ≥ 1).
    pub count: usize,
    /// Most power iterations per eigenpair.
    pub iterations: usize,
    /// Relative change of λ that stops the iteration.
    pub tolerance: f64,
    /// Rademacher samples for the trace (0: no trace).
    pub trace_samples: usize,
    /// Seed of the start vectors and of the trace samples.
    pub seed: u64,
}

/// Hutchinson's estimate of `tr H`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct TraceEstimate {
    /// Mean of `zᵀHz`.
    pub trace: f64,
    /// Standard error of that mean.
    pub std_error: f64,
    /// Samples.
    pub samples: usize,
}

/// Eigenpairs and trace of the Hessian.
#[derive(Debug)]
pub struct HessianEigen {
    /// λ_1, …, λ_k in the order found (decreasing magnitude when the iteration converged).
    pub eigenvalues: Vec<f64>,
    /// The unit eigenvectors, as directions (kind `hessian`).
    pub directions: Vec<Direction>,
    /// Power iterations spent per eigenpair.
    pub iterations: Vec<usize>,
    /// Whether each eigenpair met the tolerance.
    pub converged: Vec<bool>,
    /// The trace estimate, when samples were asked for.
    pub trace: Option<TraceEstimate>,
    /// Hessian-vector products computed in all.
    pub products: usize,
}

/// The summary written to reports.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct HessianSummary {
    /// The settings.
    pub config: HessianConfig,
    /// λ_1, …, λ_k.
    pub eigenvalues: Vec<f64>,
    /// Iterations per eigenpair.
    pub iterations: Vec<usize>,
    /// Convergence per eigenpair.
    pub converged: Vec<bool>,
    /// Hutchinson's trace.
    pub trace: Option<TraceEstimate>,
    /// Hessian-vector products spent.
    pub products: usize,
}

impl HessianEigen {
    /// The report's summary.
    pub fn summary(&self, config: HessianConfig) -> HessianSummary {
        HessianSummary {
            config,
            eigenvalues: self.eigenvalues.clone(),
            iterations: self.iterations.clone(),
            converged: self.converged.clone(),
            trace: self.trace,
            products: self.products,
        }
    }
}

fn dot(a: &[Tensor], b: &[Tensor]) -> Result<f64> {
    let mut s = 0.0;
    for (x, y) in a.iter().zip(b) {
        s += x
            .f_to_kind(Kind::Double)?
            .f_mul(&y.f_to_kind(Kind::Double)?)?
            .f_sum(Kind::Double)?
            .f_double_value(&[])?;
    }
    Ok(s)
}

fn scale(a: &[Tensor], c: f64) -> Result<Vec<Tensor>> {
    a.iter()
        .map(|t| t.f_mul_scalar(c).map_err(Error::from))
        .collect()
}

/// `a − c·b`.
fn sub_scaled(a: &[Tensor], b: &[Tensor], c: f64) -> Result<Vec<Tensor>> {
    a.iter()
        .zip(b)
        .map(|(x, y)| Ok(x.f_sub(&y.f_mul_scalar(c)?)?))
        .collect()
}

/// The Hessian of the mean loss over `data` times `v` (one tensor per parameter, same order and
/// shapes as `params`), restricted to the parameters where `mask` is true.
pub fn hessian_vector_product(
    model: &dyn ProbeModel,
    params: &[NamedTensor],
    mask: &[bool],
    data: &ProbeData,
    loss: LossKind,
    v: &[Tensor],
) -> Result<Vec<Tensor>> {
    // Grad mode on whatever the caller's mode: the products are taken by autograd.
    tch::with_grad(|| product(model, params, mask, data, loss, v))
}

fn product(
    model: &dyn ProbeModel,
    params: &[NamedTensor],
    mask: &[bool],
    data: &ProbeData,
    loss: LossKind,
    v: &[Tensor],
) -> Result<Vec<Tensor>> {
    let inputs: Vec<&Tensor> = params
        .iter()
        .zip(mask)
        .filter(|(_, m)| **m)
        .map(|(p, _)| &p.tensor)
        .collect();
    if let Some(p) = params
        .iter()
        .zip(mask)
        .find(|(p, m)| **m && !p.tensor.requires_grad())
    {
        return Err(Error::invalid(
            "direction",
            format!("hessian (parameter `{}` does not require grad)", p.0.name),
            "parameters that require grad (the Hessian is taken by autograd)",
        ));
    }
    let vs: Vec<&Tensor> = v
        .iter()
        .zip(mask)
        .filter(|(_, m)| **m)
        .map(|(t, _)| t)
        .collect();
    let n = data.len() as f64;
    let mut acc: Vec<Tensor> = inputs
        .iter()
        .map(|p| p.f_zeros_like().map_err(Error::from))
        .collect::<Result<_>>()?;
    for (xs, ys) in &data.batches {
        let out = model.forward(xs)?;
        let l = loss
            .per_example(&out, ys)?
            .f_sum(Kind::Double)?
            .f_div_scalar(n)?;
        let grads = Tensor::f_run_backward(&[&l], &inputs, true, true)?;
        let mut gv = Tensor::from(0.0f64).f_to_device(l.device())?;
        for (g, vi) in grads.iter().zip(&vs) {
            if g.defined() {
                gv = gv.f_add(&g.f_mul(vi)?.f_sum(Kind::Double)?)?;
            }
        }
        if !gv.requires_grad() {
            // The loss is linear in every parameter: this batch's Hessian is 0.
            continue;
        }
        let hv = Tensor::f_run_backward(&[&gv], &inputs, false, false)?;
        for (a, h) in acc.iter_mut().zip(&hv) {
            if h.defined() {
                *a = a.f_add(&h.f_detach()?)?;
            }
        }
    }
    let mut it = acc.into_iter();
    params
        .iter()
        .zip(mask)
        .map(|(p, m)| {
            if *m {
                it.next().ok_or_else(|| {
                    Error::invalid("hessian", "a missing product", "one per parameter")
                })
            } else {
                Ok(p.tensor.f_zeros_like()?.f_detach()?)
            }
        })
        .collect()
}

/// A seeded random vector over the subset: Gaussian, or Rademacher (±1) when `rademacher`.
fn random_vector(
    params: &[NamedTensor],
    mask: &[bool],
    rng: &mut rand::rngs::StdRng,
    rademacher: bool,
) -> Result<Vec<Tensor>> {
    let _guard = tch::no_grad_guard();
    params
        .iter()
        .zip(mask)
        .map(|(p, m)| {
            let shape = p.tensor.size();
            if !*m {
                return Ok(Tensor::f_zeros(
                    &shape,
                    (p.tensor.kind(), p.tensor.device()),
                )?);
            }
            let n = p.tensor.numel();
            let draws: Vec<f64> = if rademacher {
                (0..n)
                    .map(|_| if rng.gen::<bool>() { 1.0 } else { -1.0 })
                    .collect()
            } else {
                (0..n)
                    .map(|_| rng.sample::<f64, _>(StandardNormal))
                    .collect()
            };
            Ok(Tensor::from_slice(&draws)
                .f_reshape(&shape)?
                .f_to_kind(p.tensor.kind())?
                .f_to_device(p.tensor.device())?)
        })
        .collect()
}

/// The top `config.count` eigenpairs of the Hessian of the mean `loss` over `data` restricted to
/// `subset`, and its Hutchinson trace (see the module docs). The model is not moved.
pub fn top_eigen(
    model: &dyn ProbeModel,
    data: &ProbeData,
    loss: LossKind,
    subset: &ParamSubset,
    config: HessianConfig,
) -> Result<HessianEigen> {
    if config.count == 0 {
        return Err(Error::invalid("count", 0, "an integer >= 1"));
    }
    if config.iterations == 0 {
        return Err(Error::invalid("hessian-iterations", 0, "an integer >= 1"));
    }
    if !(config.tolerance > 0.0 && config.tolerance.is_finite()) {
        return Err(Error::invalid(
            "hessian-tolerance",
            config.tolerance,
            "a finite number > 0",
        ));
    }
    let params = model.parameters()?;
    let mask: Vec<bool> = params
        .iter()
        .map(|p| subset.contains(p) && p.tensor.is_floating_point())
        .collect();
    let size: i64 = params
        .iter()
        .zip(&mask)
        .filter(|(_, m)| **m)
        .map(|(p, _)| p.tensor.numel() as i64)
        .sum();
    if size == 0 {
        return Err(Error::invalid(
            "params",
            subset.describe(),
            "a subset that selects at least one parameter",
        ));
    }
    if config.count as i64 > size {
        return Err(Error::invalid(
            "count",
            config.count,
            format!("at most {size} (the entries of the subset)"),
        ));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    let mut products = 0;
    let mut hvp = |v: &[Tensor]| -> Result<Vec<Tensor>> {
        products += 1;
        hessian_vector_product(model, &params, &mask, data, loss, v)
    };
    let (mut values, mut vectors) = (Vec::new(), Vec::<Vec<Tensor>>::new());
    let (mut iterations, mut converged) = (Vec::new(), Vec::new());
    let orthogonalize = |v: Vec<Tensor>, found: &[Vec<Tensor>]| -> Result<Vec<Tensor>> {
        let mut v = v;
        for u in found {
            let c = dot(&v, u)?;
            v = sub_scaled(&v, u, c)?;
        }
        let norm = dot(&v, &v)?.sqrt();
        if !(norm > 0.0 && norm.is_finite()) {
            return Err(Error::NotFinite {
                what: "norm of a power-iteration vector".into(),
                value: norm,
            });
        }
        scale(&v, 1.0 / norm)
    };
    for _ in 0..config.count {
        let mut v = orthogonalize(random_vector(&params, &mask, &mut rng, false)?, &vectors)?;
        let (mut lambda, mut done, mut spent) = (f64::NAN, false, 0);
        for _ in 0..config.iterations {
            spent += 1;
            let hv = hvp(&v)?;
            let next = dot(&v, &hv)?;
            if !next.is_finite() {
                return Err(Error::NotFinite {
                    what: "Rayleigh quotient vᵀHv".into(),
                    value: next,
                });
            }
            let change = (next - lambda).abs();
            lambda = next;
            if change < config.tolerance * (lambda.abs() + 1e-12) {
                done = true;
                break;
            }
            // A zero product: v is in the null space, and λ = 0 is an eigenvalue with it.
            if dot(&hv, &hv)? == 0.0 {
                done = true;
                break;
            }
            v = orthogonalize(hv, &vectors)?;
        }
        values.push(lambda);
        vectors.push(v);
        iterations.push(spent);
        converged.push(done);
    }
    let trace = if config.trace_samples > 0 {
        let mut samples = Vec::with_capacity(config.trace_samples);
        for _ in 0..config.trace_samples {
            let z = random_vector(&params, &mask, &mut rng, true)?;
            let hz = hvp(&z)?;
            samples.push(dot(&z, &hz)?);
        }
        let m = samples.len() as f64;
        let mean = samples.iter().sum::<f64>() / m;
        let var = if samples.len() > 1 {
            samples.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (m - 1.0)
        } else {
            0.0
        };
        Some(TraceEstimate {
            trace: mean,
            std_error: (var / m).sqrt(),
            samples: samples.len(),
        })
    } else {
        None
    };
    let directions = vectors
        .into_iter()
        .map(|v| {
            let mut d = Direction::given(&params, v, "hessian")?;
            d.seed = config.seed;
            d.subset = subset.describe();
            d.moved = size;
            Ok(d)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(HessianEigen {
        eigenvalues: values,
        directions,
        iterations,
        converged,
        trace,
        products,
    })
}
