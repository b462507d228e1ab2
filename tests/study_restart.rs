//! Claim 14, the official `sgd_after_swa.py` protocol, through the restart loop: every epoch of
//! the budget runs (the official script never stops early), each epoch whose running train loss
//! is below SWA's and whose test loss is above SWA's is a checkpoint, and the restart ends with
//! the VarStore holding the weights of the LAST such epoch, not the first and not the final one.
use asymvalley_cli::data::Digits;
use asymvalley_cli::experiment::restart::{rule_selects, sgd_after_swa, AfterSwaEpoch};
use asymvalley_cli::experiment::solution::SolutionResult;
use asymvalley_cli::experiment::weights::snapshot;
use asymvalley_cli::model::{DigitsCnn, DigitsCnnConfig};
use asymvalley_cli::train::{sgd_optimizer, Evaluation, SgdConfig};
use tch::{nn::VarStore, Device, Tensor};

fn reference(train: f64, test: f64) -> SolutionResult {
    SolutionResult {
        train: Evaluation {
            loss: train,
            accuracy: 0.0,
        },
        test: Evaluation {
            loss: test,
            accuracy: 0.0,
        },
    }
}

const SGD: SgdConfig = SgdConfig {
    momentum: 0.9,
    weight_decay: 3e-4,
    batch: 128,
    seed: 1,
};

/// A fresh network from seed 2 and its optimizer, so that two calls start from the same point.
fn fresh() -> (VarStore, DigitsCnn, tch::COptimizer) {
    tch::manual_seed(2);
    let vs = VarStore::new(Device::Cpu);
    let net = DigitsCnn::new(
        &vs.root(),
        &DigitsCnnConfig {
            channels: [4, 8],
            ..Default::default()
        },
    )
    .unwrap();
    let opt = sgd_optimizer(&vs, 0.05, &SGD).unwrap();
    (vs, net, opt)
}

/// Runs the restart for `epochs` against `swa`, with a copy of the weights after every epoch.
fn restart(
    data: &Digits,
    epochs: usize,
    swa: &SolutionResult,
) -> (
    asymvalley_cli::experiment::restart::Restart,
    Vec<Vec<Tensor>>,
    Vec<Tensor>,
) {
    let (vs, net, mut opt) = fresh();
    let mut after = Vec::new();
    let r = sgd_after_swa(&vs, &net, &mut opt, data, &SGD, 0.05, epochs, swa, |_| {
        after.push(snapshot(&vs).unwrap())
    })
    .unwrap();
    let end = snapshot(&vs).unwrap();
    (r, after, end)
}

fn same(a: &[Tensor], b: &[Tensor]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.equal(y))
}

/// The last index whose epoch passes the rule, computed here from the recorded losses.
fn last_passing(epochs: &[AfterSwaEpoch], swa: &SolutionResult) -> Option<usize> {
    (0..epochs.len())
        .rev()
        .find(|&i| rule_selects(epochs[i].train.loss, epochs[i].test.loss, swa))
}

#[test]
fn the_restart_runs_its_budget_and_keeps_the_last_passing_epoch() {
    let data = Digits::load(Device::Cpu).unwrap();
    const N: usize = 6;
    // A reference no epoch can beat on train: nothing passes, every epoch runs, and the
    // VarStore holds the final epoch's weights.
    let (never, after, end) = restart(&data, N, &reference(-1.0, 0.0));
    assert_eq!((never.epochs.len(), never.selected), (N, None));
    assert!(never.passing.is_empty());
    assert!(same(&end, &after[N - 1]));

    // A reference every epoch passes: the budget still runs in full (no stop at the first
    // pass), every epoch is a checkpoint and the last one is kept.
    let (always, _, _) = restart(&data, N, &reference(1e9, -1.0));
    assert_eq!(always.epochs.len(), N);
    assert_eq!(always.passing, (0..N).collect::<Vec<_>>());
    assert_eq!(always.selected, Some(N - 1));

    // A reference built from the run's own losses so that epoch j < N − 1 passes and no later
    // epoch does: pass iff train ≤ train_j and test ≥ test_j (thresholds one ulp beyond epoch
    // j's), with j the last epoch not dominated so by a later one.
    let e = &never.epochs;
    let dominated = |j: usize| {
        (j + 1..N).any(|i| e[i].train.loss <= e[j].train.loss && e[i].test.loss >= e[j].test.loss)
    };
    let j = (0..N - 1)
        .rev()
        .find(|&j| !dominated(j))
        .expect("some epoch before the last is not dominated by a later one");
    let swa = reference(
        f64::from_bits(e[j].train.loss.to_bits() + 1),
        f64::from_bits(e[j].test.loss.to_bits() - 1),
    );
    let (mid, after, end) = restart(&data, N, &swa);
    // Same start, same batches, one thread: the same epochs as the first run.
    assert_eq!(&mid.epochs, e);
    assert_eq!(mid.epochs.len(), N, "the budget runs in full");
    assert_eq!(last_passing(&mid.epochs, &swa), Some(j));
    assert_eq!(mid.selected, Some(j));
    assert_eq!(mid.passing.last(), Some(&j));
    // The VarStore holds epoch j's weights: not the final epoch's (the weights moved after j).
    assert!(same(&end, &after[j]));
    assert!(!same(&end, &after[N - 1]));
}
