//! Claim 14, the official `sgd_after_swa.py` rule, through the restart loop: it keeps the first
//! epoch whose running train loss is below SWA's and whose test loss is above SWA's, and stops
//! there; without such an epoch it runs the whole budget and says that nothing was selected.
use asymvalley_cli::data::Digits;
use asymvalley_cli::experiment::restart::{rule_selects, sgd_after_swa};
use asymvalley_cli::experiment::solution::SolutionResult;
use asymvalley_cli::experiment::weights::snapshot;
use asymvalley_cli::model::{DigitsCnn, DigitsCnnConfig};
use asymvalley_cli::train::{sgd_optimizer, Evaluation, SgdConfig};
use tch::{nn::VarStore, Device};

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

#[test]
fn the_restart_stops_at_the_first_selected_epoch() {
    let data = Digits::load(Device::Cpu).unwrap();
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
    let sgd = SgdConfig {
        momentum: 0.9,
        weight_decay: 3e-4,
        batch: 128,
        seed: 1,
    };
    let mut opt = sgd_optimizer(&vs, 0.05, &sgd).unwrap();
    // A reference no epoch can beat on train: the rule never fires, every epoch runs.
    let never = sgd_after_swa(
        &net,
        &mut opt,
        &data,
        &sgd,
        0.05,
        3,
        &reference(-1.0, 0.0),
        |_| {},
    )
    .unwrap();
    assert_eq!((never.epochs.len(), never.selected), (3, None));
    // A reference every epoch beats on train and loses to on test: the first epoch is kept, and
    // the VarStore holds its weights (no further step).
    let mut seen = Vec::new();
    let always = sgd_after_swa(
        &net,
        &mut opt,
        &data,
        &sgd,
        0.05,
        5,
        &reference(1e9, -1.0),
        |e| seen.push(*e),
    )
    .unwrap();
    assert_eq!((always.epochs.len(), always.selected), (1, Some(0)));
    assert_eq!(seen.len(), 1);
    let kept = snapshot(&vs).unwrap();
    // A reference no epoch loses to on test: the rule never fires, and the weights did move.
    let run = sgd_after_swa(
        &net,
        &mut opt,
        &data,
        &sgd,
        0.05,
        4,
        &reference(1e9, 1e9),
        |_| {},
    )
    .unwrap();
    assert_eq!((run.epochs.len(), run.selected), (4, None));
    for e in &run.epochs {
        assert!(!rule_selects(
            e.train.loss,
            e.test.loss,
            &reference(1e9, 1e9)
        ));
    }
    assert!(kept
        .iter()
        .zip(snapshot(&vs).unwrap())
        .any(|(a, b)| !a.equal(&b)));
}
