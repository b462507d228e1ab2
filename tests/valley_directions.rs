//! `probe --directions F`: an existing file is loaded, checked against the model and never
//! overwritten; a new path receives the drawn directions; `--save-directions` writes explicitly.
use super::valley_support::{json, losses, probe_fails, probe_ok, run_python};
use tch::{Kind, Tensor};

type Named = Vec<(String, Tensor)>;

const MODELS: &str = r#"
import sys, torch
from safetensors.torch import save_file
out = sys.argv[1]
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
torch.jit.save(torch.jit.script(net), out + "/mlp.pt")
x = torch.randn(64, 3)
save_file({"inputs": x, "targets": torch.randn(64, 1)}, out + "/data.safetensors")
"#;

const BASE: &[&str] = &[
    "--model",
    "mlp.pt",
    "--data",
    "data.safetensors",
    "--loss",
    "mse",
    "--points",
    "7",
    "--bn",
    "stale",
    "--bootstrap",
    "0",
];

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = BASE.to_vec();
    v.extend_from_slice(extra);
    v
}

fn read(path: &std::path::Path) -> Vec<(String, Tensor)> {
    let mut v = Tensor::read_safetensors(path).unwrap();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Drawn, saved, reloaded under another seed: the same profiles (a loader that drew afresh
/// would give seed 99's); the file is untouched by the reload; `--save-directions` copies it.
#[test]
fn directions_file_round_trip_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python(d, MODELS);
    probe_ok(
        d,
        &args(&[
            "--count",
            "2",
            "--directions",
            "dirs.safetensors",
            "--json",
            "a.json",
        ]),
    );
    let file = d.join("dirs.safetensors");
    let before = std::fs::read(&file).unwrap();
    let a = json(d, "a.json");
    assert_eq!(a["directions_loaded"], false);
    assert!(!d.join("a.directions.safetensors").exists());

    probe_ok(
        d,
        &args(&[
            "--seed",
            "99",
            "--directions",
            "dirs.safetensors",
            "--save-directions",
            "copy.safetensors",
            "--json",
            "b.json",
        ]),
    );
    let b = json(d, "b.json");
    assert_eq!(b["directions_loaded"], true);
    assert_eq!(b["directions"].as_array().unwrap().len(), 2);
    for i in 0..2 {
        assert_eq!(losses(&a, i), losses(&b, i), "direction {i}");
    }
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "the loaded file was rewritten"
    );
    let (orig, copy) = (read(&file), read(&d.join("copy.safetensors")));
    assert_eq!(orig.len(), copy.len());
    for ((n, t), (m, u)) in orig.iter().zip(&copy) {
        assert_eq!(n, m);
        assert!(t.equal(u), "{n}");
    }

    // A freshly drawn seed-99 probe differs, so the equality above says the file was used.
    probe_ok(
        d,
        &args(&["--seed", "99", "--count", "2", "--json", "c.json"]),
    );
    assert_ne!(losses(&a, 0), losses(&json(d, "c.json"), 0));
    assert!(d.join("c.directions.safetensors").is_file());
}

/// Each kind of mismatch is refused with the offending tensor named; the file is not touched.
#[test]
fn directions_file_mismatches_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python(d, MODELS);
    probe_ok(
        d,
        &args(&[
            "--count",
            "1",
            "--directions",
            "good.safetensors",
            "--json",
            "g.json",
        ]),
    );
    let good = read(&d.join("good.safetensors"));
    let names: Vec<&str> = good.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["d0/0.bias", "d0/0.weight", "d0/2.bias", "d0/2.weight"]
    );
    let write = |name: &str, edit: &dyn Fn(&mut Named)| {
        let mut v: Named = good.iter().map(|(n, t)| (n.clone(), t.copy())).collect();
        edit(&mut v);
        Tensor::write_safetensors(&v, d.join(name)).unwrap();
    };
    write("extra.safetensors", &|v| {
        v.push((
            "d0/1.weight".into(),
            Tensor::zeros([4], (Kind::Float, tch::Device::Cpu)),
        ))
    });
    write("shape.safetensors", &|v| {
        v[1].1 = Tensor::zeros([3, 4], (Kind::Float, tch::Device::Cpu))
    });
    write("dtype.safetensors", &|v| {
        v[2].1 = v[2].1.to_kind(Kind::Double)
    });
    write("missing.safetensors", &|v| {
        drop(v.remove(3));
    });
    write("gap.safetensors", &|v| {
        for (n, _) in v.iter_mut() {
            *n = n.replace("d0/", "d1/");
        }
    });
    // Two problems: the first in name order (0.bias before 2.weight) is the one reported.
    write("two.safetensors", &|v| {
        v[0].1 = Tensor::zeros([5], (Kind::Float, tch::Device::Cpu));
        v[3].1 = Tensor::zeros([2, 2], (Kind::Float, tch::Device::Cpu));
    });
    for (file, needles) in [
        (
            "extra.safetensors",
            vec!["`d0/1.weight`", "names no parameter"],
        ),
        (
            "shape.safetensors",
            vec!["`d0/0.weight`", "shape [3, 4]", "[4, 3]"],
        ),
        ("dtype.safetensors", vec!["`d0/2.bias`", "Double", "Float"]),
        ("missing.safetensors", vec!["`d0/2.weight`", "missing"]),
        ("gap.safetensors", vec!["direction 0 is missing"]),
        ("two.safetensors", vec!["`d0/0.bias`", "shape [5]"]),
    ] {
        let before = std::fs::read(d.join(file)).unwrap();
        let err = probe_fails(
            d,
            &args(&["--directions", file, "--json", "bad.json"]),
            &needles,
        );
        assert!(err.contains(file), "{err}");
        assert_eq!(
            std::fs::read(d.join(file)).unwrap(),
            before,
            "{file} rewritten"
        );
    }
    probe_fails(
        d,
        &args(&[
            "--directions",
            "good.safetensors",
            "--count",
            "3",
            "--json",
            "bad.json",
        ]),
        &["count", "3", "1 to 1"],
    );
}
