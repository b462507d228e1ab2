//! The study's verdicts do not depend on the floating-point configuration: a reduced study run
//! by the built binary as two child processes, one with the portable kernels on one thread
//! (`ATEN_CPU_CAPABILITY=default`, `--threads 1`) and one with the native kernels on two threads
//! (`--threads 2`, which splits reductions differently), must give the same summary table
//! (claim, k of N, verdict). The digits may differ; the table may not.
use std::path::Path;
use std::process::Command;

/// The reduced study: 3 seeds, short runs (well under a minute each on 2 cores).
const REDUCED: &[&str] = &[
    "--seeds",
    "3",
    "--epochs",
    "10",
    "--after-epochs",
    "6",
    "--division",
    "4",
    "--directions",
    "2",
    "--points",
    "5",
];

fn summary(dir: &Path, env: &[(&str, &str)], threads: &str) -> Vec<(String, u64, u64, String)> {
    let out = dir.join("report");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_asymvalley"));
    cmd.arg("demo")
        .arg("--out")
        .arg(&out)
        .args(REDUCED)
        .args(["--threads", threads]);
    cmd.env_remove("ATEN_CPU_CAPABILITY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let run = cmd.output().unwrap();
    assert!(
        run.status.success(),
        "{env:?}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["claim"].as_str().unwrap().to_string(),
                f["k"].as_u64().unwrap(),
                f["n"].as_u64().unwrap(),
                f["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn verdicts_are_the_same_under_two_floating_point_configurations() {
    let dir = tempfile::tempdir().unwrap();
    let portable = summary(
        &dir.path().join("a"),
        &[("ATEN_CPU_CAPABILITY", "default")],
        "1",
    );
    let native = summary(&dir.path().join("b"), &[], "2");
    assert_eq!(portable.len(), 12);
    assert_eq!(portable, native);
}
