//! `probe --between A B`: the line between two checkpoints, BatchNorm re-estimated at every point,
//! against PyTorch evaluating the interpolated weights directly with the official `bn_update`.
use super::valley_support::{
    json, losses, probe_fails, probe_ok, run_python, two_checkpoints_py, BN_UPDATE_PY,
};

/// Two checkpoints of one BatchNorm MLP (different weights and running statistics), the data,
/// and PyTorch's own losses along `w_A + t(w_B − w_A)`: stale (A's buffers, eval) and with the
/// official `bn_update` (running stats reset, momentum b/(n+b), one train-mode pass) per point.
const EXTRAS_AND_ORACLE: &str = r#"
sd = {k: v for k, v in a.state_dict().items() if k != "3.bias"}
save_file({k: v.contiguous() for k, v in sd.items()}, out + "/missing.safetensors")
sd = dict(a.state_dict()); sd["4.weight"] = torch.zeros(3)
save_file({k: v.contiguous() for k, v in sd.items()}, out + "/unknown.safetensors")
sd = dict(a.state_dict()); sd["0.weight"] = torch.zeros(5, 16)
save_file({k: v.contiguous() for k, v in sd.items()}, out + "/shape.safetensors")
ts = [(i - 2) / 4 for i in range(2 * 2 + 4 + 1)]
res = {"t": ts, "full": [], "stale": []}
names = [k for k, _ in a.named_parameters()]
pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
for t in ts:
    m = make()
    m.load_state_dict(a.state_dict())
    with torch.no_grad():
        for k, p in m.named_parameters():
            p.copy_(pa[k] + t * (pb[k] - pa[k]))
    m.eval()
    with torch.no_grad():
        res["stale"].append(torch.nn.functional.cross_entropy(m(x), y).item())
    bn_update(m, [x])
    with torch.no_grad():
        res["full"].append(torch.nn.functional.cross_entropy(m(x), y).item())
json.dump(res, open(out + "/oracle.json", "w"))
"#;

/// The whole script: the shared checkpoints, the broken variants, the oracle.
fn models() -> String {
    format!(
        "{}{}{}",
        two_checkpoints_py(0, 16, 200),
        BN_UPDATE_PY,
        EXTRAS_AND_ORACLE
    )
}

fn close(cli: &[f64], torch: &[f64], what: &str) {
    assert_eq!(cli.len(), torch.len(), "{what}");
    for (i, (c, t)) in cli.iter().zip(torch).enumerate() {
        assert!(
            (c - t).abs() <= 1e-5 * t.abs().max(1.0),
            "{what} point {i}: CLI {c} vs PyTorch {t}"
        );
    }
}

/// The CLI's profile along A→B equals PyTorch's at every point (t = −0.5 … 1.5), with BN
/// re-estimated (full) and stale; the two modes differ, so the re-estimation is really done.
#[test]
fn between_matches_direct_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python(d, &models());
    let oracle = json(d, "oracle.json");
    let want = |k: &str| -> Vec<f64> {
        oracle[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let common = [
        "--model",
        "mlp.pt",
        "--data",
        "data.safetensors",
        "--between",
        "a.safetensors",
        "b.safetensors",
        "--distances",
        "2",
        "--division",
        "4",
        "--batch",
        "200",
        "--bootstrap",
        "0",
    ];
    for mode in ["full", "stale"] {
        let name = format!("{mode}.json");
        let mut a = common.to_vec();
        a.extend(["--bn", mode, "--json", name.as_str()]);
        probe_ok(d, &a);
        let r = json(d, &name);
        let offsets: Vec<f64> = r["directions"][0]["profile"]["offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(offsets, want("t"));
        assert_eq!(r["directions"][0]["kind"], "line");
        assert_eq!(r["between"][0], "a.safetensors");
        close(&losses(&r, 0), &want(mode), mode);
    }
    let (f, s) = (want("full"), want("stale"));
    assert!(f.iter().zip(&s).any(|(a, b)| (a - b).abs() > 1e-3));

    for (file, needles) in [
        ("missing.safetensors", vec!["parameter `3.bias` is missing"]),
        (
            "unknown.safetensors",
            vec!["`4.weight`", "names no parameter"],
        ),
        (
            "shape.safetensors",
            vec!["`0.weight`", "[5, 16]", "[16, 5]"],
        ),
        ("nothere.safetensors", vec!["not found"]),
    ] {
        let mut a = common.to_vec();
        a[6] = file;
        a.extend(["--json", "bad.json"]);
        probe_fails(d, &a, &[&needles[..], &[file]].concat());
    }
}
