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

/// Python that saves two checkpoints A and B of one BatchNorm MLP (`make()`: Linear(5, H) →
/// BatchNorm1d(H) → ReLU → Linear(H, 3)) with different weights and running statistics
/// (`a.safetensors`, `b.safetensors`), the model scripted with A's state (`mlp.pt`), and `n`
/// examples (`data.safetensors`). The script that follows may use `out`, `make`, `a`, `b`, `x`
/// and `y`.
pub fn two_checkpoints_py(seed: u64, hidden: usize, n: usize) -> String {
    format!(
        r#"
import sys, json, torch
from safetensors.torch import save_file, load_file
out = sys.argv[1]
torch.manual_seed({seed})
def make():
    return torch.nn.Sequential(torch.nn.Linear(5, {hidden}), torch.nn.BatchNorm1d({hidden}), torch.nn.ReLU(),
                               torch.nn.Linear({hidden}, 3))
a, b = make(), make()
x, y = torch.randn({n}, 5), torch.randint(0, 3, ({n},))
for m, scale in ((a, 2.0), (b, 0.5)):
    m.train(); m(x * scale + 1.0); m.eval()
save_file({{k: v.contiguous() for k, v in a.state_dict().items()}}, out + "/a.safetensors")
save_file({{k: v.contiguous() for k, v in b.state_dict().items()}}, out + "/b.safetensors")
m = make(); m.load_state_dict(a.state_dict()); m.eval()
torch.jit.save(torch.jit.script(m), out + "/mlp.pt")
save_file({{"inputs": x, "targets": y}}, out + "/data.safetensors")
"#
    )
}

/// Python: the official code's `utils.bn_update`, in effect: every BatchNorm's running statistics
/// reset, then one train-mode pass over `batches` with momentum b/(n + b), so the statistics are
/// the sample-weighted mean over all batches.
pub const BN_UPDATE_PY: &str = r#"
def bn_update(model, batches):
    model.train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.running_mean.zero_(); m.running_var.fill_(1.0)
    n = 0
    with torch.no_grad():
        for xb in batches:
            for m in bns:
                m.momentum = xb.shape[0] / (n + xb.shape[0])
            model(xb); n += xb.shape[0]
    model.eval()
"#;
