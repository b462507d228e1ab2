//! `probe --test-data`: the shift scale from train vs held-out profiles, against its closed form.
use super::valley_support::{json, probe_ok, run_python};
use tch::{Kind, Tensor};

/// `out = w₀ + w₁ − x`, MSE against 0: along a direction d, `L(t) = (t·s − x̄)² + var(x)` with
/// `s = d₀ + d₁`. Training data has x̄ = 0, held-out x̄ = 0.2, so `L_test(t) = L_train(t + δ) + v`
/// with δ = −0.2/s exactly. A U(0,1) unit direction has s ∈ [1, √2], so every δ is negative.
const MODELS: &str = r#"
import sys, torch
from safetensors.torch import save_file
out = sys.argv[1]
torch.manual_seed(0)
class Line(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))
    def forward(self, x):
        return (self.w[0] + self.w[1]) - x[:, :1]
torch.jit.save(torch.jit.script(Line()), out + "/line.pt")
def centred(n):
    x = torch.randn(n, 1, dtype=torch.float64)
    return (x - x.mean()).float()
save_file({"inputs": centred(200), "targets": torch.zeros(200, 1)}, out + "/train.safetensors")
save_file({"inputs": centred(150) + 0.2, "targets": torch.zeros(150, 1)}, out + "/test.safetensors")
"#;

#[test]
fn shift_scale_from_held_out_profiles_matches_closed_form() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python(d, MODELS);
    let base = [
        "--model",
        "line.pt",
        "--data",
        "train.safetensors",
        "--test-data",
        "test.safetensors",
        "--loss",
        "mse",
        "--count",
        "6",
        "--points",
        "41",
        "--radius",
        "1",
        "--bootstrap",
        "0",
    ];
    let mut a = base.to_vec();
    a.extend(["--json", "s.json"]);
    probe_ok(d, &a);
    let r = json(d, "s.json");
    let dirs = Tensor::read_safetensors(d.join("s.directions.safetensors")).unwrap();
    let mut truth = Vec::new();
    for i in 0..6 {
        let t = &dirs
            .iter()
            .find(|(n, _)| *n == format!("d{i}/w"))
            .unwrap()
            .1;
        let s = f64::try_from(t.sum(Kind::Double)).unwrap();
        truth.push(-0.2 / s);
    }
    let shift = &r["shift"];
    let got: Vec<f64> = shift["shifts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    // Resolution: the search step is 1/20 of the grid step (0.05), plus linear interpolation
    // of the quadratic training profile.
    for (i, (g, t)) in got.iter().zip(&truth).enumerate() {
        assert!((g - t).abs() < 0.01, "direction {i}: δ {g} vs {t}");
        assert_eq!(r["directions"][i]["shift"].as_f64(), Some(*g));
    }
    let rms = (truth.iter().map(|t| t * t).sum::<f64>() / 6.0).sqrt();
    let scale = shift["scale"].as_f64().unwrap();
    assert!((scale - rms).abs() < 0.01, "{scale} vs {rms}");
    assert_eq!(shift["negative"].as_u64(), Some(6));
    assert_eq!(shift["positive"].as_u64(), Some(0));
    assert!((shift["sign_test_p"].as_f64().unwrap() - 2.0 / 64.0).abs() < 1e-12);
    // c* uses the estimated scale; the held-out profile is reported next to the training one.
    let bias = &r["directions"][0]["bias"];
    assert_eq!(bias["scale"].as_f64(), Some(scale));
    assert_eq!(
        r["directions"][0]["test_profile"]["loss"]
            .as_array()
            .unwrap()
            .len(),
        41
    );

    // An explicit --shift-scale wins for c*; the estimate is still reported.
    let mut b = base.to_vec();
    b.extend(["--shift-scale", "0.3", "--json", "g.json"]);
    probe_ok(d, &b);
    let g = json(d, "g.json");
    assert_eq!(g["directions"][0]["bias"]["scale"].as_f64(), Some(0.3));
    assert_eq!(g["shift"]["scale"].as_f64(), Some(scale));
}
