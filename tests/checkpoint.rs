//! Checkpoint and resume: an interrupted, saved and resumed run gives a bitwise-identical average;
//! truncated or corrupted files are refused with a clear error and leave everything intact.
use crate::common::{randomize_seeded, var_store};
use asymvalley::average::{Averager, AveragerConfig, EmaConfig, Rule, Warmup};
use asymvalley::Error;
use std::collections::HashMap;
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

/// A small checkpoint: one 2x3 float variable plus the two buffers, SWA after 3 updates.
fn small_checkpoint(dir: &std::path::Path) -> (tch::nn::VarStore, std::path::PathBuf, Vec<u8>) {
    let path = dir.join("small.safetensors");
    let vs = var_store(&[vec![2, 3]], Kind::Float, true);
    let mut avg = Averager::new(
        &vs,
        AveragerConfig {
            average_buffers: true,
            ..AveragerConfig::swa()
        },
    )
    .unwrap();
    for i in 0..3 {
        set_step(&vs, i);
        avg.update(&vs).unwrap();
    }
    avg.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    (vs, path, bytes)
}

/// A loader that already holds state (one update), so a wrongly accepted file would show.
fn loader(vs: &tch::nn::VarStore) -> Averager {
    let mut avg = Averager::new(
        vs,
        AveragerConfig {
            average_buffers: true,
            ..AveragerConfig::swa()
        },
    )
    .unwrap();
    set_step(vs, 77);
    avg.update(vs).unwrap();
    avg
}

fn header_end(bytes: &[u8]) -> usize {
    8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

/// Loads `bytes` from `bad` into `avg` and asserts a `Checkpoint` refusal that changed nothing.
fn assert_bytes_refused(bad: &std::path::Path, bytes: &[u8], avg: &mut Averager, what: &str) {
    std::fs::write(bad, bytes).unwrap();
    let before = (snapshot(avg), avg.steps(), avg.n_averaged());
    match avg.load(bad) {
        Ok(()) => panic!("{what}: a corrupt checkpoint was accepted"),
        Err(e) => assert!(
            matches!(e, Error::Checkpoint { .. } | Error::MissingVariable { .. }),
            "{what}: unexpected error kind: {e}"
        ),
    }
    assert_eq!(
        (avg.steps(), avg.n_averaged()),
        (before.1, before.2),
        "{what}"
    );
    for (a, b) in snapshot(avg).iter().zip(&before.0) {
        assert!(a.equal(b), "{what}: state changed by a refused load");
    }
}

#[test]
fn every_single_bit_flip_of_the_header_and_the_body_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (vs, path, good) = small_checkpoint(dir.path());
    let mut avg = loader(&vs);
    // The untouched file loads (the test would be vacuous otherwise).
    Averager::new(
        &vs,
        AveragerConfig {
            average_buffers: true,
            ..AveragerConfig::swa()
        },
    )
    .unwrap()
    .load(&path)
    .unwrap();
    let bad = dir.path().join("flipped.safetensors");
    let end = header_end(&good);
    // Every bit of the length prefix and the JSON header, and every bit of this small body
    // (the body of a small checkpoint is the sample: 6 + 3 floats and one int64).
    for byte in 0..good.len() {
        for bit in 0..8 {
            let mut bytes = good.clone();
            bytes[byte] ^= 1 << bit;
            let region = if byte < end { "header" } else { "body" };
            assert_bytes_refused(
                &bad,
                &bytes,
                &mut avg,
                &format!("{region} byte {byte} bit {bit}"),
            );
        }
    }
}

#[test]
fn every_truncation_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (vs, _, good) = small_checkpoint(dir.path());
    let mut avg = loader(&vs);
    let bad = dir.path().join("cut.safetensors");
    // Every length of the header, and every length of the body short of the whole file.
    for len in 0..good.len() {
        assert_bytes_refused(&bad, &good[..len], &mut avg, &format!("cut at {len}"));
    }
}

/// Re-signs a checkpoint whose metadata was edited, the way a careful forger would: the
/// checksum is recomputed from the documented canonical stream (written here independently of
/// the library), so only the semantic checks stand between the edit and the averager.
fn forge(good: &[u8], edit: impl Fn(&mut HashMap<String, String>)) -> Vec<u8> {
    use safetensors::tensor::{SafeTensors, TensorView};
    let st = SafeTensors::deserialize(good).unwrap();
    let (_, meta) = SafeTensors::read_metadata(good).unwrap();
    let mut info = meta.metadata().clone().unwrap();
    edit(&mut info);
    let mut keys: Vec<&String> = info.keys().filter(|k| *k != "crc32").collect();
    keys.sort();
    let mut h = crc32fast::Hasher::new();
    for k in keys {
        h.update(format!("{k}\0{}\0", info[k]).as_bytes());
    }
    let mut names: Vec<String> = st.names().into_iter().cloned().collect();
    names.sort();
    let mut views = Vec::new();
    for n in &names {
        let v = st.tensor(n).unwrap();
        h.update(
            format!(
                "{n}\0{:?}\0{:?}\0{}\0",
                v.dtype(),
                v.shape(),
                v.data().len()
            )
            .as_bytes(),
        );
        h.update(v.data());
        views.push((
            n.clone(),
            TensorView::new(v.dtype(), v.shape().to_vec(), v.data()).unwrap(),
        ));
    }
    info.insert("crc32".into(), h.finalize().to_string());
    safetensors::tensor::serialize(views, &Some(info)).unwrap()
}

#[test]
fn edited_metadata_is_refused_unless_resigned_and_sane() {
    let dir = tempfile::tempdir().unwrap();
    let (vs, _, good) = small_checkpoint(dir.path());
    let mut avg = loader(&vs);
    let bad = dir.path().join("edited.safetensors");
    // The forger's canonical stream matches the library's: an unedited re-sign loads.
    std::fs::write(&bad, forge(&good, |_| {})).unwrap();
    loader(&vs).load(&bad).unwrap();
    // A hand edit (same length, no re-sign) of n_averaged is refused by the checksum.
    let end = header_end(&good);
    let text = std::str::from_utf8(&good[8..end]).unwrap();
    assert!(text.contains("\"n_averaged\":\"3\""), "{text}");
    let header = text.replace("\"n_averaged\":\"3\"", "\"n_averaged\":\"0\"");
    let edited = [&good[..8], header.as_bytes(), &good[end..]].concat();
    assert_eq!(edited.len(), good.len());
    assert_bytes_refused(&bad, &edited, &mut avg, "n_averaged edited to 0");
    let msg = avg.load(&bad).unwrap_err().to_string();
    assert!(msg.contains("corrupted"), "{msg}");
    // Re-signed edits that the counters cannot mean: wrap-prone, non-canonical, inconsistent.
    let max = u64::MAX.to_string();
    let cases: Vec<(&str, &str, &str)> = vec![
        ("steps", max.as_str(), "out of range"),
        ("n_averaged", "18446744073709551614", "out of range"),
        ("steps", "9223372036854775808", "out of range"),
        ("steps", "+3", "not a non-negative decimal"),
        ("steps", "03", "not a non-negative decimal"),
        ("steps", "-1", "not a non-negative decimal"),
        ("filled", "True", "`true` or `false`"),
        ("n_averaged", "4", "inconsistent"),
        ("filled", "false", "inconsistent"),
        ("version", "1", "version 1"),
    ];
    for (key, value, needle) in cases {
        let forged = forge(&good, |m| {
            m.insert(key.into(), value.into());
        });
        let what = format!("{key} = {value}");
        assert_bytes_refused(&bad, &forged, &mut avg, &what);
        let msg = avg.load(&bad).unwrap_err().to_string();
        assert!(
            msg.contains(needle) && (msg.contains(key) || key == "filled" || key == "version"),
            "{what}: {msg}"
        );
    }
}

fn temp_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

const SAVE_FOREVER: &str = "ASYMVALLEY_TEST_SAVE_FOREVER";
const BIG: i64 = 1024;

/// Child half of the kill test: saves a 4 MiB averager to `$ASYMVALLEY_TEST_SAVE_FOREVER`
/// until it is killed. Run only by the parent test (ignored, and a no-op without the variable).
#[test]
#[ignore]
fn child_saving_forever() {
    let Ok(dir) = std::env::var(SAVE_FOREVER) else {
        return;
    };
    let vs = var_store(&[vec![BIG, BIG]], Kind::Float, false);
    let mut avg = Averager::new(&vs, AveragerConfig::swa()).unwrap();
    set_step(&vs, 5);
    avg.update(&vs).unwrap();
    let path = std::path::Path::new(&dir).join("big.safetensors");
    loop {
        avg.save(&path).unwrap();
    }
}

#[test]
fn kill_during_save_keeps_the_old_file_and_the_next_save_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.safetensors");
    let vs = var_store(&[vec![BIG, BIG]], Kind::Float, false);
    let mut mine = Averager::new(&vs, AveragerConfig::swa()).unwrap();
    set_step(&vs, 6);
    mine.update(&vs).unwrap();
    mine.save(&path).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut leftovers_seen = 0;
    for _attempt in 0..10 {
        let mut child = std::process::Command::new(&exe)
            .args(["--exact", "checkpoint::child_saving_forever", "--ignored"])
            .env(SAVE_FOREVER, dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait (bounded) until the child is mid-write, then SIGKILL it.
        let start = std::time::Instant::now();
        while temp_files(dir.path()).is_empty() && start.elapsed().as_secs() < 60 {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        if !temp_files(dir.path()).is_empty() {
            leftovers_seen += 1;
        }
        // Whatever the kill interrupted, the target is a whole checkpoint: mine or the child's.
        let mut back = Averager::new(&vs, AveragerConfig::swa()).unwrap();
        back.load(&path).unwrap();
        assert_eq!((back.steps(), back.n_averaged()), (1, 1));
        if leftovers_seen >= 2 {
            break;
        }
    }
    assert!(
        leftovers_seen > 0,
        "no kill landed mid-save in 10 tries: the test did not exercise cleanup"
    );
    // The next save by a live process removes the dead writers' temp files.
    mine.save(&path).unwrap();
    assert_eq!(temp_files(dir.path()), Vec::<String>::new());
    let mut back = Averager::new(&vs, AveragerConfig::swa()).unwrap();
    back.load(&path).unwrap();
    assert!(back
        .averaged("p00")
        .unwrap()
        .equal(&mine.averaged("p00").unwrap()));
}
