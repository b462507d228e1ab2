//! Helpers for the probe CLI tests: models saved by a Python script, the CLI run in a folder,
//! its JSON report read back.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The project's Python (`make install` put torch and safetensors there).
pub fn python() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join(".venv/bin/python")
}

/// Runs `script` (Python source) with `dir` as its only argument; TorchScript reads a class's
/// source with `inspect`, so the script is written to a file rather than passed with `-c`.
pub fn run_python(dir: &Path, script: &str) {
    let file = dir.join("make_models.py");
    std::fs::write(&file, script).unwrap();
    let out = Command::new(python()).arg(&file).arg(dir).output().unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `asymvalley probe --quiet ARGS` in `dir`.
pub fn probe_cli(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_asymvalley"))
        .arg("probe")
        .arg("--quiet")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Runs the probe and asserts success.
pub fn probe_ok(dir: &Path, args: &[&str]) -> Output {
    let out = probe_cli(dir, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs the probe, asserts a clean failure whose message contains every needle.
pub fn probe_fails(dir: &Path, args: &[&str], needles: &[&str]) -> String {
    let out = probe_cli(dir, args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: `{n}` not in: {err}");
    }
    err
}

/// The JSON report at `dir/name`.
pub fn json(dir: &Path, name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap()
}

/// `directions[i].profile.loss` of a report.
pub fn losses(report: &serde_json::Value, i: usize) -> Vec<f64> {
    report["directions"][i]["profile"]["loss"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}
