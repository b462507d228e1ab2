//! `probe --device`: the CPU always; CUDA when libtorch sees a GPU (else a clear refusal).
use super::valley_support::{json, losses, probe_fails, probe_ok, run_python};

const MODELS: &str = r#"
import sys, torch
from safetensors.torch import save_file
out = sys.argv[1]
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                          torch.nn.Linear(8, 3)).eval()
torch.jit.save(torch.jit.script(net), out + "/net.pt")
save_file({"inputs": torch.randn(90, 4), "targets": torch.randint(0, 3, (90,))}, out + "/data.safetensors")
"#;

#[test]
fn device_cpu_and_cuda() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python(d, MODELS);
    let args = |device: &'static str, out: &'static str| {
        let mut v = vec![
            "--model",
            "net.pt",
            "--data",
            "data.safetensors",
            "--count",
            "2",
            "--points",
            "5",
            "--batch",
            "30",
            "--bootstrap",
            "0",
            "--json",
            out,
        ];
        if !device.is_empty() {
            v.extend(["--device", device]);
        }
        v
    };
    probe_ok(d, &args("", "default.json"));
    probe_ok(d, &args("cpu", "cpu.json"));
    let (a, b) = (json(d, "default.json"), json(d, "cpu.json"));
    for i in 0..2 {
        assert_eq!(losses(&a, i), losses(&b, i));
    }
    probe_fails(
        d,
        &args("tpu", "x.json"),
        &["--device", "tpu", "cpu, cuda or cuda:N"],
    );
    if tch::Cuda::is_available() {
        probe_ok(d, &args("cuda", "cuda.json"));
        let c = json(d, "cuda.json");
        for i in 0..2 {
            for (x, y) in losses(&a, i).iter().zip(losses(&c, i)) {
                assert!((x - y).abs() <= 1e-4 * x.abs().max(1.0), "{x} vs {y}");
            }
        }
    } else {
        probe_fails(d, &args("cuda", "x.json"), &["device", "cuda:0", "cpu"]);
    }
}
