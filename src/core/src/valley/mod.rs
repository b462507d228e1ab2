//! The asymmetric-valley detector: where does a solution sit in its valley, which directions are
//! asymmetric, which side is flat, and how far toward it should one move?
//!
//! One concept per file:
//! - [`model`]: what is probed ([`ProbeModel`]): a tch VarStore with a forward closure
//!   ([`TchModel`]) or a TorchScript file ([`torchscript::ScriptModel`]); losses; probe data.
//! - [`directions`]: seeded, saved probe directions (uniform(0,1) as in the paper, Gaussian,
//!   filter-normalized, sign-(in)consistent, two-point a→b), restricted to a parameter subset.
//! - [`hessian`]: top-k Hessian eigen-directions (power iteration on Hessian-vector products), Hutchinson trace.
//! - [`line`]: the line between two checkpoints of one model (`interpulation.py`).
//! - [`profile`]: 1-D loss profiles `L(w + t·d)` with BatchNorm stale / fully re-estimated /
//!   re-estimated on k fixed batches at every point (common random numbers).
//! - [`asymmetry`]: rise ratio, two-sided power fit with bootstrap intervals, flat side, class.
//! - [`bias`]: the theorem-optimal bias `c*` of the fitted valley under a random shift (harness).
//! - [`compare`]: are the Hessian's sharpest directions the asymmetric ones? Groups with intervals.
//! - [`bn_check`]: whether a TorchScript model's BatchNorm layers can be re-estimated at all.
//! - [`shift`]: the shift scale from train vs held-out profiles, with its sign test.
//! - [`surface`]: 2-D loss surfaces `L(w + a·d1 + b·d2)` on a grid, same BatchNorm modes.
//! - [`probe`]: the whole probe (config, directions, profiles or a surface, scoring), as the CLI
//!   and the op library both run it.
//! - [`report`]: JSON output (the figures are drawn by the application).
//!
//! # References
//! He, Huang & Yuan, "Asymmetric Valleys: Beyond Sharp and Flat Local Minima", NeurIPS 2019
//! (arXiv 1902.00744); Li et al., "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018;
//! Li et al., "Exploring and Exploiting the Asymmetric Valley of DNNs", NeurIPS 2024.
pub mod asymmetry;
pub mod bias;
pub mod bn_check;
pub mod compare;
pub mod directions;
pub mod hessian;
pub mod line;
pub mod model;
pub mod probe;
pub mod profile;
pub mod report;
pub mod shift;
pub mod surface;
pub mod torchscript;

pub use asymmetry::{analyze, Asymmetry, AsymmetryConfig, TwoSidedFit, ValleyClass};
pub use bias::{optimal_bias, ShiftLaw, ValleyBias};
pub use directions::{Direction, DirectionKind, ParamSubset};
pub use model::{LossKind, NamedTensor, ProbeData, ProbeModel, TchModel};
pub use profile::{grid_line, grid_through, profile, BnMode, BnPlan, Profile};
