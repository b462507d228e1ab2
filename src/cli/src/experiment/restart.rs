//! SGD restarted from SWA (`sgd_after_swa.py`) and its selection rule.
//!
//! The official script trains at a constant small rate from the SWA weights, the SGD run's
//! momentum buffers and weight decay carried over, for its whole budget of epochs, and saves a
//! checkpoint of every epoch whose running (train-mode) training loss is strictly below SWA's
//! training loss **and** whose test loss is strictly above SWA's test loss. Such a pair (SWA,
//! SGD) has SGD lower on train but higher on test: the line through them is where the paper
//! looks for SWA on the flat side. The line goes to the **last** passing epoch
//! (`restart_note.md` says why, and what is reported when none passes).
use super::solution::SolutionResult;
use super::weights::{restore, snapshot};
use crate::data::Digits;
use crate::model::Network;
use crate::train::{evaluate, train_epoch, Evaluation, SgdConfig};
use asymvalley::error::Result;
use serde::Serialize;
use tch::nn::VarStore;
use tch::COptimizer;

/// The official selection rule: `train_loss < swa_train_loss && test_loss > swa_test_loss`.
pub fn rule_selects(train_loss: f64, test_loss: f64, swa: &SolutionResult) -> bool {
    train_loss < swa.train.loss && test_loss > swa.test.loss
}

/// One epoch of SGD after SWA.
#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct AfterSwaEpoch {
    /// Running train-mode loss of the epoch (the official rule uses it).
    pub train: Evaluation,
    /// Test loss and accuracy at the epoch's end (eval mode, running statistics).
    pub test: Evaluation,
}

/// What the restart did.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Restart {
    /// Every epoch of the budget, in order.
    pub epochs: Vec<AfterSwaEpoch>,
    /// The 0-based indices of the epochs the rule passed (the official script's checkpoints).
    pub passing: Vec<usize>,
    /// The last of them, whose weights the line goes to; `None`: no epoch of the budget passed.
    pub selected: Option<usize>,
}

/// The 0-based indices of the epochs of `epochs` that [`rule_selects`] keeps.
pub fn passing_epochs(epochs: &[AfterSwaEpoch], swa: &SolutionResult) -> Vec<usize> {
    epochs
        .iter()
        .enumerate()
        .filter(|(_, e)| rule_selects(e.train.loss, e.test.loss, swa))
        .map(|(i, _)| i)
        .collect()
}

/// The last epoch of `epochs` that [`rule_selects`] keeps.
pub fn last_selected(epochs: &[AfterSwaEpoch], swa: &SolutionResult) -> Option<usize> {
    epochs
        .iter()
        .rposition(|e| rule_selects(e.train.loss, e.test.loss, swa))
}

/// Restarts SGD from the SWA weights held by `vs` (the VarStore of `net`) at the constant rate
/// `lr` for all `epochs` epochs, never stopping early. When some epoch passed the rule, `vs`
/// ends holding the trainable weights of the last one (its BatchNorm buffers are those of the
/// final epoch: every later use re-estimates them); otherwise the final epoch's weights. Epoch
/// e uses batch order seed `sgd.seed + 10 000 + e`, apart from the training run's.
#[allow(clippy::too_many_arguments)]
pub fn sgd_after_swa<N: Network>(
    vs: &VarStore,
    net: &N,
    optimizer: &mut COptimizer,
    data: &Digits,
    sgd: &SgdConfig,
    lr: f64,
    epochs: usize,
    swa: &SolutionResult,
    mut on_epoch: impl FnMut(&AfterSwaEpoch),
) -> Result<Restart> {
    optimizer.set_learning_rate(lr)?;
    let mut run = Vec::with_capacity(epochs);
    // The official script saves a checkpoint per passing epoch; only the last one is used, so
    // one copy of the weights, overwritten at each passing epoch, is enough.
    let mut kept = None;
    for epoch in 0..epochs {
        let train = train_epoch(
            net,
            optimizer,
            &data.train,
            sgd,
            sgd.seed.wrapping_add(10_000 + epoch as u64),
        )?;
        let test = evaluate(net, &data.test, sgd.batch)?;
        let e = AfterSwaEpoch { train, test };
        on_epoch(&e);
        run.push(e);
        if rule_selects(train.loss, test.loss, swa) {
            kept = Some(snapshot(vs)?);
        }
    }
    if let Some(weights) = &kept {
        restore(vs, weights)?;
    }
    Ok(Restart {
        passing: passing_epochs(&run, swa),
        selected: last_selected(&run, swa),
        epochs: run,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn swa() -> SolutionResult {
        let e = |loss| Evaluation {
            loss,
            accuracy: 90.0,
        };
        SolutionResult {
            train: e(0.10),
            test: e(0.20),
        }
    }

    fn epoch(train: f64, test: f64) -> AfterSwaEpoch {
        let e = |loss| Evaluation {
            loss,
            accuracy: 90.0,
        };
        AfterSwaEpoch {
            train: e(train),
            test: e(test),
        }
    }

    #[test]
    fn the_rule_needs_lower_train_and_higher_test_strictly() {
        let s = swa();
        assert!(rule_selects(0.09, 0.21, &s));
        assert!(!rule_selects(0.11, 0.21, &s), "higher train loss");
        assert!(
            !rule_selects(0.09, 0.19, &s),
            "lower test loss: SGD better than SWA"
        );
        assert!(
            !rule_selects(0.10, 0.21, &s),
            "equal train loss is not lower"
        );
        assert!(
            !rule_selects(0.09, 0.20, &s),
            "equal test loss is not higher"
        );
    }

    #[test]
    fn the_last_qualifying_epoch_is_kept() {
        let s = swa();
        // Epochs 2 and 4 pass, 3 and 5 do not: first-selected would give 2, stopping at the
        // first pass would never see 4, and taking the final epoch would give 5.
        let epochs = [
            epoch(0.12, 0.25),
            epoch(0.09, 0.18),
            epoch(0.08, 0.22),
            epoch(0.07, 0.19),
            epoch(0.06, 0.23),
            epoch(0.11, 0.24),
        ];
        assert_eq!(last_selected(&epochs, &s), Some(4));
        assert_eq!(passing_epochs(&epochs, &s), vec![2, 4]);
        assert_eq!(last_selected(&epochs[..4], &s), Some(2));
        assert_eq!(last_selected(&epochs[..2], &s), None);
        assert!(passing_epochs(&epochs[..2], &s).is_empty());
    }
}
