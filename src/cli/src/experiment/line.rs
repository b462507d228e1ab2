//! The loss along the SWA → SGD line (`interpulation.py`): `w(t) = w_swa + t·(w_sgd − w_swa)`
//! on the official grid `t_i = (i − D)/P`, i = 0..2D+P (D = extend·P), only the parameters moved
//! and BatchNorm re-estimated over the training set at every point; then the two-sided fit of
//! the training profile around its minimum on the line.
use super::solution::{bn_update, evaluate_both, SolutionResult};
use super::weights::{interpolate, restore};
use crate::data::Digits;
use crate::model::Network;
use crate::train::input_batches;
use asymvalley::error::{Error, Result};
use asymvalley::valley::asymmetry::{analyze, Asymmetry, AsymmetryConfig};
use asymvalley::valley::directions::{Direction, ParamSubset};
use asymvalley::valley::model::{LossKind, ProbeModel, TchModel};
use asymvalley::valley::profile::{profile, BnPlan, Profile};
use serde::Serialize;
use tch::{nn::VarStore, Tensor};

/// Train and test profiles along the line.
#[derive(Clone, Debug, Serialize)]
pub struct LineProfiles {
    /// ‖w_sgd − w_swa‖ over the parameters.
    pub distance: f64,
    /// Training loss (eval mode, BN re-estimated at each point).
    pub train: Profile,
    /// Test loss at the same points.
    pub test: Profile,
}

/// Profiles the line from `swa` to `sgd` at `offsets` (BN fully re-estimated at each point);
/// `vs` holds `swa` afterwards.
#[allow(clippy::too_many_arguments)]
pub fn line_profiles<N: Network>(
    vs: &VarStore,
    net: &N,
    data: &Digits,
    swa: &[Tensor],
    sgd: &[Tensor],
    offsets: &[f64],
    batch: i64,
    seed: u64,
    mut on_point: impl FnMut(),
) -> Result<LineProfiles> {
    restore(vs, swa)?;
    let model = TchModel::from_network(vs, net);
    let params = model.parameters()?;
    let d = Direction::between(&params, swa, sgd, &ParamSubset::All)?;
    let (train, test) = (data.train.probe_data(batch)?, data.test.probe_data(batch)?);
    let full = BnPlan::new(
        asymvalley::valley::BnMode::Full,
        input_batches(&data.train, batch, Some(seed))?,
    )?;
    let (mut p, _) = profile(
        &model,
        &d,
        offsets,
        &[&train, &test],
        LossKind::CrossEntropy,
        &full,
        |_| on_point(),
    )?;
    let test = p.remove(1);
    let train = p.remove(0);
    Ok(LineProfiles {
        distance: d.norm,
        train,
        test,
    })
}

/// Train and test results at `w_swa + t·(w_sgd − w_swa)` (any real t), BN re-estimated.
#[allow(clippy::too_many_arguments)]
pub fn line_point<N: Network>(
    vs: &VarStore,
    net: &N,
    swa: &[Tensor],
    sgd: &[Tensor],
    t: f64,
    data: &Digits,
    batch: i64,
    seed: u64,
) -> Result<SolutionResult> {
    restore(vs, &interpolate(swa, sgd, t)?)?;
    bn_update(net, &data.train, batch, seed)?;
    evaluate_both(net, data, batch)
}

/// The offset of the smallest value of `loss` (first one on ties).
pub fn argmin_offset(offsets: &[f64], loss: &[f64]) -> Result<f64> {
    loss.iter()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .and_then(|(i, _)| offsets.get(i).copied())
        .ok_or_else(|| Error::invalid("profile", "empty", "a non-empty profile"))
}

/// The two-sided fit of the training profile around its minimizer on the line.
#[derive(Clone, Debug, Serialize)]
pub struct LineValley {
    /// The grid offset of the training-loss minimum (the empirical minimizer ŵ* on the line).
    pub t_min: f64,
    /// The asymmetry of the training profile re-centred at t_min (offsets t − t_min).
    pub asymmetry: Asymmetry,
}

/// Fits the training profile around its grid minimum; `None` when the minimum is at the grid's
/// edge (no matched ±r around it, so no two-sided valley).
pub fn line_valley(train: &Profile, config: &AsymmetryConfig) -> Result<Option<LineValley>> {
    let t_min = argmin_offset(&train.offsets, &train.loss)?;
    let (lo, hi) = (
        train.offsets.first().copied().unwrap_or(0.0),
        train.offsets.last().copied().unwrap_or(0.0),
    );
    if t_min <= lo || t_min >= hi {
        return Ok(None);
    }
    let shifted: Vec<f64> = train.offsets.iter().map(|t| t - t_min).collect();
    let asymmetry = analyze(&shifted, &train.loss, Some(&train.per_example), config)?;
    Ok(Some(LineValley { t_min, asymmetry }))
}

/// SWA sits at t = 0, so its displacement from the training minimum is `−t_min`. It is on the
/// flat side when the valley is asymmetric (`flat_side` ±1 in the re-centred offsets) and the
/// displacement is non-zero with the flat side's sign; a SWA at the minimum is on no side.
pub fn swa_on_flat_side(t_min: f64, flat_side: i8) -> bool {
    let displacement = -t_min;
    flat_side != 0 && displacement != 0.0 && (displacement > 0.0) == (flat_side > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_side_follows_the_displacement_sign() {
        // Minimum at t = 0.5 (toward SGD): SWA is displaced by −0.5, flat side − is SWA's side.
        assert!(swa_on_flat_side(0.5, -1));
        assert!(!swa_on_flat_side(0.5, 1));
        // Minimum behind SWA (t = −0.3): displacement +0.3.
        assert!(swa_on_flat_side(-0.3, 1));
        assert!(!swa_on_flat_side(-0.3, -1));
        // Symmetric valley, or SWA at the minimum: not on a flat side.
        assert!(!swa_on_flat_side(0.5, 0));
        assert!(!swa_on_flat_side(0.0, -1));
    }

    #[test]
    fn argmin_takes_the_first_minimum() {
        assert_eq!(
            argmin_offset(&[-1.0, 0.0, 1.0], &[3.0, 1.0, 1.0]).unwrap(),
            0.0
        );
        assert!(argmin_offset(&[], &[]).is_err());
    }
}
