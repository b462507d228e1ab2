//! The `filter` direction on tensors with ≤ 1 dim, as Li et al.'s `normalize_direction`:
//! zeroed by default (their `--xignore biasbn`), `d = w` with `--filter-keep-1d`.
use super::valley_support::{json, probe_fails, probe_ok, run_python};
use tch::{Kind, Tensor};

const MODELS: &str = r#"
import sys, torch
from safetensors.torch import save_file
out = sys.argv[1]
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.ReLU(),
                          torch.nn.Linear(4, 2))
with torch.no_grad():
    net[1].weight.uniform_(0.5, 1.5); net[1].bias.uniform_(-1, 1)
net.eval()
torch.jit.save(torch.jit.script(net), out + "/net.pt")
save_file({k: v.contiguous() for k, v in net.state_dict().items()}, out + "/weights.safetensors")
save_file({"inputs": torch.randn(50, 3), "targets": torch.randint(0, 2, (50,))}, out + "/data.safetensors")
class OnlyBias(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.b = torch.nn.Parameter(torch.zeros(2))
    def forward(self, x):
        return x[:, :2] + self.b
torch.jit.save(torch.jit.script(OnlyBias()), out + "/bias.pt")
"#;

fn tensors(path: &std::path::Path) -> Vec<(String, Tensor)> {
    Tensor::read_safetensors(path).unwrap()
}

fn get<'a>(v: &'a [(String, Tensor)], name: &str) -> &'a Tensor {
    &v.iter().find(|(n, _)| n == name).unwrap().1
}

fn row_norms(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(
        t.to_kind(Kind::Double)
            .square()
            .sum_dim_intlist([1i64].as_slice(), false, Kind::Double)
            .sqrt(),
    )
    .unwrap()
}

#[test]
fn filter_direction_zeroes_or_keeps_one_dimensional_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python(d, MODELS);
    let base = [
        "--model",
        "net.pt",
        "--data",
        "data.safetensors",
        "--direction",
        "filter",
        "--count",
        "1",
        "--points",
        "5",
        "--bn",
        "stale",
        "--bootstrap",
        "0",
    ];
    let mut zeroed = base.to_vec();
    zeroed.extend(["--json", "z.json"]);
    probe_ok(d, &zeroed);
    let mut kept = base.to_vec();
    kept.extend(["--filter-keep-1d", "--json", "k.json"]);
    probe_ok(d, &kept);
    let w = tensors(&d.join("weights.safetensors"));
    let z = tensors(&d.join("z.directions.safetensors"));
    let k = tensors(&d.join("k.directions.safetensors"));
    let one_d = ["0.bias", "1.weight", "1.bias", "3.bias"];
    for name in one_d {
        let (dz, dk) = (
            get(&z, &format!("d0/{name}")),
            get(&k, &format!("d0/{name}")),
        );
        assert_eq!(
            f64::try_from(dz.abs().sum(Kind::Double)).unwrap(),
            0.0,
            "{name}"
        );
        assert!(
            dk.equal(get(&w, name)),
            "{name}: kept 1-D tensors are d = w"
        );
    }
    for name in ["0.weight", "3.weight"] {
        let (dz, dk, wt) = (
            get(&z, &format!("d0/{name}")),
            get(&k, &format!("d0/{name}")),
            get(&w, name),
        );
        // The draws for the 2-D tensors do not depend on the option.
        assert!(dz.equal(dk), "{name}");
        // Each filter (row) has its weight row's norm; the direction is not the weight.
        for (a, b) in row_norms(dz).iter().zip(row_norms(wt)) {
            assert!((a - b).abs() <= 1e-5 * b, "{name}: {a} vs {b}");
        }
        assert!(!dz.equal(wt));
    }
    // Entries moved: the 2-D ones only, or all of them.
    let moved = |f: &str| json(d, f)["directions"][0]["moved"].as_i64().unwrap();
    assert_eq!(moved("z.json"), 4 * 3 + 2 * 4);
    assert_eq!(moved("k.json"), 4 * 3 + 2 * 4 + 4 + 4 + 4 + 2);

    probe_fails(
        d,
        &[
            "--model",
            "bias.pt",
            "--data",
            "data.safetensors",
            "--loss",
            "cross-entropy",
            "--direction",
            "filter",
            "--json",
            "b.json",
        ],
        &["filter", "--filter-keep-1d"],
    );
}
