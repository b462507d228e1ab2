//! The asymmetric-valley detector on valleys with known answers: the harness's 1-D valleys
//! embedded in tch models, and a TorchScript model saved from PyTorch and probed through the CLI.
use super::valley_support::{probe_cli, python};
use asymvalley::valley::asymmetry::{analyze, AsymmetryConfig, ValleyClass};
use asymvalley::valley::directions::{Direction, DirectionKind, ParamSubset};
use asymvalley::valley::model::{LossKind, ProbeData, ProbeModel, TchModel};
use asymvalley::valley::profile::{grid_through, profile, BnPlan};
use harness::valley::{PiecewiseQuadratic, Valley1d};
use std::process::Command;
use tch::{nn, Device, Kind, Tensor};

const DIM: i64 = 6;
const LAMBDA: f64 = 0.5;

/// A tch model whose per-example loss is `½a_i(x)x² + ½λ‖P⊥w‖²` with `x = w₀` (the first
/// coordinate), `a_i(x) = a₊·(1 + ε_i)` for x ≥ 0 and `a₋·(1 + η_i)` for x < 0 (ε, η ~ U[−½, ½]
/// per example, carried in the inputs). The population valley along e₀ is `valley` exactly.
struct Synthetic {
    vs: nn::VarStore,
    w: Tensor,
    valley: PiecewiseQuadratic,
    data: ProbeData,
}

impl Synthetic {
    /// `mirror`: the mirrored valley with the per-example noise mirrored too (ε ↔ η).
    fn new(valley: PiecewiseQuadratic, n: i64, seed: i64, mirror: bool) -> Self {
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().zeros("w", &[DIM]);
        let mut noise = Tensor::rand([n, 2], (Kind::Double, Device::Cpu)) - 0.5;
        let valley = if mirror {
            noise = noise.flip([1]);
            valley.mirrored()
        } else {
            valley
        };
        let targets = Tensor::zeros([n, 1], (Kind::Double, Device::Cpu));
        let data = ProbeData::from_tensors(&noise, &targets, 64).unwrap();
        Synthetic {
            vs,
            w,
            valley,
            data,
        }
    }

    fn model(&self) -> TchModel<'_> {
        let (w, v) = (self.w.shallow_clone(), self.valley);
        TchModel::from_closure(&self.vs, move |xs: &Tensor, _train| {
            let x = w.get(0).to_kind(Kind::Double);
            let a = if x.double_value(&[]) >= 0.0 {
                (xs.select(1, 0) + 1.0) * v.a_plus
            } else {
                (xs.select(1, 1) + 1.0) * v.a_minus
            };
            let perp = w
                .narrow(0, 1, DIM - 1)
                .to_kind(Kind::Double)
                .square()
                .sum(Kind::Double)
                * (0.5 * LAMBDA);
            // MSE against 0 of √(loss) is the loss itself.
            Ok((a * 0.5 * &x * &x + perp).sqrt().unsqueeze(1))
        })
    }
}

fn axis_direction(model: &TchModel<'_>) -> Direction {
    let params = model.parameters().unwrap();
    let mut e0 = vec![0f32; DIM as usize];
    e0[0] = 1.0;
    Direction::given(&params, vec![Tensor::from_slice(&e0)], "axis").unwrap()
}

fn probe(s: &Synthetic, d: &Direction) -> asymvalley::valley::Asymmetry {
    let model = s.model();
    let offsets = grid_through(21, 1.0).unwrap();
    let (p, cost) = profile(
        &model,
        d,
        &offsets,
        &[&s.data],
        LossKind::Mse,
        &BnPlan::stale(),
        |_| {},
    )
    .unwrap();
    assert_eq!(cost.eval_forwards, 21 * s.data.batches.len());
    let cfg = AsymmetryConfig {
        bootstrap: 400,
        ..AsymmetryConfig::default()
    };
    analyze(&p[0].offsets, &p[0].loss, Some(&p[0].per_example), &cfg).unwrap()
}

/// Along the valley's axis the detector finds the flat side, an asymmetric class, and an
/// interval that holds the population ratio a₊/a₋; the fit recovers exponent 2.
#[test]
fn detector_finds_flat_side_and_ratio_on_embedded_valley() {
    let s = Synthetic::new(PiecewiseQuadratic::new(1.0, 8.0), 400, 1, false);
    let a = probe(&s, &axis_direction(&s.model()));
    let truth = s.valley.a_plus / s.valley.a_minus;
    let [lo, hi] = a.rise_ratio_ci.unwrap();
    assert!(
        lo <= truth && truth <= hi,
        "truth {truth} outside [{lo}, {hi}]"
    );
    assert!(
        (a.rise_ratio / truth - 1.0).abs() < 0.15,
        "{}",
        a.rise_ratio
    );
    assert_eq!((a.class, a.flat_side), (ValleyClass::Asymmetric, 1));
    let fit = a.fit.unwrap();
    assert!((fit.exponent - 2.0).abs() < 1e-6, "{fit:?}");
    let [flo, fhi] = a.fit_ratio_ci.unwrap();
    assert!(flo <= truth && truth <= fhi);
    // The probe left the model where it was.
    assert_eq!(f64::try_from(s.w.abs().sum(Kind::Double)).unwrap(), 0.0);
}

/// Mirroring the valley flips the flat side and inverts the ratio.
#[test]
fn detector_mirrored_valley_flips_sign() {
    let v = PiecewiseQuadratic::new(1.0, 8.0);
    let (s, m) = (
        Synthetic::new(v, 400, 2, false),
        Synthetic::new(v, 400, 2, true),
    );
    let (a, b) = (
        probe(&s, &axis_direction(&s.model())),
        probe(&m, &axis_direction(&m.model())),
    );
    assert_eq!((a.flat_side, b.flat_side), (1, -1));
    assert!(
        (a.rise_ratio * b.rise_ratio - 1.0).abs() < 1e-9,
        "{} {}",
        a.rise_ratio,
        b.rise_ratio
    );
    let truth = v.mirrored().a_plus / v.mirrored().a_minus;
    let [lo, hi] = b.rise_ratio_ci.unwrap();
    assert!(lo <= truth && truth <= hi);
}

/// A symmetric valley is not called asymmetric, and its interval holds 1.
#[test]
fn detector_symmetric_valley_is_symmetric() {
    let s = Synthetic::new(PiecewiseQuadratic::new(3.0, 3.0), 400, 3, false);
    let a = probe(&s, &axis_direction(&s.model()));
    assert_ne!(a.class, ValleyClass::Asymmetric);
    assert_eq!(a.flat_side, 0);
    let [lo, hi] = a.rise_ratio_ci.unwrap();
    assert!(lo <= 1.0 && 1.0 <= hi, "[{lo}, {hi}]");
}

/// Along a random U(0,1) direction d (d₀ > 0) the true ratio is
/// `(a₊d₀² + λ‖d⊥‖²)/(a₋d₀² + λ‖d⊥‖²)`; the detector's interval holds it.
#[test]
fn detector_random_direction_ratio_within_interval() {
    let s = Synthetic::new(PiecewiseQuadratic::new(0.5, 20.0), 400, 4, false);
    let model = s.model();
    let params = model.parameters().unwrap();
    let d = Direction::random(&params, DirectionKind::Uniform, &ParamSubset::All, 7).unwrap();
    assert!((d.norm - 1.0).abs() < 1e-6);
    let v: Vec<f64> = Vec::<f64>::try_from(d.tensors[0].to_kind(Kind::Double)).unwrap();
    let (d0, perp) = (v[0], v[1..].iter().map(|x| x * x).sum::<f64>());
    let truth =
        (s.valley.a_plus * d0 * d0 + LAMBDA * perp) / (s.valley.a_minus * d0 * d0 + LAMBDA * perp);
    let a = probe(&s, &d);
    let [lo, hi] = a.rise_ratio_ci.unwrap();
    assert!(
        lo <= truth && truth <= hi,
        "truth {truth} outside [{lo}, {hi}]"
    );
    assert_eq!(a.flat_side, 1);
    // Same seed, same direction; saved and loaded, same tensors.
    let again = Direction::random(&params, DirectionKind::Uniform, &ParamSubset::All, 7).unwrap();
    assert!(again.tensors[0].equal(&d.tensors[0]));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.safetensors");
    Direction::save_all(std::slice::from_ref(&d), &path).unwrap();
    let loaded = Direction::load(&path, 0, &params).unwrap();
    assert!(loaded.tensors[0].equal(&d.tensors[0]));
}

const SAVE_MODELS: &str = r#"
import sys, torch
from safetensors.torch import save_file
out = sys.argv[1]
torch.manual_seed(0)

class Valley(torch.nn.Module):
    # Loss (MSE against 0) = 0.5*a(s)*s^2 with s = w[0]: flat (a=1) for s >= 0, sharp (a=9) below.
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(4))
    def forward(self, x):
        s = self.w[0]
        a = torch.where(s >= 0, torch.tensor(1.0), torch.tensor(9.0))
        r = torch.sqrt(0.5 * a) * s + 0.0 * self.w[1:].sum()
        return r * torch.ones(x.shape[0], 1) + 0.0 * x[:, :1]

torch.jit.save(torch.jit.script(Valley()), out + "/valley.pt")
x = torch.randn(300, 5)
save_file({"inputs": x, "targets": torch.zeros(300, 1)}, out + "/valley.safetensors")

class IntParam(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(5, 1))
        self.k = torch.nn.Parameter(torch.zeros(3, dtype=torch.long), requires_grad=False)
    def forward(self, x):
        return x @ self.w + 0 * self.k.sum()

torch.jit.save(torch.jit.script(IntParam()), out + "/int.pt")
save_file({"x": x, "targets": torch.zeros(300, 1)}, out + "/renamed.safetensors")
save_file({"inputs": torch.full((300, 5), float("nan")), "targets": torch.zeros(300, 1)}, out + "/nan.safetensors")

# A BatchNorm model: the CLI's full re-estimation over one batch of all 300 examples must give
# the batch's own statistics (what PyTorch computes here).
net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.BatchNorm1d(16, momentum=0.3), torch.nn.ReLU(), torch.nn.Linear(16, 3))
y = torch.randint(0, 3, (300,))
net.train(); net(x * 3 + 1)  # stale statistics that differ from the data's
net.eval()
torch.jit.save(torch.jit.script(net), out + "/bn.pt")
save_file({"inputs": x, "targets": y}, out + "/bn.safetensors")
save_file({"inputs": torch.randn(300, 7), "targets": y}, out + "/wide.safetensors")
with torch.no_grad():
    h = net[0](x)
    mu, var = h.mean(0), h.var(0, unbiased=True)
    z = (h - mu) / torch.sqrt(var + net[1].eps) * net[1].weight + net[1].bias
    loss = torch.nn.functional.cross_entropy(net[3](torch.relu(z)), y)
    stale = torch.nn.functional.cross_entropy(net(x), y)
open(out + "/bn_loss.txt", "w").write(f"{loss.item():.10f} {stale.item():.10f}")
"#;

/// A TorchScript model with a known asymmetric direction, saved from PyTorch here, probed
/// through the CLI: every U(0,1) direction has d₀ > 0, so R = a₊/a₋ = 1/9 exactly and + is flat.
/// Bad inputs exit non-zero with a message; BN full re-estimation matches PyTorch.
#[test]
fn probe_cli_torchscript_known_asymmetry() {
    let dir = tempfile::tempdir().unwrap();
    // TorchScript reads the class's source with `inspect`, so the script must be a file, not `-c`.
    let script = dir.path().join("save_models.py");
    std::fs::write(&script, SAVE_MODELS).unwrap();
    let st = Command::new(python())
        .arg(&script)
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success(), "python failed to save the models");
    let out = probe_cli(
        dir.path(),
        &[
            "--model",
            "valley.pt",
            "--data",
            "valley.safetensors",
            "--loss",
            "mse",
            "--count",
            "3",
            "--points",
            "11",
            "--radius",
            "1",
            "--bn",
            "stale",
            "--json",
            "out.json",
            "--svg",
            "out.svg",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A reader that closes stdout at once (`probe ... | head -0`): clean exit, JSON written.
    let mut child = Command::new(env!("CARGO_BIN_EXE_asymvalley"))
        .args([
            "probe",
            "--quiet",
            "--model",
            "valley.pt",
            "--data",
            "valley.safetensors",
        ])
        .args([
            "--loss", "mse", "--count", "2", "--points", "11", "--bn", "stale",
        ])
        .args(["--json", "pipe.json"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let piped = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&piped.stderr);
    assert!(piped.status.success() && !err.contains("panicked"), "{err}");
    assert!(dir.path().join("pipe.json").is_file());
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out.json")).unwrap()).unwrap();
    let dirs = json["directions"].as_array().unwrap();
    assert_eq!(dirs.len(), 3);
    for d in dirs {
        let r = d["rise_ratio"].as_f64().unwrap();
        assert!((r - 1.0 / 9.0).abs() < 1e-4, "R = {r}");
        assert_eq!(d["flat_side"].as_i64(), Some(1));
        assert_eq!(d["class"].as_str(), Some("asymmetric"));
        assert_eq!(d["profile"]["loss"].as_array().unwrap().len(), 11);
    }
    assert!(dir.path().join("out.svg").is_file());
    assert!(dir.path().join("out.directions.safetensors").is_file());

    // BatchNorm: full re-estimation (one batch holding all 300 examples) equals PyTorch's.
    let out = probe_cli(
        dir.path(),
        &[
            "--model",
            "bn.pt",
            "--data",
            "bn.safetensors",
            "--count",
            "1",
            "--batch",
            "300",
            "--bn",
            "full",
            "--json",
            "bn.json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("bn.json")).unwrap()).unwrap();
    let center = json["directions"][0]["asymmetry"]["center_loss"]
        .as_f64()
        .unwrap();
    let want: Vec<f64> = std::fs::read_to_string(dir.path().join("bn_loss.txt"))
        .unwrap()
        .split(' ')
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(
        (center - want[0]).abs() < 1e-5,
        "re-estimated {center} vs PyTorch {}",
        want[0]
    );
    assert!(
        (center - want[1]).abs() > 1e-3,
        "the stale loss should differ"
    );

    // Bad input: non-zero exit and a message naming the problem.
    for (args, needle) in [
        (
            vec!["--model", "missing.pt", "--data", "valley.safetensors"],
            "not found",
        ),
        (
            vec!["--model", "valley.pt", "--data", "renamed.safetensors"],
            "`inputs` is missing",
        ),
        (
            vec![
                "--model",
                "valley.safetensors",
                "--data",
                "valley.safetensors",
            ],
            "not a loadable TorchScript model",
        ),
        (
            vec![
                "--model",
                "valley.pt",
                "--data",
                "nan.safetensors",
                "--loss",
                "mse",
            ],
            "not finite",
        ),
        (
            vec!["--model", "bn.pt", "--data", "wide.safetensors"],
            "does not accept",
        ),
        (
            vec!["--model", "valley.pt", "--data", "valley.safetensors"],
            "cross-entropy",
        ),
        (
            vec![
                "--model",
                "valley.pt",
                "--data",
                "valley.safetensors",
                "--params",
                "(",
            ],
            "regular expression",
        ),
        (
            vec![
                "--model",
                "int.pt",
                "--data",
                "valley.safetensors",
                "--loss",
                "mse",
                "--bn",
                "stale",
            ],
            "parameter `k` has dtype",
        ),
        (
            vec![
                "--model",
                "valley.pt",
                "--data",
                "valley.safetensors",
                "--loss",
                "mse",
                "--shift-scale=-1",
            ],
            "--shift-scale",
        ),
        (
            vec![
                "--model",
                "valley.pt",
                "--data",
                "valley.safetensors",
                "--loss",
                "mse",
                "--shift-scale=nan",
            ],
            "--shift-scale",
        ),
    ] {
        let mut a = args.clone();
        a.extend(["--json", "bad.json"]);
        let out = probe_cli(dir.path(), &a);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
