//! SGD restarted from SWA (`sgd_after_swa.py`) and its selection rule.
//!
//! The official script trains at a constant small rate from the SWA weights, the SGD run's
//! momentum buffers and weight decay carried over, and keeps an epoch's weights when its running
//! (train-mode) training loss is strictly below SWA's training loss **and** its test loss is
//! strictly above SWA's test loss. Such a pair (SWA, SGD) has SGD lower on train but higher on
//! test: the line through them is where the paper looks for SWA on the flat side.
use super::solution::SolutionResult;
use crate::data::Digits;
use crate::model::Network;
use crate::train::{evaluate, train_epoch, Evaluation, SgdConfig};
use asymvalley::error::Result;
use serde::Serialize;
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
    /// Every epoch run, in order.
    pub epochs: Vec<AfterSwaEpoch>,
    /// The 0-based index of the first epoch the rule selected (the last one run); `None`: the
    /// rule never fired within the budget.
    pub selected: Option<usize>,
}

/// The first epoch of `epochs` that [`rule_selects`] keeps.
pub fn first_selected(epochs: &[AfterSwaEpoch], swa: &SolutionResult) -> Option<usize> {
    epochs
        .iter()
        .position(|e| rule_selects(e.train.loss, e.test.loss, swa))
}

/// Restarts SGD from the SWA weights held by `net`'s VarStore at the constant rate `lr` until
/// the rule selects an epoch or `max_epochs` pass; the VarStore then holds the last epoch's
/// weights (the selected one's, when the rule fired). Epoch e uses batch order seed
/// `sgd.seed + 10 000 + e`, apart from the training run's.
#[allow(clippy::too_many_arguments)]
pub fn sgd_after_swa<N: Network>(
    net: &N,
    optimizer: &mut COptimizer,
    data: &Digits,
    sgd: &SgdConfig,
    lr: f64,
    max_epochs: usize,
    swa: &SolutionResult,
    mut on_epoch: impl FnMut(&AfterSwaEpoch),
) -> Result<Restart> {
    optimizer.set_learning_rate(lr)?;
    let mut epochs = Vec::new();
    for epoch in 0..max_epochs {
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
        epochs.push(e);
        if rule_selects(train.loss, test.loss, swa) {
            break;
        }
    }
    let selected = first_selected(&epochs, swa);
    Ok(Restart { epochs, selected })
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
    fn the_first_qualifying_epoch_is_kept() {
        let s = swa();
        let epochs = [
            epoch(0.12, 0.25),
            epoch(0.09, 0.18),
            epoch(0.08, 0.22),
            epoch(0.07, 0.23),
        ];
        assert_eq!(first_selected(&epochs, &s), Some(2));
        assert_eq!(first_selected(&epochs[..2], &s), None);
    }
}
