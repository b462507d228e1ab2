//! The flat-side solution `w̃ = w̄ + β(w̄ − w)` computed twice on the same tensors: by the Rust
//! `Averager::write_biased` and by the Python `asymvalley.bias_toward_flat` (the installed
//! package, run as a child process). Each is also held to the formula evaluated in float64 here,
//! so a wrong sign of β, a swapped anchor, or a bias taken from the model instead of the average
//! fails on one side or both.
use crate::common::{randomize, var_store};
use crate::valley_support::python;
use asymvalley::average::{Averager, AveragerConfig};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use tch::{Kind, Tensor};

const SCRIPT: &str = r#"
import sys
import torch
from safetensors.torch import load_file, save_file
import asymvalley

folder, beta = sys.argv[1], float(sys.argv[2])
average = load_file(f"{folder}/average.safetensors")
anchor = load_file(f"{folder}/anchor.safetensors")
biased = asymvalley.bias_toward_flat(average, anchor, beta)
save_file({k: v.contiguous() for k, v in biased.items()}, f"{folder}/python.safetensors")
"#;

/// Runs the Python `source` (written to `dir`) with `args`, in `dir`; asserts success and returns
/// its standard output.
fn run_script(dir: &Path, source: &str, args: &[String]) -> String {
    let script = dir.join("script.py");
    std::fs::write(&script, source).unwrap();
    let out = Command::new(python())
        .arg(&script)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Largest |a − b| / (1 + |reference|) over the elements.
fn relative_gap(a: &Tensor, b: &Tensor, reference: &Tensor) -> f64 {
    let a = a.to_kind(Kind::Double);
    let b = b.to_kind(Kind::Double);
    let r = reference.to_kind(Kind::Double);
    ((&a - &b).abs() / (r.abs() + 1.0)).max().double_value(&[])
}

fn check(kind: Kind, beta: f64, tolerance: f64) {
    let dir = tempfile::tempdir().unwrap();
    let vs = var_store(&[vec![7], vec![3, 4], vec![2, 3, 5]], kind, false);
    let mut averager = Averager::new(&vs, AveragerConfig::swa()).unwrap();
    for _ in 0..5 {
        randomize(&vs);
        averager.update(&vs).unwrap();
    }
    // The last SGD iterate, in the model's dtype (`randomize` returns float64 copies, and a
    // float64 anchor of a float32 average is refused by the one dtype policy).
    let anchor: Vec<(String, Tensor)> = randomize(&vs)
        .into_iter()
        .map(|(n, t)| (n, t.to_kind(kind)))
        .collect();
    let average: Vec<(String, Tensor)> = anchor
        .iter()
        .map(|(n, _)| (n.clone(), averager.averaged(n).unwrap().copy()))
        .collect();
    Tensor::write_safetensors(&average, dir.path().join("average.safetensors")).unwrap();
    Tensor::write_safetensors(&anchor, dir.path().join("anchor.safetensors")).unwrap();

    averager.write_biased(&vs, beta).unwrap();
    let rust: HashMap<String, Tensor> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.detach().copy()))
        .collect();

    run_script(
        dir.path(),
        SCRIPT,
        &[dir.path().display().to_string(), beta.to_string()],
    );
    let python: HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.path().join("python.safetensors"))
            .unwrap()
            .into_iter()
            .collect();

    assert_eq!(python.len(), average.len());
    for ((name, avg), (_, w)) in average.iter().zip(&anchor) {
        let (a, w) = (avg.to_kind(Kind::Double), w.to_kind(Kind::Double));
        let formula = &a + (&a - &w) * beta;
        let (r, p) = (&rust[name], &python[name]);
        assert_eq!(r.kind(), kind, "{name}: Rust wrote another dtype");
        assert_eq!(p.kind(), kind, "{name}: Python returned another dtype");
        assert!(
            relative_gap(r, &formula, &formula) < tolerance,
            "{name}: Rust off the formula"
        );
        assert!(
            relative_gap(p, &formula, &formula) < tolerance,
            "{name}: Python off the formula"
        );
        assert!(
            relative_gap(r, p, &formula) < tolerance,
            "{name}: Rust and Python differ"
        );
        // Not vacuous: with β > 0 the solution is away from both the average and the anchor.
        assert!(relative_gap(r, &a, &a) > 1e-3 && relative_gap(r, &w, &w) > 1e-3);
    }
}

#[test]
fn python_bias_toward_flat_equals_rust_write_biased_float32() {
    // Both compute in the average's dtype; a few float32 rounding steps of |w̄| + β|w̄ − w|.
    check(Kind::Float, 0.7, 1e-6);
}

#[test]
fn python_bias_toward_flat_equals_rust_write_biased_float64() {
    check(Kind::Double, 2.5, 1e-13);
}

const REFUSAL_SCRIPT: &str = r#"
import sys
import torch
import asymvalley

verdicts = []
for text in sys.argv[1:]:
    beta = float(text)
    avg = {"w": torch.tensor([1.0, 2.0])}
    anchor = {"w": torch.tensor([0.5, 1.0])}
    try:
        asymvalley.bias_toward_flat(avg, anchor, beta)
        verdicts.append("accepted")
    except (ValueError, RuntimeError):
        verdicts.append("refused")
print(" ".join(verdicts))
"#;

/// The rule both sides document for a float32 average: β = 0, or β in the normal float32
/// range [2^-126, f32::MAX]; negative and non-finite β are refused everywhere.
fn same_beta_rule(beta: f64) -> bool {
    beta == 0.0 || (f64::from(f32::MIN_POSITIVE)..=f64::from(f32::MAX)).contains(&beta)
}

#[test]
fn rust_and_python_accept_and_refuse_the_same_beta() {
    let betas = [
        0.0,
        1e-40,
        f64::from(f32::MIN_POSITIVE),
        f64::from(f32::MIN_POSITIVE) * 0.5,
        0.5,
        3.0e38,
        f64::from(f32::MAX),
        1e39,
        -0.5,
        f64::INFINITY,
    ];
    let vs = var_store(&[vec![2]], Kind::Float, false);
    let mut averager = Averager::new(&vs, AveragerConfig::swa()).unwrap();
    averager.update(&vs).unwrap();
    let rust: Vec<&str> = betas
        .iter()
        .map(|&b| match averager.write_biased(&vs, b) {
            Ok(()) => "accepted",
            Err(_) => "refused",
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = betas.iter().map(|b| format!("{b:e}")).collect();
    let stdout = run_script(dir.path(), REFUSAL_SCRIPT, &args);
    let python: Vec<&str> = stdout.split_whitespace().collect();
    let rule: Vec<&str> = betas
        .iter()
        .map(|&b| {
            if same_beta_rule(b) {
                "accepted"
            } else {
                "refused"
            }
        })
        .collect();
    assert_eq!(rust, rule, "Rust against the stated rule, betas {betas:?}");
    assert_eq!(
        python, rule,
        "Python against the stated rule, betas {betas:?}"
    );
}
