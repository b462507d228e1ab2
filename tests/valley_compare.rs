//! `probe --direction hessian --compare-random M`: on a valley built so that its sharpest
//! direction is asymmetric and every other direction symmetric, the eigenvector must come out
//! asymmetric, the random directions symmetric, and the verdict "sharp-more-asymmetric"; on the
//! same valley with a symmetric sharpest direction, the verdict must be "inconclusive".
use super::valley_support::{json, probe_fails, probe_ok, run_python};

/// `asym.pt`: n = 100 parameters at w = 0, output `(e^{2 w₀} − 1, w₁, …, w₉₉)` per example, MSE
/// against 0: `L = [(e^{2w₀} − 1)² + Σ_{j≥1} w_j²]/100`. Its Hessian at 0 is `diag(8, 2, …, 2)/100`,
/// so the top eigenvector is e₀, along which `L` rises as e^{4t} for t > 0 and saturates for
/// t < 0 (R(1) ≈ 54, flat side −); a unit random direction has |d₀| ≈ 0.1, and along it the
/// quadratic dominates (R ≈ 1). `sym.pt`: the same with `√8·w₀` as the first output (e₀ still the
/// sharpest, now symmetric).
const MODELS: &str = r#"
import sys, torch
from safetensors.torch import save_file
out = sys.argv[1]
class Valley(torch.nn.Module):
    def __init__(self, asym: bool):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(100, dtype=torch.float64))
        self.asym = asym
    def forward(self, x):
        if self.asym:
            first = torch.exp(2.0 * self.w[:1]) - 1.0
        else:
            first = 8.0 ** 0.5 * self.w[:1]
        v = torch.cat([first, self.w[1:]])
        return v.unsqueeze(0).expand(x.shape[0], 100) + 0.0 * x[:, :1]
torch.jit.save(torch.jit.script(Valley(True)), out + "/asym.pt")
torch.jit.save(torch.jit.script(Valley(False)), out + "/sym.pt")
save_file({"inputs": torch.randn(8, 1, dtype=torch.float64),
           "targets": torch.zeros(8, 100, dtype=torch.float64)}, out + "/data.safetensors")
"#;

fn args<'a>(model: &'a str, json: &'a str) -> Vec<&'a str> {
    vec![
        "--model",
        model,
        "--data",
        "data.safetensors",
        "--loss",
        "mse",
        "--direction",
        "hessian",
        "--count",
        "1",
        "--hessian-iterations",
        "500",
        "--hessian-tolerance",
        "1e-12",
        "--compare-random",
        "20",
        "--points",
        "11",
        "--radius",
        "1",
        "--bn",
        "stale",
        "--bootstrap",
        "20",
        "--json",
        json,
    ]
}

#[test]
fn sharp_asymmetric_direction_is_told_apart_from_symmetric_random_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python(d, MODELS);

    probe_ok(d, &args("asym.pt", "asym.json"));
    let r = json(d, "asym.json");
    let ev = r["hessian"]["eigenvalues"][0].as_f64().unwrap();
    assert!((ev - 0.08).abs() < 1e-6, "top eigenvalue {ev}, want 8/100");
    let dirs = r["directions"].as_array().unwrap();
    assert_eq!(dirs.len(), 21);
    assert_eq!(dirs[0]["kind"], "hessian");
    assert_eq!(dirs[0]["class"], "asymmetric");
    // An eigenvector's sign is arbitrary: the flat side is where w₀ decreases.
    let saved = tch::Tensor::read_safetensors(d.join("asym.directions.safetensors")).unwrap();
    let e0 = &saved.iter().find(|(k, _)| k == "d0/w").unwrap().1;
    let s0 = e0.double_value(&[0]);
    assert!((s0.abs() - 1.0).abs() < 1e-6, "eigenvector not e0: {s0}");
    let sign = s0.signum();
    assert_eq!(dirs[0]["flat_side"].as_f64().unwrap(), -sign);
    let r0 = dirs[0]["rise_ratio"].as_f64().unwrap().powf(sign);
    // Closed form at t = ±1 along +e₀: (e² − 1)² / (e⁻² − 1)².
    let want = ((2f64).exp() - 1.0).powi(2) / ((-2f64).exp() - 1.0).powi(2);
    assert!((r0 / want - 1.0).abs() < 1e-6, "R {r0} vs {want}");
    for x in &dirs[1..] {
        assert_eq!(x["kind"], "gaussian");
        assert!((x["norm"].as_f64().unwrap() - 1.0).abs() < 1e-6);
        assert_ne!(x["class"], "asymmetric", "{}", x["rise_ratio"]);
    }
    let c = &r["comparison"];
    assert_eq!(c["sharp"]["asymmetric"], 1);
    assert_eq!(c["random"]["asymmetric"], 0);
    assert_eq!(c["random"]["directions"], 20);
    // Wilson 95% for 0 of 20: [0, z²/(n + z²)] = [0, 0.1611].
    let hi = c["random"]["fraction_ci"][1].as_f64().unwrap();
    assert!((hi - 0.16113).abs() < 1e-4, "{hi}");
    assert_eq!(c["verdict"], "sharp-more-asymmetric");

    probe_ok(d, &args("sym.pt", "sym.json"));
    let s = json(d, "sym.json");
    assert_ne!(s["directions"][0]["class"], "asymmetric");
    assert_eq!(s["comparison"]["verdict"], "inconclusive");

    let mut bad = args("asym.pt", "bad.json");
    bad[7] = "gaussian";
    probe_fails(d, &bad, &["compare-random", "20", "--direction hessian"]);
}
