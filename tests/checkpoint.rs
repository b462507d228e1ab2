//! Checkpoint and resume: an interrupted, saved and resumed run gives a bitwise-identical average;
//! truncated or corrupted files are refused with a clear error and leave everything intact.
use crate::common::{randomize_seeded, var_store};
use asymvalley::average::{Averager, AveragerConfig, EmaConfig, Rule, Warmup};
use asymvalley::Error;
use tch::{Kind, Tensor};

fn configs() -> Vec<AveragerConfig> {
    let ema = EmaConfig {
        decay: 0.99,
        warmup: Warmup::Power {
            gamma: 1.0,
            power: 0.75,
            min_decay: 0.0,
        },
    };
    vec![
        AveragerConfig {
            update_every: 2,
            ..AveragerConfig::swa()
        },
        AveragerConfig {
            rule: Rule::Ema(ema),
            update_after_step: 3,
            average_buffers: true,
            ..AveragerConfig::swa()
        },
    ]
}

/// Deterministic model states: step i sets every variable from seed i.
fn set_step(vs: &tch::nn::VarStore, i: i64) {
    randomize_seeded(vs, 1000 + i as u64);
}

#[test]
fn resume_is_bitwise_identical() {
    let dir = tempfile::tempdir().unwrap();
    for (k, config) in configs().into_iter().enumerate() {
        for kind in [Kind::Float, Kind::BFloat16] {
            let shapes = [vec![4, 3], vec![7]];
            let vs = var_store(&shapes, kind, true);
            // Uninterrupted run.
            let mut straight = Averager::new(&vs, config).unwrap();
            for i in 0..20 {
                set_step(&vs, i);
                straight.update(&vs).unwrap();
            }
            // Interrupted at 11: save, drop, build a new averager in a "new process", load, continue.
            let path = dir.path().join(format!("avg{k}.safetensors"));
            let mut first = Averager::new(&vs, config).unwrap();
            for i in 0..11 {
                set_step(&vs, i);
                first.update(&vs).unwrap();
            }
            first.save(&path).unwrap();
            drop(first);
            let mut resumed = Averager::new(&vs, config).unwrap();
            resumed.load(&path).unwrap();
            for i in 11..20 {
                set_step(&vs, i);
                resumed.update(&vs).unwrap();
            }
            assert_eq!(
                (resumed.steps(), resumed.n_averaged()),
                (straight.steps(), straight.n_averaged())
            );
            for v in straight.variables() {
                let (a, b) = (
                    straight.averaged(&v.name).unwrap(),
                    resumed.averaged(&v.name).unwrap(),
                );
                assert!(
                    a.equal(&b),
                    "config {k} {kind:?}: `{}` differs after resume: {a:?} {b:?} {}",
                    v.name,
                    (&a - &b).abs().max()
                );
            }
        }
    }
}

fn saved_averager(path: &std::path::Path) -> (tch::nn::VarStore, Averager) {
    let vs = var_store(&[vec![16, 16]], Kind::Float, true);
    let mut avg = Averager::new(&vs, AveragerConfig::swa()).unwrap();
    for i in 0..3 {
        set_step(&vs, i);
        avg.update(&vs).unwrap();
    }
    avg.save(path).unwrap();
    (vs, avg)
}

fn snapshot(avg: &Averager) -> Vec<Tensor> {
    avg.variables()
        .iter()
        .map(|v| avg.averaged(&v.name).unwrap().copy())
        .collect()
}

fn assert_refused_and_intact(path: &std::path::Path, avg: &mut Averager, needle: &str) {
    let before = (snapshot(avg), avg.steps(), avg.n_averaged());
    let err = avg.load(path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Checkpoint { .. }), "{msg}");
    assert!(
        msg.contains(needle) && msg.contains(&path.display().to_string()),
        "message: {msg}"
    );
    assert_eq!((avg.steps(), avg.n_averaged()), (before.1, before.2));
    for (a, b) in snapshot(avg).iter().zip(&before.0) {
        assert!(a.equal(b), "state changed by a refused load");
    }
}

#[test]
fn truncated_checkpoint_is_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.safetensors");
    let (vs, _) = saved_averager(&path);
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let mut other = Averager::new(&vs, AveragerConfig::swa()).unwrap();
    other.update(&vs).unwrap();
    assert_refused_and_intact(&cut, &mut other, "truncated");
}

#[test]
fn corrupted_checkpoint_is_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.safetensors");
    let (vs, _) = saved_averager(&path);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 37] ^= 0x5a; // flip bits in the tensor data
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, &bytes).unwrap();
    let mut other = Averager::new(&vs, AveragerConfig::swa()).unwrap();
    other.update(&vs).unwrap();
    assert_refused_and_intact(&bad, &mut other, "corrupted");
    std::fs::write(&bad, b"definitely not a checkpoint").unwrap();
    assert_refused_and_intact(&bad, &mut other, "safetensors");
}

#[test]
fn a_failed_save_leaves_the_previous_checkpoint_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.safetensors");
    let (vs, avg) = saved_averager(&path);
    let good = std::fs::read(&path).unwrap();
    // Saving into a folder that does not exist fails before touching anything.
    assert!(avg.save(dir.path().join("missing/b.safetensors")).is_err());
    // A later save replaces the file whole (no temp file left behind).
    set_step(&vs, 9);
    let mut avg2 = Averager::new(&vs, AveragerConfig::swa()).unwrap();
    avg2.update(&vs).unwrap();
    avg2.save(&path).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    assert_ne!(std::fs::read(&path).unwrap(), good);
    let mut back = Averager::new(&vs, AveragerConfig::swa()).unwrap();
    back.load(&path).unwrap();
    assert!(back
        .averaged("p00")
        .unwrap()
        .equal(&avg2.averaged("p00").unwrap()));
}

#[test]
fn a_checkpoint_for_another_model_or_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.safetensors");
    saved_averager(&path);
    // Other shape.
    let vs = var_store(&[vec![16, 15]], Kind::Float, true);
    let err = Averager::new(&vs, AveragerConfig::swa())
        .unwrap()
        .load(&path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("shape") && err.contains("[16, 15]") && err.contains("p00"),
        "{err}"
    );
    // Other config.
    let vs = var_store(&[vec![16, 16]], Kind::Float, true);
    let err = Averager::new(&vs, AveragerConfig::ema(0.9))
        .unwrap()
        .load(&path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("configuration"), "{err}");
}
