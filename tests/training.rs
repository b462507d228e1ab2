//! The demo's training pieces: the `train2.py` learning-rate schedule (claim 10 of the paper's experiment: the official schedule)
//! and SWA inside a real training run equal to the mean of the end-of-epoch weights.
use asymvalley_cli::data::Digits;
use asymvalley_cli::model::{DigitsCnn, DigitsCnnConfig};
use asymvalley_cli::train::{train_sgd_swa, SgdConfig, SwaSchedule};
use tch::{nn::VarStore, Device, Kind, Tensor};

#[test]
fn schedule_matches_the_official_values() {
    let s = SwaSchedule {
        lr_init: 0.1,
        swa_lr: 0.05,
        swa_start: 126,
        epochs: 225,
    };
    // Values of the official train2.py schedule (its README run: lr 0.1, SWA lr 0.05, start 126 of 225).
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
    let net = DigitsCnn::new(
        &vs.root(),
        &DigitsCnnConfig {
            channels: [4, 8],
            ..Default::default()
        },
    )
    .unwrap();
    let schedule = SwaSchedule {
        lr_init: 0.1,
        swa_lr: 0.05,
        swa_start: 3,
        epochs: 6,
    };
    let sgd = SgdConfig {
        momentum: 0.9,
        weight_decay: 3e-4,
        batch: 128,
        seed: 5,
    };
    let mut snapshots: Vec<Tensor> = Vec::new();
    let w = vs.variables()["conv1.weight"].shallow_clone();
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
        .averaged("conv1.weight")
        .unwrap()
        .to_kind(Kind::Double);
    assert!((got - mean).abs().max().double_value(&[]) < 1e-6);
}

/// Runs `asymvalley demo` with `extra` arguments and `--out DIR/report`, expecting a refusal.
/// Returns stderr; asserts that nothing was written (no report, no staging folder).
fn demo_refuses(extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let result = std::process::Command::new(env!("CARGO_BIN_EXE_asymvalley"))
        .arg("demo")
        .arg("--out")
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr).into_owned();
    assert!(!result.status.success(), "{extra:?} was accepted");
    assert!(!stderr.contains("backtrace"), "{extra:?}: {stderr}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{extra:?} left {left:?}");
    stderr
}

#[test]
fn demo_arguments_are_validated_before_any_work() {
    for (args, needle) in [
        (&["--points", "0"][..], "--points = 0"),
        (&["--chunks", "0"], "--chunks = 0"),
        (&["--chunks", "361"], "--chunks = 361"),
        (&["--seeds", "0"], "--seeds = 0"),
        (&["--lr-init", "NaN"], "--lr-init = NaN"),
        (&["--weight-decay=-1"], "--weight-decay = -1"),
        (&["--epochs", "10", "--swa-start", "11"], "--swa-start = 11"),
        (&["--batch", "1"], "--batch = 1"),
        (&["--channels", "0,4"], "--channels"),
        (&["--channels", "4"], "--channels"),
    ] {
        let stderr = demo_refuses(args);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn demo_refuses_an_out_folder_that_holds_something_else() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious.txt"), b"keep").unwrap();
    let result = std::process::Command::new(env!("CARGO_BIN_EXE_asymvalley"))
        .args(["demo", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!result.status.success());
    assert!(String::from_utf8_lossy(&result.stderr).contains("--out"));
    assert_eq!(
        std::fs::read(dir.path().join("precious.txt")).unwrap(),
        b"keep"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
