//! A solution's train and test results, with BatchNorm re-estimated by the official `bn_update`.
use crate::data::{Digits, Split};
use crate::model::Network;
use crate::train::{evaluate, input_batches, Evaluation};
use asymvalley::average::Averager;
use asymvalley::bn::{reestimate_batch_norm, BnWeighting};
use asymvalley::error::Result;
use serde::Serialize;
use tch::nn::VarStore;

/// Train and test results of one solution.
#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct SolutionResult {
    /// On the training set (eval mode).
    pub train: Evaluation,
    /// On the test set.
    pub test: Evaluation,
}

/// Evaluates the model on both splits.
pub fn evaluate_both<N: Network>(net: &N, data: &Digits, batch: i64) -> Result<SolutionResult> {
    Ok(SolutionResult {
        train: evaluate(net, &data.train, batch)?,
        test: evaluate(net, &data.test, batch)?,
    })
}

/// The official `bn_update` over the training data (shuffled by `seed`): running statistics
/// become the batch-size-weighted means of the batch statistics.
pub fn bn_update<N: Network>(net: &N, train: &Split, batch: i64, seed: u64) -> Result<()> {
    reestimate_batch_norm(
        net,
        input_batches(train, batch, Some(seed))?,
        BnWeighting::SampleWeighted,
    )?;
    Ok(())
}

/// Writes the SWA average into `vs`, re-estimates BatchNorm, and evaluates.
pub fn swa_solution<N: Network>(
    vs: &VarStore,
    net: &N,
    averager: &Averager,
    data: &Digits,
    batch: i64,
    seed: u64,
) -> Result<SolutionResult> {
    averager.copy_to(vs)?;
    bn_update(net, &data.train, batch, seed)?;
    evaluate_both(net, data, batch)
}
