//! Probe directions: seeded, restricted to a parameter subset, saved so a probe can be repeated.
//!
//! A direction holds one tensor per model parameter (sorted names), zero outside its subset.
//! Entries are drawn in Rust from `StdRng::seed_from_u64(seed)` in sorted-name order, so the same
//! seed gives the same direction on every machine and libtorch build.
use super::model::NamedTensor;
use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use std::path::Path;
use tch::{Kind, Tensor};

/// How a direction's entries are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DirectionKind {
    /// Entries U(0, 1), then unit L2 norm over the subset: the paper's choice for its valley plots.
    /// Every entry is positive, hence sign-consistent with positive weights such as BN γ.
    Uniform,
    /// Entries N(0, 1), then unit L2 norm over the subset.
    Gaussian,
    /// N(0, 1) filter-normalized (Li et al. 2018, `net_plotter.normalize_direction`): each filter
    /// (slice along dim 0 of a tensor with ≥ 2 dims) rescaled to the norm of the matching weight
    /// filter, `d_i ← d_i·‖w_i‖/(‖d_i‖ + 1e−10)`. Tensors with ≤ 1 dim (biases, BN γ/β) are
    /// zeroed, as that code does under its `--xignore biasbn`; with
    /// [`DrawOptions::filter_keep_1d`] they are set to the weight itself, `d = w`, as it does
    /// otherwise. Not unit norm: `t = 1` moves each filter by its own norm.
    Filter,
    /// `|ε|·sign(w)`, ε ~ N(0, 1), unit norm: every entry has the sign of its weight
    /// (Li et al. 2024's sign-consistent noise; `sign(0)` is taken as +).
    SignConsistent,
    /// `−|ε|·sign(w)`, unit norm: every entry has the sign opposite to its weight.
    SignInconsistent,
}

impl DirectionKind {
    /// The CLI spelling.
    pub fn name(self) -> &'static str {
        match self {
            DirectionKind::Uniform => "uniform",
            DirectionKind::Gaussian => "gaussian",
            DirectionKind::Filter => "filter",
            DirectionKind::SignConsistent => "sign-consistent",
            DirectionKind::SignInconsistent => "sign-inconsistent",
        }
    }
}

/// Options of a random draw beyond its kind, subset and seed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrawOptions {
    /// `filter` only: keep tensors with ≤ 1 dim as `d = w` instead of zeroing them.
    pub filter_keep_1d: bool,
}

/// Which parameters a direction may move.
#[derive(Clone, Debug)]
pub enum ParamSubset {
    /// Every parameter.
    All,
    /// BatchNorm γ and β only.
    BatchNormOnly,
    /// Everything but BatchNorm γ and β.
    NonBatchNorm,
    /// The parameters of one layer: names starting with `prefix.` (or equal to it).
    Layer(String),
    /// Names matching a regular expression.
    Pattern(regex::Regex),
}

impl ParamSubset {
    /// The parameters whose names match the regular expression `pattern` (argument `params`).
    pub fn pattern(pattern: &str) -> Result<Self> {
        regex::Regex::new(pattern)
            .map(ParamSubset::Pattern)
            .map_err(|e| {
                Error::invalid(
                    "params",
                    pattern,
                    format!("a valid regular expression ({e})"),
                )
            })
    }

    /// True when the parameter takes part.
    pub fn contains(&self, p: &NamedTensor) -> bool {
        match self {
            ParamSubset::All => true,
            ParamSubset::BatchNormOnly => p.batch_norm,
            ParamSubset::NonBatchNorm => !p.batch_norm,
            ParamSubset::Layer(prefix) => {
                p.name == *prefix || p.name.starts_with(&format!("{prefix}."))
            }
            ParamSubset::Pattern(re) => re.is_match(&p.name),
        }
    }

    /// A short description for reports.
    pub fn describe(&self) -> String {
        match self {
            ParamSubset::All => "all".into(),
            ParamSubset::BatchNormOnly => "batch-norm".into(),
            ParamSubset::NonBatchNorm => "non-batch-norm".into(),
            ParamSubset::Layer(p) => format!("layer {p}"),
            ParamSubset::Pattern(re) => format!("regex {}", re.as_str()),
        }
    }
}

/// A probe direction: one tensor per parameter, in the parameters' (sorted) order.
#[derive(Debug)]
pub struct Direction {
    /// How it was made (`uniform`, `gaussian`, …, `line`, `given`).
    pub kind: String,
    /// Its seed (0 for non-random directions).
    pub seed: u64,
    /// The subset it moves.
    pub subset: String,
    /// Parameter names, sorted.
    pub names: Vec<String>,
    /// Tensors, same order and shapes as the parameters (float32 or the parameter's dtype).
    pub tensors: Vec<Tensor>,
    /// Its L2 norm over all entries.
    pub norm: f64,
    /// How many entries it moves (nonzero subset size).
    pub moved: i64,
}

fn l2(ts: &[Tensor]) -> Result<f64> {
    let mut s = 0.0;
    for t in ts {
        s += t
            .f_to_kind(Kind::Double)?
            .f_square()?
            .f_sum(Kind::Double)?
            .f_double_value(&[])?;
    }
    Ok(s.sqrt())
}

fn empty_subset(subset: &ParamSubset) -> Error {
    Error::invalid(
        "params",
        subset.describe(),
        "a subset that selects at least one parameter",
    )
}

impl Direction {
    /// A seeded random direction of `kind` over `subset` of `params` (the point it probes), with
    /// the default [`DrawOptions`].
    pub fn random(
        params: &[NamedTensor],
        kind: DirectionKind,
        subset: &ParamSubset,
        seed: u64,
    ) -> Result<Self> {
        Self::random_with(params, kind, subset, seed, DrawOptions::default())
    }

    /// [`random`](Self::random) with explicit [`DrawOptions`]. Every selected tensor consumes its
    /// draws, also one the options then zero, so the other tensors do not depend on the options.
    pub fn random_with(
        params: &[NamedTensor],
        kind: DirectionKind,
        subset: &ParamSubset,
        seed: u64,
        options: DrawOptions,
    ) -> Result<Self> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut tensors = Vec::with_capacity(params.len());
        let mut moved = 0;
        let _guard = tch::no_grad_guard();
        for p in params {
            let shape = p.tensor.size();
            if !subset.contains(p) || !p.tensor.is_floating_point() {
                tensors.push(Tensor::f_zeros(&shape, (Kind::Float, p.tensor.device()))?);
                continue;
            }
            let n = p.tensor.numel();
            moved += n as i64;
            let draws: Vec<f32> = match kind {
                DirectionKind::Uniform => (0..n).map(|_| rng.gen::<f32>()).collect(),
                _ => (0..n)
                    .map(|_| rng.sample::<f32, _>(StandardNormal))
                    .collect(),
            };
            let mut d = Tensor::from_slice(&draws)
                .f_reshape(&shape)?
                .f_to_device(p.tensor.device())?;
            let w = p.tensor.f_to_kind(Kind::Float)?;
            match kind {
                DirectionKind::SignConsistent | DirectionKind::SignInconsistent => {
                    // sign(0) = +: a zero weight counts as positive, so every entry moves.
                    let sign = w
                        .f_ge(0.0)?
                        .f_to_kind(Kind::Float)?
                        .f_mul_scalar(2.0)?
                        .f_sub_scalar(1.0)?;
                    let s = if kind == DirectionKind::SignConsistent {
                        1.0
                    } else {
                        -1.0
                    };
                    d = d.f_abs()?.f_mul(&sign)?.f_mul_scalar(s)?;
                }
                DirectionKind::Filter if d.dim() <= 1 => {
                    if options.filter_keep_1d {
                        d = w.f_detach_copy()?;
                    } else {
                        moved -= n as i64;
                        d = d.f_zero_()?;
                    }
                }
                DirectionKind::Filter => {
                    d = filter_normalize(&d, &w)?;
                }
                _ => {}
            }
            tensors.push(d);
        }
        if moved == 0 && kind == DirectionKind::Filter && !options.filter_keep_1d {
            return Err(Error::invalid(
                "direction",
                format!("filter over {}", subset.describe()),
                "a subset with a tensor of 2 or more dims (filter zeroes 1-D tensors such as \
                 biases and BatchNorm γ/β; keep them with --filter-keep-1d)",
            ));
        }
        if moved == 0 {
            return Err(empty_subset(subset));
        }
        if kind != DirectionKind::Filter {
            let norm = l2(&tensors)?;
            if norm.is_nan() || norm <= 0.0 {
                return Err(Error::NotFinite {
                    what: "direction norm".into(),
                    value: norm,
                });
            }
            for t in &mut tensors {
                *t = t.f_div_scalar(norm)?;
            }
        }
        // Stored in the parameter's dtype, so a saved direction matches the model it was made for.
        for (t, p) in tensors.iter_mut().zip(params) {
            if p.tensor.is_floating_point() {
                *t = t.f_to_kind(p.tensor.kind())?;
            }
        }
        let norm = l2(&tensors)?;
        Ok(Direction {
            kind: kind.name().into(),
            seed,
            subset: subset.describe(),
            names: params.iter().map(|p| p.name.clone()).collect(),
            tensors,
            norm,
            moved,
        })
    }

    /// The direction `b − a` over `subset` (zero elsewhere), not normalized: `t = 0` is `a`,
    /// `t = 1` is `b` (the official `interpulation.py`: SWA at 0, the SGD solution at 1).
    pub fn between(
        params: &[NamedTensor],
        a: &[Tensor],
        b: &[Tensor],
        subset: &ParamSubset,
    ) -> Result<Self> {
        if a.len() != params.len() || b.len() != params.len() {
            return Err(Error::LengthMismatch {
                op: "Direction::between",
                expected_name: "params",
                expected: params.len(),
                name: "a or b",
                got: a.len().min(b.len()),
            });
        }
        let _guard = tch::no_grad_guard();
        let mut tensors = Vec::with_capacity(params.len());
        let mut moved = 0;
        for ((p, a), b) in params.iter().zip(a).zip(b) {
            if a.size() != p.tensor.size() || b.size() != p.tensor.size() {
                return Err(Error::Mismatch {
                    what: "shape of line end",
                    name: p.name.clone(),
                    got: format!("{:?} / {:?}", a.size(), b.size()),
                    expected: format!("{:?}", p.tensor.size()),
                });
            }
            if subset.contains(p) && p.tensor.is_floating_point() {
                moved += p.tensor.numel() as i64;
                // The difference in float64, stored in the parameter's dtype.
                tensors.push(
                    b.f_to_kind(Kind::Double)?
                        .f_sub(&a.f_to_kind(Kind::Double)?)?
                        .f_to_kind(p.tensor.kind())?,
                );
            } else {
                tensors.push(Tensor::f_zeros(
                    p.tensor.size(),
                    (Kind::Float, p.tensor.device()),
                )?);
            }
        }
        if moved == 0 {
            return Err(empty_subset(subset));
        }
        let norm = l2(&tensors)?;
        Ok(Direction {
            kind: "line".into(),
            seed: 0,
            subset: subset.describe(),
            names: params.iter().map(|p| p.name.clone()).collect(),
            tensors,
            norm,
            moved,
        })
    }

    /// A direction given tensor by tensor (same order and shapes as `params`), used as is.
    pub fn given(params: &[NamedTensor], tensors: Vec<Tensor>, kind: &str) -> Result<Self> {
        if tensors.len() != params.len() {
            return Err(Error::LengthMismatch {
                op: "Direction::given",
                expected_name: "params",
                expected: params.len(),
                name: "tensors",
                got: tensors.len(),
            });
        }
        for (p, t) in params.iter().zip(&tensors) {
            if p.tensor.size() != t.size() {
                return Err(Error::Mismatch {
                    what: "shape of direction tensor",
                    name: p.name.clone(),
                    got: format!("{:?}", t.size()),
                    expected: format!("{:?}", p.tensor.size()),
                });
            }
        }
        let norm = l2(&tensors)?;
        let moved = tensors.iter().map(|t| t.numel() as i64).sum();
        Ok(Direction {
            kind: kind.into(),
            seed: 0,
            subset: "given".into(),
            names: params.iter().map(|p| p.name.clone()).collect(),
            tensors,
            norm,
            moved,
        })
    }

    /// Fraction of moved entries whose sign agrees with the weight's (Li et al. 2024's sign
    /// consistency; entries where the direction is 0 are not counted).
    pub fn sign_consistency(&self, params: &[NamedTensor]) -> Result<f64> {
        let (mut agree, mut total) = (0i64, 0i64);
        for (p, d) in params.iter().zip(&self.tensors) {
            let nz = d.f_ne(0.0)?;
            total += nz.f_sum(Kind::Int64)?.f_int64_value(&[])?;
            let same = d
                .f_mul(&p.tensor.f_to_kind(Kind::Float)?)?
                .f_gt(0.0)?
                .f_logical_and(&nz)?;
            agree += same.f_sum(Kind::Int64)?.f_int64_value(&[])?;
        }
        Ok(if total == 0 {
            0.0
        } else {
            agree as f64 / total as f64
        })
    }

    /// Saves the tensors to a safetensors file, named `{prefix}{parameter name}`.
    pub fn save(&self, path: &Path, prefix: &str) -> Result<()> {
        let named: Vec<(String, &Tensor)> = self
            .names
            .iter()
            .zip(&self.tensors)
            .map(|(n, t)| (format!("{prefix}{n}"), t))
            .collect();
        Tensor::write_safetensors(&named, path)?;
        Ok(())
    }

    /// Saves several directions in one safetensors file (`d{index}/{parameter}`).
    pub fn save_all(directions: &[Direction], path: &Path) -> Result<()> {
        let mut named: Vec<(String, &Tensor)> = Vec::new();
        for (i, d) in directions.iter().enumerate() {
            for (n, t) in d.names.iter().zip(&d.tensors) {
                named.push((format!("d{i}/{n}"), t));
            }
        }
        Tensor::write_safetensors(&named, path)?;
        Ok(())
    }

    /// Loads direction `index` saved by [`save_all`](Self::save_all), checked against `params`.
    pub fn load(path: &Path, index: usize, params: &[NamedTensor]) -> Result<Self> {
        let mut all = Self::load_all(path, params, None)?;
        if index >= all.len() {
            return Err(Error::Data {
                path: path.to_path_buf(),
                reason: format!(
                    "direction {index} is missing (the file holds {} directions)",
                    all.len()
                ),
            });
        }
        Ok(all.swap_remove(index))
    }

    /// Loads the directions saved by [`save_all`](Self::save_all) (all of them, or the first
    /// `count`), each checked against `params`: every tensor must be named `d{i}/{parameter}`
    /// for a parameter of the model, every parameter must have its tensor, with the parameter's
    /// shape and dtype. The error names the first mismatch, in index then parameter order.
    pub fn load_all(
        path: &Path,
        params: &[NamedTensor],
        count: Option<usize>,
    ) -> Result<Vec<Self>> {
        if !path.is_file() {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "directions file not found"),
            ));
        }
        let all = Tensor::read_safetensors(path).map_err(|e| Error::Data {
            path: path.to_path_buf(),
            reason: format!("not a readable safetensors file: {e}"),
        })?;
        Self::from_named(path, all, params, count)
    }

    /// The checks and grouping of [`load_all`](Self::load_all) on tensors already in memory
    /// (named `d{i}/{parameter}`, from Python); `origin` names them in errors.
    pub fn from_named(
        origin: &Path,
        all: Vec<(String, Tensor)>,
        params: &[NamedTensor],
        count: Option<usize>,
    ) -> Result<Vec<Self>> {
        let path = origin;
        let bad = |reason: String| Error::Data {
            path: path.to_path_buf(),
            reason,
        };
        // Group by index; anything that is not `d{i}/{parameter}` is refused, not skipped, so a
        // file made for another model cannot pass for this one.
        let mut by_index: std::collections::BTreeMap<usize, Vec<(String, Tensor)>> =
            std::collections::BTreeMap::new();
        let mut sorted: Vec<&(String, Tensor)> = all.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, t) in sorted {
            let parsed = name
                .strip_prefix('d')
                .and_then(|r| r.split_once('/'))
                .and_then(|(i, p)| i.parse::<usize>().ok().map(|i| (i, p)));
            let Some((i, pname)) = parsed else {
                return Err(bad(format!(
                    "tensor `{name}` is not named d{{index}}/{{parameter}}"
                )));
            };
            if !params.iter().any(|p| p.name == pname) {
                return Err(bad(format!(
                    "tensor `{name}` names no parameter of the model (`{pname}`)"
                )));
            }
            by_index
                .entry(i)
                .or_default()
                .push((pname.to_string(), t.shallow_clone()));
        }
        let held = by_index.len();
        if let Some((pos, i)) = by_index.keys().enumerate().find(|(pos, i)| pos != *i) {
            return Err(bad(format!(
                "direction {pos} is missing (the file holds directions up to d{i});                  indices must run 0, 1, 2, ..."
            )));
        }
        if held == 0 {
            return Err(bad("the file holds no direction".into()));
        }
        let want = count.unwrap_or(held);
        if want == 0 || want > held {
            return Err(Error::invalid(
                "count",
                want,
                format!("1 to {held} (the directions held by {})", path.display()),
            ));
        }
        let mut out = Vec::with_capacity(want);
        for (i, tensors) in by_index.into_iter().take(want) {
            let mut ordered = Vec::with_capacity(params.len());
            for p in params {
                let key = format!("d{i}/{}", p.name);
                let t = tensors
                    .iter()
                    .find(|(n, _)| *n == p.name)
                    .map(|(_, t)| t.shallow_clone())
                    .ok_or_else(|| bad(format!("tensor `{key}` is missing")))?;
                if t.size() != p.tensor.size() {
                    return Err(bad(format!(
                        "tensor `{key}` has shape {:?}, the parameter has {:?}",
                        t.size(),
                        p.tensor.size()
                    )));
                }
                if t.kind() != p.tensor.kind() {
                    return Err(bad(format!(
                        "tensor `{key}` has dtype {:?}, the parameter has {:?}",
                        t.kind(),
                        p.tensor.kind()
                    )));
                }
                ordered.push(t.f_to_device(p.tensor.device())?);
            }
            let mut d = Direction::given(params, ordered, "loaded")?;
            d.moved = d
                .tensors
                .iter()
                .map(|t| {
                    t.f_count_nonzero(None::<i64>)
                        .and_then(|c| c.f_int64_value(&[]))
                })
                .sum::<std::result::Result<i64, _>>()?;
            out.push(d);
        }
        Ok(out)
    }
}

/// `d_i ← d_i·‖w_i‖/(‖d_i‖ + 1e−10)` per filter (slice along dim 0) of a tensor with ≥ 2 dims
/// (Li et al. 2018, `net_plotter.normalize_direction`; 1-D tensors are handled by the caller).
fn filter_normalize(d: &Tensor, w: &Tensor) -> Result<Tensor> {
    let n = d.size()[0];
    let dn = d
        .f_reshape([n, -1])?
        .f_norm_scalaropt_dim(2, [1i64].as_slice(), false)?;
    let wn = w
        .f_reshape([n, -1])?
        .f_norm_scalaropt_dim(2, [1i64].as_slice(), false)?;
    let scale = wn.f_div(&dn.f_add_scalar(1e-10)?)?;
    let mut shape = vec![n];
    shape.extend(std::iter::repeat(1).take(d.dim() - 1));
    Ok(d.f_mul(&scale.f_reshape(&shape)?)?)
}

crate::names::from_kebab_str!(
    DirectionKind,
    "direction",
    "uniform, gaussian, filter, sign-consistent, sign-inconsistent"
);
