//! `probe --surface`: the 2-D surface `L(w + a·d1 + b·d2)` against PyTorch loading the shifted
//! weights into the model and evaluating it (official `bn_update` for `--bn full`), and its row
//! b = 0 against the CLI's own 1-D profile along d1.
use super::valley_support::{
    json, losses, probe_fails, probe_ok, run_python, two_checkpoints_py, BN_UPDATE_PY,
};

/// PyTorch's own loss at every point of each surface report named in argv[2:]: A's state dict,
/// parameters set to `w + a·d1 + b·d2` from the saved directions (`d0/…`, `d1/…`), BatchNorm
/// as the report's mode says (stale: A's buffers; full: the official `bn_update`).
const ORACLE: &str = r#"
import sys, json, torch
from safetensors.torch import load_file
out = sys.argv[1]
data = load_file(out + "/data.safetensors"); x, y = data["inputs"], data["targets"]
def make():
    return torch.nn.Sequential(torch.nn.Linear(5, 12), torch.nn.BatchNorm1d(12), torch.nn.ReLU(),
                               torch.nn.Linear(12, 3))
"#;

/// The oracle's loop over the reports (after [`ORACLE`] and `bn_update`).
const ORACLE_LOOP: &str = r#"
res = {}
for name in json.load(open(out + "/reports.json")):
    r = json.load(open(out + "/" + name))
    dirs = load_file(out + "/" + name.replace(".json", ".directions.safetensors"))
    A = load_file(out + "/a.safetensors")
    s = r["surface"]
    grid = []
    for bj in s["b"]:
        row = []
        for ai in s["a"]:
            m = make(); m.load_state_dict(A)
            with torch.no_grad():
                for k, p in m.named_parameters():
                    p.copy_((p.double() + ai * dirs["d0/" + k].double() + bj * dirs["d1/" + k].double()).float())
            m.eval()
            if r["bn"] == "full":
                bn_update(m, [x])
            with torch.no_grad():
                row.append(torch.nn.functional.cross_entropy(m(x), y).item())
        grid.append(row)
    d0 = torch.cat([dirs["d0/" + k].double().flatten() for k, _ in make().named_parameters()])
    d1 = torch.cat([dirs["d1/" + k].double().flatten() for k, _ in make().named_parameters()])
    res[name] = {"loss": grid, "dot": (d0 @ d1).item(), "n0": d0.norm().item(), "n1": d1.norm().item()}
json.dump(res, open(out + "/oracle.json", "w"))
"#;

fn matrix(v: &serde_json::Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn axis(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Every grid point of three surfaces (random directions stale and full, the A→B line with a
/// random second axis) equals PyTorch's direct evaluation; the line's d2 is orthogonal to B − A
/// and as long; A and B are marked at (0, 0) and (1, 0); and the random surface's row b = 0
/// equals the 1-D profile along d1 bitwise. A bug in the b·d2 term, the axes' order (rows per b),
/// the BatchNorm mode or the orthogonalization fails one of them.
#[test]
fn surface_matches_direct_evaluation_and_the_profile() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python(d, &two_checkpoints_py(1, 12, 150));
    let common = [
        "--model",
        "mlp.pt",
        "--data",
        "data.safetensors",
        "--batch",
        "150",
        "--surface",
        "--grid",
        "5",
        "--radius",
        "0.8",
        "--direction",
        "gaussian",
        "--seed",
        "3",
    ];
    for mode in ["stale", "full"] {
        let name = format!("{mode}.json");
        let svg = format!("{mode}.svg");
        let mut a = common.to_vec();
        a.extend(["--bn", mode, "--json", &name, "--svg", &svg]);
        probe_ok(d, &a);
        let svg = std::fs::read_to_string(d.join(&svg)).unwrap();
        assert!(
            svg.contains("<rect") && svg.contains("<polyline"),
            "{svg:.300}"
        );
    }
    let mut a = common.to_vec();
    a.truncate(6);
    a.extend([
        "--surface",
        "--grid",
        "3",
        "--radius",
        "0.5",
        "--between",
        "a.safetensors",
        "b.safetensors",
        "--distances",
        "1",
        "--division",
        "2",
        "--bn",
        "full",
        "--save-directions",
        "line.directions.safetensors",
        "--json",
        "line.json",
        "--svg",
        "line.svg",
    ]);
    probe_ok(d, &a);
    std::fs::write(
        d.join("reports.json"),
        r#"["stale.json", "full.json", "line.json"]"#,
    )
    .unwrap();
    run_python(d, &format!("{ORACLE}{BN_UPDATE_PY}{ORACLE_LOOP}"));
    let oracle = json(d, "oracle.json");
    for name in ["stale.json", "full.json", "line.json"] {
        let r = json(d, name);
        let got = matrix(&r["surface"]["loss"]);
        let want = matrix(&oracle[name]["loss"]);
        assert_eq!(got.len(), want.len(), "{name}: rows");
        for (j, (g, w)) in got.iter().zip(&want).enumerate() {
            for (i, (g, w)) in g.iter().zip(w).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                    "{name} (a {i}, b {j}): CLI {g} vs PyTorch {w}"
                );
            }
        }
    }
    // Full and stale really differ (the re-estimation happened).
    let (s, f) = (json(d, "stale.json"), json(d, "full.json"));
    let (s, f) = (matrix(&s["surface"]["loss"]), matrix(&f["surface"]["loss"]));
    assert!(s
        .iter()
        .flatten()
        .zip(f.iter().flatten())
        .any(|(a, b)| (a - b).abs() > 1e-3));

    let line = json(d, "line.json");
    assert_eq!(axis(&line["surface"]["a"]), vec![-0.5, 0.0, 0.5, 1.0, 1.5]);
    assert_eq!(axis(&line["surface"]["b"]), vec![-0.5, 0.0, 0.5]);
    assert_eq!(line["points"][0]["label"], "A: a");
    assert_eq!(
        (
            line["points"][1]["a"].as_f64(),
            line["points"][1]["b"].as_f64()
        ),
        (Some(1.0), Some(0.0))
    );
    assert_eq!(line["directions"][0]["kind"], "line");
    let o = &oracle["line.json"];
    let (dot, n0, n1) = (
        o["dot"].as_f64().unwrap(),
        o["n0"].as_f64().unwrap(),
        o["n1"].as_f64().unwrap(),
    );
    assert!(
        dot.abs() < 1e-5 * n0 * n1,
        "d2 not orthogonal to the line: {dot}"
    );
    assert!((n1 / n0 - 1.0).abs() < 1e-5, "d2 norm {n1} vs line {n0}");

    // The 1-D profile along the full surface's d1 is its row b = 0 (written identically).
    let mut a = common.to_vec();
    a.truncate(6);
    a.extend([
        "--directions",
        "full.directions.safetensors",
        "--count",
        "1",
        "--points",
        "5",
        "--radius",
        "0.8",
        "--bn",
        "full",
        "--seed",
        "3",
        "--bootstrap",
        "0",
        "--json",
        "profile.json",
    ]);
    probe_ok(d, &a);
    let row = &f[2];
    assert_eq!(&losses(&json(d, "profile.json"), 0), row);

    // Bad input is named.
    let mut a = common.to_vec();
    a.extend(["--count", "3", "--json", "bad.json"]);
    probe_fails(d, &a, &["count", "3", "2 with --surface"]);
}
