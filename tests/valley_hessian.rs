//! `probe --direction hessian`: top-k Hessian eigenpairs by power iteration on Hessian-vector
//! products and Hutchinson's trace, against a closed-form quadratic and against PyTorch's
//! `torch.autograd.functional.hessian` on a tiny network.
use super::valley_support::{json, probe_ok, run_python};
use tch::{Kind, Tensor};

/// `quad.pt`: output `√c ⊙ w` per example, MSE against 0, so `L = ¼ Σ c_j w_j²` and
/// `H = diag(c/2) = diag(2, 0.5, 0.125, 4.5)`. `tiny.pt`: a float64 MLP whose full Hessian PyTorch
/// computes here (parameters flattened in sorted-name order, as the detector orders them).
const MODELS: &str = r#"
import sys, json, torch
from safetensors.torch import save_file
out = sys.argv[1]
torch.manual_seed(0)
class Quad(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([0.3, -0.2, 0.5, 0.1], dtype=torch.float64))
    def forward(self, x):
        c = torch.tensor([4.0, 1.0, 0.25, 9.0], dtype=torch.float64)
        return (self.w * c.sqrt()).unsqueeze(0).expand(x.shape[0], 4) + 0.0 * x[:, :1]
torch.jit.save(torch.jit.script(Quad()), out + "/quad.pt")
save_file({"inputs": torch.randn(20, 1, dtype=torch.float64),
           "targets": torch.zeros(20, 4, dtype=torch.float64)}, out + "/quad.safetensors")

net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double().eval()
x, y = torch.randn(50, 3, dtype=torch.float64), torch.randint(0, 2, (50,))
torch.jit.save(torch.jit.script(net), out + "/tiny.pt")
save_file({"inputs": x, "targets": y}, out + "/tiny.safetensors")
names = sorted(n for n, _ in net.named_parameters())
params = dict(net.named_parameters())
shapes = [params[n].shape for n in names]
flat = torch.cat([params[n].detach().reshape(-1) for n in names])
def loss(v):
    ps, i = {}, 0
    for n, s in zip(names, shapes):
        k = s.numel(); ps[n] = v[i:i + k].reshape(s); i += k
    return torch.nn.functional.cross_entropy(torch.func.functional_call(net, ps, (x,)), y)
H = torch.autograd.functional.hessian(loss, flat)
vals, vecs = torch.linalg.eigh(H)
order = torch.argsort(vals.abs(), descending=True)
json.dump({"eigenvalues": vals[order[:2]].tolist(), "v0": vecs[:, order[0]].tolist(),
           "trace": torch.trace(H).item(), "names": names}, open(out + "/oracle.json", "w"))
"#;

fn run(d: &std::path::Path, model: &str, data: &str, loss: &str, samples: &str, out: &str) {
    probe_ok(
        d,
        &[
            "--model",
            model,
            "--data",
            data,
            "--loss",
            loss,
            "--direction",
            "hessian",
            "--count",
            "2",
            "--hessian-iterations",
            "3000",
            "--hessian-tolerance",
            "1e-12",
            "--trace-samples",
            samples,
            "--points",
            "5",
            "--bn",
            "stale",
            "--bootstrap",
            "0",
            "--json",
            out,
        ],
    );
}

fn flat(d: &std::path::Path, file: &str, index: usize, names: &[&str]) -> Vec<f64> {
    let all = Tensor::read_safetensors(d.join(file)).unwrap();
    let mut v = Vec::new();
    for n in names {
        let t = &all
            .iter()
            .find(|(k, _)| *k == format!("d{index}/{n}"))
            .unwrap()
            .1;
        v.extend(Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap());
    }
    v
}

#[test]
fn hessian_directions_match_closed_form_and_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python(d, MODELS);

    // Closed form: λ = 4.5 (e₃) then 2 (e₀); a diagonal H makes every Rademacher zᵀHz = tr H.
    run(d, "quad.pt", "quad.safetensors", "mse", "5", "quad.json");
    let q = json(d, "quad.json");
    let h = &q["hessian"];
    let ev: Vec<f64> = h["eigenvalues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(
        (ev[0] - 4.5).abs() < 1e-8 && (ev[1] - 2.0).abs() < 1e-8,
        "{ev:?}"
    );
    let trace = h["trace"]["trace"].as_f64().unwrap();
    assert!((trace - 7.125).abs() < 1e-10, "{trace}");
    for (i, axis) in [(0, 3), (1, 0)] {
        let v = flat(d, "quad.directions.safetensors", i, &["w"]);
        assert!((v[axis].abs() - 1.0).abs() < 1e-6, "eigenvector {i}: {v:?}");
    }
    assert_eq!(q["directions"][0]["kind"], "hessian");
    // Along e₃ the quadratic is symmetric: the detector must not call it asymmetric.
    assert_ne!(q["directions"][0]["class"], "asymmetric");

    // A tiny network against torch.autograd.functional.hessian.
    run(
        d,
        "tiny.pt",
        "tiny.safetensors",
        "cross-entropy",
        "200",
        "tiny.json",
    );
    let o = json(d, "oracle.json");
    let t = json(d, "tiny.json");
    let want: Vec<f64> = o["eigenvalues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let got: Vec<f64> = t["hessian"]["eigenvalues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for (g, w) in got.iter().zip(&want) {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs().max(1e-3),
            "{got:?} vs {want:?}"
        );
    }
    let names: Vec<&str> = o["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let v0 = flat(d, "tiny.directions.safetensors", 0, &names);
    let w0: Vec<f64> = o["v0"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let cos: f64 = v0.iter().zip(&w0).map(|(a, b)| a * b).sum();
    assert!(cos.abs() > 0.999, "|cos| = {}", cos.abs());
    // Hutchinson: within 4 reported standard errors of PyTorch's exact trace.
    let (est, se) = (
        t["hessian"]["trace"]["trace"].as_f64().unwrap(),
        t["hessian"]["trace"]["std_error"].as_f64().unwrap(),
    );
    let exact = o["trace"].as_f64().unwrap();
    assert!(
        se > 0.0 && (est - exact).abs() <= 4.0 * se,
        "{est} ± {se} vs {exact}"
    );
}
