//! BatchNorm that cannot fool the detector: traced models whose BatchNorm cannot be re-estimated
//! are refused under `--bn full` with the layer named; unused layers can be excluded; dropout
//! does not make re-estimation nondeterministic (common random numbers per grid point).
use super::valley_support::{json, losses, probe_fails, probe_ok, run_python};
use tch::Tensor;

const MODELS: &str = r#"
import sys, torch
from safetensors.torch import save_file
out = sys.argv[1]
torch.manual_seed(0)
x, y = torch.randn(120, 5), torch.randint(0, 3, (120,))
save_file({"inputs": x, "targets": y}, out + "/data.safetensors")
def mlp():
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                               torch.nn.Linear(8, 3))
net = mlp()
torch.jit.save(torch.jit.trace(net.train(), x), out + "/train_traced.pt")
torch.jit.save(torch.jit.trace(net.eval(), x), out + "/eval_traced.pt")
torch.jit.save(torch.jit.script(net.eval()), out + "/scripted.pt")

class WithUnused(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net
        self.spare = torch.nn.BatchNorm1d(4, affine=False)  # never called
    def forward(self, x):
        return self.net(x)
class Plain(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net
    def forward(self, x):
        return self.net(x)
torch.jit.save(torch.jit.script(WithUnused(net).eval()), out + "/unused.pt")
torch.jit.save(torch.jit.script(Plain(net).eval()), out + "/plain.pt")

drop = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Dropout(0.5), torch.nn.BatchNorm1d(8),
                           torch.nn.ReLU(), torch.nn.Linear(8, 3))
torch.jit.save(torch.jit.script(drop.eval()), out + "/dropout.pt")
"#;

fn args<'a>(model: &'a str, json: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "--model",
        model,
        "--data",
        "data.safetensors",
        "--points",
        "5",
        "--bootstrap",
        "0",
        "--batch",
        "40",
        "--json",
        json,
    ];
    v.extend_from_slice(extra);
    v
}

/// Traced in train mode or in eval mode: `--bn full` refused, naming the layer (`1`) and the
/// way out; `--bn stale` still runs. The scripted twin passes, so the check is not blanket.
#[test]
fn traced_batch_norm_is_refused_with_the_layer_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python(d, MODELS);
    probe_fails(
        d,
        &args(
            "train_traced.pt",
            "t.json",
            &["--bn", "full", "--count", "1"],
        ),
        &[
            "`1`",
            "batch statistics even in eval mode",
            "torch.jit.script",
        ],
    );
    probe_fails(
        d,
        &args(
            "eval_traced.pt",
            "e.json",
            &["--bn", "full", "--count", "1"],
        ),
        &["`1`", "never updates its running statistics", "--bn stale"],
    );
    probe_fails(
        d,
        &args("eval_traced.pt", "e.json", &["--bn", "k=1", "--count", "1"]),
        &["`1`"],
    );
    let stale = probe_ok(
        d,
        &args(
            "eval_traced.pt",
            "e.json",
            &["--bn", "stale", "--count", "1"],
        ),
    );
    assert!(!String::from_utf8_lossy(&stale.stderr).contains("warning: BatchNorm"));
    // Under --bn stale a train-mode trace runs, with a warning naming the layer.
    let stale = probe_ok(
        d,
        &args(
            "train_traced.pt",
            "t.json",
            &["--bn", "stale", "--count", "1"],
        ),
    );
    let err = String::from_utf8_lossy(&stale.stderr);
    assert!(err.contains("warning: BatchNorm layer `1`"), "{err}");
    probe_ok(
        d,
        &args("scripted.pt", "s.json", &["--bn", "full", "--count", "1"]),
    );
}

/// A BatchNorm layer that forward never calls: refused with its name and `--bn-exclude`;
/// excluded, the profiles equal those of the same network without it (same parameters, same
/// seeds). A name that is no BatchNorm layer is refused.
#[test]
fn unused_batch_norm_can_be_excluded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python(d, MODELS);
    probe_fails(
        d,
        &args("unused.pt", "u.json", &["--count", "2"]),
        &["`spare`", "not used by forward", "--bn-exclude"],
    );
    probe_ok(
        d,
        &args(
            "unused.pt",
            "u.json",
            &["--count", "2", "--bn-exclude", "spare"],
        ),
    );
    probe_ok(d, &args("plain.pt", "p.json", &["--count", "2"]));
    let (u, p) = (json(d, "u.json"), json(d, "p.json"));
    assert_eq!(u["bn"], "full");
    for i in 0..2 {
        assert_eq!(losses(&u, i), losses(&p, i), "direction {i}");
    }
    probe_fails(
        d,
        &args(
            "unused.pt",
            "u.json",
            &["--count", "1", "--bn-exclude", "net.7"],
        ),
        &["bn-exclude", "net.7", "spare"],
    );
}

/// Dropout before BatchNorm under `--bn full`: two identical runs write identical JSON, and two
/// copies of one direction in one run give identical profiles (without common random numbers
/// the second copy would see other dropout masks).
#[test]
fn dropout_reestimation_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python(d, MODELS);
    let run = |name: &str| {
        probe_ok(
            d,
            &args("dropout.pt", name, &["--count", "2", "--bn", "full"]),
        );
        std::fs::read(d.join(name)).unwrap()
    };
    let (a, b) = (run("a.json"), run("b.json"));
    let strip = |v: &[u8]| {
        String::from_utf8_lossy(v)
            .replace("b.json", "a.json")
            .replace("b.directions", "a.directions")
    };
    assert_eq!(strip(&a), strip(&b));

    let saved = Tensor::read_safetensors(d.join("a.directions.safetensors")).unwrap();
    let mut twice: Vec<(String, Tensor)> = Vec::new();
    for (n, t) in &saved {
        if let Some(p) = n.strip_prefix("d0/") {
            twice.push((format!("d0/{p}"), t.copy()));
            twice.push((format!("d1/{p}"), t.copy()));
        }
    }
    Tensor::write_safetensors(&twice, d.join("twice.safetensors")).unwrap();
    probe_ok(
        d,
        &args(
            "dropout.pt",
            "t.json",
            &["--directions", "twice.safetensors", "--bn", "full"],
        ),
    );
    let t = json(d, "t.json");
    assert_eq!(losses(&t, 0), losses(&t, 1));
    assert_eq!(losses(&t, 0), losses(&json(d, "a.json"), 0));
}
