//! The demo's training pieces: the `train2.py` learning-rate schedule (DIGEST.md §6 claim 10)
//! and SWA inside a real training run equal to the mean of the end-of-epoch weights.
use asymvalley_cli::data::Digits;
use asymvalley_cli::model::{DigitsNet, DigitsNetConfig};
use asymvalley_cli::train::{train_sgd_swa, SgdConfig, SwaSchedule};
use tch::{nn::VarStore, Device, Kind, Tensor};

#[test]
fn schedule_matches_the_official_values() {
    let s = SwaSchedule {
        lr_init: 0.1,
        swa_lr: 0.05,
        swa_start: 126,
        epochs: 225,
        swa: true,
    };
    // Values from DIGEST.md §5.3 (the README run of train2.py).
    for (epoch, lr) in [
        (0, 0.1),
        (63, 0.1),
        (64, 0.099008),
        (80, 0.083135),
        (100, 0.063294),
        (113, 0.050397),
        (114, 0.05),
        (224, 0.05),
    ] {
        assert!(
            (s.learning_rate(epoch) - lr).abs() < 5e-7,
            "epoch {epoch}: {} vs {lr}",
            s.learning_rate(epoch)
        );
    }
    // SWA averages after epochs 125..=224: 100 snapshots.
    assert_eq!((0..225).filter(|&e| s.averages_after(e)).count(), 100);
}

#[test]
fn swa_in_training_is_the_mean_of_end_of_epoch_weights() {
    tch::manual_seed(1);
    let data = Digits::load(Device::Cpu).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (1437, 360));
    let vs = VarStore::new(Device::Cpu);
    let net = DigitsNet::new(
        &vs.root(),
        &DigitsNetConfig {
            hidden: vec![32],
            ..Default::default()
        },
    )
    .unwrap();
    let schedule = SwaSchedule {
        lr_init: 0.1,
        swa_lr: 0.05,
        swa_start: 3,
        epochs: 6,
        swa: true,
    };
    let sgd = SgdConfig {
        momentum: 0.9,
        weight_decay: 3e-4,
        batch: 128,
        seed: 5,
    };
    let mut snapshots: Vec<Tensor> = Vec::new();
    let w = vs.variables()["hidden0.linear.weight"].shallow_clone();
    let run = train_sgd_swa(&vs, &net, &data.train, &schedule, &sgd, |epoch, _, _| {
        if schedule.averages_after(epoch) {
            snapshots.push(w.to_kind(Kind::Double));
        }
    })
    .unwrap();
    assert_eq!(snapshots.len(), 4);
    let mean = Tensor::stack(&snapshots, 0).mean_dim(0, false, Kind::Double);
    let got = run
        .averager
        .averaged("hidden0.linear.weight")
        .unwrap()
        .to_kind(Kind::Double);
    assert!((got - mean).abs().max().double_value(&[]) < 1e-6);
}
