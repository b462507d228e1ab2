//! The Rust [`Averager`] on a device (CUDA, or CPU for a dry run): correctness against the CPU
//! averager, then timing against the memory-bandwidth floor. Issue 6; see `benches/gpu/README.md`.
//!
//! ```text
//! cargo bench --bench gpu_averager --no-run            # builds; prints the binary's path
//! BIN --device cuda --json out.json                    # on the GPU machine
//! BIN --device cpu  --json out.json                    # the same steps on the CPU
//! BIN --dry-run-cpu --json out.json                    # the same, fewest timed calls (run.sh)
//! ```
//!
//! On the exact ResNet-50 and ViT-B/16 parameter shapes (`fixtures/param_shapes.json`):
//!
//! 1. **Correctness.** A VarStore on the device and one on the CPU get the same values (fp32
//!    model, then bf16 model); SWA and EMA(0.9) averagers update both four times (new random
//!    weights each step). The device's fp32 averages must equal the CPU's within
//!    `|dev − cpu| ≤ 1e-6 + 1e-5·|cpu|` elementwise, and, since the fused kernel and the CPU pass
//!    evaluate the same fused multiply-adds in the same dtype, `bitwise_equal` is reported too.
//!    On CUDA the device averager must have taken the fused kernel (`fused_fallback` null: one
//!    launch per update); a fallback to the per-group `_foreach` path fails the check. Any
//!    failure makes the process exit with status 1.
//! 2. **Timing.** Back-to-back batches of calls between two device synchronizations (so that
//!    the time is max(host work, device work) per call, as in a training loop), median over
//!    batches after a warm-up, for: `Averager::update` (SWA and EMA, fp32 model; SWA, bf16
//!    model), a raw `_foreach_lerp_` over per-tensor averages, a per-tensor tch `lerp_` loop, and
//!    the floor: a device copy of 1.5·N fp32 elements = 12 bytes per parameter (read average,
//!    read parameter, write average), and 1.25·N elements = 10 bytes per parameter, the floor
//!    of a bf16 model into fp32 averages (`averager_swa_bf16_model` is held to that one). CUDA timing uses `tch::Cuda::synchronize` (tch binds no
//!    CUDA events); each batch is long enough (≥ 20 calls) for the sync to be noise.
//!    `averager_swa_fp32_host_only` is the host's enqueue time per update (no wait): when it is
//!    above the device time, the update is host-bound.
//!
//! Prints `tch::Cuda::is_available()` first; `--device cuda` without CUDA exits with status 2.
use asymvalley::average::{Averager, AveragerConfig};
use std::collections::BTreeMap;
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

const RTOL: f64 = 1e-5;
const ATOL: f64 = 1e-6;
const EMA_CHECK_DECAY: f64 = 0.9;
const EMA_TIME_DECAY: f64 = 0.999;
const CHECK_STEPS: usize = 4;

struct Args {
    device: String,
    json: Option<String>,
    shapes: String,
    models: Vec<String>,
    skip_check: bool,
    dry_run: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: gpu_averager --device cpu|cuda [--json PATH] [--shapes fixtures/param_shapes.json] \
         [--models resnet50,vit_b_16] [--skip-check] [--dry-run-cpu]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        device: "cuda".into(),
        json: None,
        shapes: concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/param_shapes.json"
        )
        .into(),
        models: Vec::new(),
        skip_check: false,
        dry_run: false,
    };
    // `cargo bench` passes `--bench`; ignore it.
    let argv: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut i = 0;
    while i < argv.len() {
        let a = argv[i].as_str();
        let value = |name: &str| -> String {
            argv.get(i + 1).cloned().unwrap_or_else(|| {
                eprintln!("gpu_averager: {name} needs a value");
                usage()
            })
        };
        match a {
            "--device" => args.device = value(a),
            "--json" => args.json = Some(value(a)),
            "--shapes" => args.shapes = value(a),
            "--models" => args.models = value(a).split(',').map(str::to_string).collect(),
            "--skip-check" => {
                args.skip_check = true;
                i += 1;
                continue;
            }
            "--dry-run-cpu" => {
                args.device = "cpu".into();
                args.dry_run = true;
                i += 1;
                continue;
            }
            "-h" | "--help" => usage(),
            other => {
                eprintln!("gpu_averager: unknown argument {other:?}");
                usage()
            }
        }
        i += 2;
    }
    if args.device != "cpu" && args.device != "cuda" {
        eprintln!(
            "gpu_averager: --device must be cpu or cuda, got {:?}",
            args.device
        );
        usage()
    }
    args
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// A VarStore holding one trainable variable per shape, named `p000`, `p001`, … (the Averager
/// sorts by name, so this keeps the fixture's order).
fn varstore(shapes: &[Vec<i64>], kind: Kind, device: Device) -> nn::VarStore {
    let vs = nn::VarStore::new(device);
    let root = vs.root();
    for (i, s) in shapes.iter().enumerate() {
        let t = Tensor::zeros(s.as_slice(), (kind, device));
        let _ = root.add(&format!("p{i:03}"), t, true);
    }
    vs
}

fn sorted_vars(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Writes the same fresh random values into both VarStores (generated on the CPU in fp32, then
/// rounded to the model dtype, so both hold bit-identical weights).
fn fill_same(cpu: &nn::VarStore, dev: &nn::VarStore, device: Device) {
    tch::no_grad(|| {
        for ((_, c), (_, d)) in sorted_vars(cpu).iter().zip(sorted_vars(dev).iter()) {
            let v = Tensor::randn(c.size(), (Kind::Float, Device::Cpu)).to_kind(c.kind());
            c.shallow_clone().copy_(&v);
            d.shallow_clone().copy_(&v.to_device(device));
        }
    })
}

#[derive(serde::Serialize)]
struct CheckResult {
    model: String,
    model_dtype: String,
    rule: String,
    steps: usize,
    tensors: usize,
    max_abs_diff: f64,
    max_violation: f64,
    bitwise_equal: bool,
    /// Plan builds of the device averager, and why it fell back (null: the fused pass ran).
    fused_builds: u64,
    fused_fallback: Option<String>,
    ok: bool,
}

fn check(model: &str, shapes: &[Vec<i64>], kind: Kind, rule: &str, device: Device) -> CheckResult {
    let config = match rule {
        "swa" => AveragerConfig::swa(),
        _ => AveragerConfig::ema(EMA_CHECK_DECAY),
    };
    let cpu_vs = varstore(shapes, kind, Device::Cpu);
    let dev_vs = varstore(shapes, kind, device);
    let mut cpu_avg = Averager::new(&cpu_vs, config).expect("CPU averager");
    let mut dev_avg = Averager::new(&dev_vs, config).expect("device averager");
    for _ in 0..CHECK_STEPS {
        fill_same(&cpu_vs, &dev_vs, device);
        cpu_avg.update(&cpu_vs).expect("CPU update");
        dev_avg.update(&dev_vs).expect("device update");
    }
    sync(device);
    let mut max_abs: f64 = 0.0;
    let mut bitwise = true;
    let mut max_violation: f64 = 0.0; // max of |d − c| − (ATOL + RTOL·|c|); ≤ 0 passes
    let names: Vec<String> = sorted_vars(&cpu_vs).into_iter().map(|(n, _)| n).collect();
    for name in &names {
        let c = cpu_avg.averaged(name).expect("CPU average exists");
        let d = dev_avg
            .averaged(name)
            .expect("device average exists")
            .to_device(Device::Cpu);
        assert_eq!(c.kind(), Kind::Float, "averages are fp32");
        assert_eq!(d.kind(), Kind::Float, "averages are fp32");
        bitwise &= d.equal(&c);
        let diff = (&d - &c).abs();
        max_abs = max_abs.max(diff.max().double_value(&[]));
        let excess = diff - (c.abs() * RTOL + ATOL);
        max_violation = max_violation.max(excess.max().double_value(&[]));
    }
    let (fused_builds, fallback) = dev_avg.storage().fused_status();
    let fused_fallback = fallback.map(|f| format!("{f:?}"));
    CheckResult {
        model: model.into(),
        model_dtype: kind_name(kind).into(),
        rule: rule.into(),
        steps: CHECK_STEPS,
        tensors: names.len(),
        max_abs_diff: max_abs,
        max_violation,
        bitwise_equal: bitwise,
        fused_builds,
        ok: max_violation <= 0.0 && fused_fallback.is_none(),
        fused_fallback,
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Float => "float32",
        Kind::BFloat16 => "bfloat16",
        Kind::Half => "float16",
        _ => "other",
    }
}

struct Timing {
    warmup_batches: usize,
    batches: usize,
    calls_per_batch: usize,
}

/// Median (over batches) of the mean time per call in ms.
fn time_ms(device: Device, t: &Timing, mut f: impl FnMut()) -> f64 {
    for _ in 0..t.warmup_batches * t.calls_per_batch {
        f();
    }
    sync(device);
    let mut per_call: Vec<f64> = (0..t.batches)
        .map(|_| {
            sync(device);
            let start = Instant::now();
            for _ in 0..t.calls_per_batch {
                f();
            }
            sync(device);
            start.elapsed().as_secs_f64() * 1e3 / t.calls_per_batch as f64
        })
        .collect();
    per_call.sort_by(|a, b| a.total_cmp(b));
    per_call[per_call.len() / 2]
}

#[derive(serde::Serialize)]
struct TimeResult {
    model: String,
    params: i64,
    tensors: usize,
    floor_bytes_per_param: u32,
    /// Median ms per call.
    ms: BTreeMap<String, f64>,
    /// `ms[k] / ms["floor_copy_12B"]`.
    ratio_to_floor: BTreeMap<String, f64>,
    /// The bf16-model SWA update over the 10 B/param floor.
    bf16_over_10b_floor: f64,
    /// Per averager label: plan builds and fallback (the path each timing took).
    fused: BTreeMap<String, String>,
    copy_bandwidth_gb_s: f64,
}

fn timing(model: &str, shapes: &[Vec<i64>], device: Device, t: &Timing) -> TimeResult {
    let params: i64 = shapes.iter().map(|s| s.iter().product::<i64>()).sum();
    let mut ms = BTreeMap::new();
    let mut fused = BTreeMap::new();

    // The floor: 1.5·N fp32 elements copied = 6N bytes read + 6N written.
    {
        let src = Tensor::randn([params * 3 / 2], (Kind::Float, device));
        let dst = Tensor::zeros([params * 3 / 2], (Kind::Float, device));
        let floor = time_ms(device, t, || {
            dst.shallow_clone().copy_(&src);
        });
        ms.insert("floor_copy_12B".to_string(), floor);
        let n10 = params * 5 / 4;
        let (src, dst) = (src.narrow(0, 0, n10), dst.narrow(0, 0, n10));
        let floor10 = time_ms(device, t, || {
            dst.shallow_clone().copy_(&src);
        });
        ms.insert("floor_copy_10B".to_string(), floor10);
    }

    for (label, kind, config) in [
        ("averager_swa_fp32", Kind::Float, AveragerConfig::swa()),
        (
            "averager_ema_fp32",
            Kind::Float,
            AveragerConfig::ema(EMA_TIME_DECAY),
        ),
        (
            "averager_swa_bf16_model",
            Kind::BFloat16,
            AveragerConfig::swa(),
        ),
    ] {
        let vs = varstore(shapes, kind, device);
        tch::no_grad(|| {
            for (_, v) in sorted_vars(&vs) {
                let _ = v.shallow_clone().normal_(0.0, 1.0);
            }
        });
        let mut avg = Averager::new(&vs, config).expect("averager");
        avg.update(&vs).expect("first update (copy)");
        let v = time_ms(device, t, || avg.update(&vs).expect("update"));
        ms.insert(label.to_string(), v);
        let (builds, fallback) = avg.storage().fused_status();
        fused.insert(
            label.to_string(),
            format!("builds {builds}, fallback {fallback:?}"),
        );
        if label == "averager_swa_fp32" {
            // Host time alone (enqueue, no wait): if it exceeds the device time, the update is
            // host-bound and the gap to the floor is host overhead, not bandwidth.
            let mut host: Vec<f64> = (0..t.batches)
                .map(|_| {
                    sync(device);
                    let start = Instant::now();
                    for _ in 0..t.calls_per_batch {
                        avg.update(&vs).expect("update");
                    }
                    let e = start.elapsed().as_secs_f64() * 1e3 / t.calls_per_batch as f64;
                    sync(device);
                    e
                })
                .collect();
            host.sort_by(|a, b| a.total_cmp(b));
            ms.insert("averager_swa_fp32_host_only".into(), host[host.len() / 2]);
        }
    }

    // Baselines on per-tensor averages (no flat buffer): the fused op and the tch loop.
    {
        let src: Vec<Tensor> = shapes
            .iter()
            .map(|s| Tensor::randn(s.as_slice(), (Kind::Float, device)))
            .collect();
        let avg: Vec<Tensor> = src.iter().map(|s| s.zeros_like()).collect();
        let fused = time_ms(device, t, || {
            asymvalley::shim::foreach_lerp_(&avg, &src, 0.25).expect("foreach_lerp_")
        });
        ms.insert("raw_foreach_lerp_per_tensor".to_string(), fused);
        let looped = time_ms(device, t, || {
            tch::no_grad(|| {
                for (a, s) in avg.iter().zip(&src) {
                    let _ = a.shallow_clone().lerp_(s, 0.25);
                }
            })
        });
        ms.insert("tch_lerp_loop_per_tensor".to_string(), looped);
    }

    let floor = ms["floor_copy_12B"];
    let ratio_to_floor = ms.iter().map(|(k, v)| (k.clone(), v / floor)).collect();
    let bf16_over_10b_floor = ms["averager_swa_bf16_model"] / ms["floor_copy_10B"];
    TimeResult {
        model: model.into(),
        params,
        tensors: shapes.len(),
        floor_bytes_per_param: 12,
        ms,
        ratio_to_floor,
        bf16_over_10b_floor,
        fused,
        copy_bandwidth_gb_s: 12.0 * params as f64 / (floor * 1e-3) / 1e9,
    }
}

/// A check or a timing that panicked (a tch call on a bad device state, say): recorded with the
/// panic's message, so that one failure on the GPU machine does not lose the other results.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Entry<T> {
    Done(T),
    Failed {
        model: String,
        what: String,
        error: String,
    },
}

impl Entry<CheckResult> {
    fn ok(&self) -> bool {
        matches!(self, Entry::Done(c) if c.ok)
    }
}

/// Runs `f`, turning a panic into [`Entry::Failed`].
fn guarded<T>(model: &str, what: &str, f: impl FnOnce() -> T) -> Entry<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => Entry::Done(v),
        Err(payload) => {
            let error = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic without a message".into());
            // A torch error carries its C++ stack after "Exception raised": keep the message.
            let cut = error
                .find("Exception raised")
                .unwrap_or(error.len())
                .min(400);
            let error: String = error.chars().take(cut).collect();
            println!("{model} {what}: FAILED (panic: {error})");
            Entry::Failed {
                model: model.into(),
                what: what.into(),
                error,
            }
        }
    }
}

#[derive(serde::Serialize)]
struct Report {
    bench: &'static str,
    device: String,
    dry_run: bool,
    cuda_available: bool,
    cuda_device_count: i64,
    tolerance: String,
    timing_method: String,
    checks: Vec<Entry<CheckResult>>,
    timings: Vec<Entry<TimeResult>>,
    all_checks_ok: bool,
    /// False until the last timing is written: a run stopped by its time limit keeps the
    /// finished parts, and says so.
    complete: bool,
    unix_time: u64,
}

impl Report {
    /// Writes the report (through a temporary file, so never half-written).
    fn write(&self, path: Option<&str>) {
        let Some(path) = path else { return };
        let text = serde_json::to_string_pretty(self).expect("serializable report");
        let tmp = format!("{path}.tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
    }
}

fn main() {
    let args = parse_args();
    let cuda = tch::Cuda::is_available();
    println!(
        "tch::Cuda::is_available() = {cuda}, device_count = {}",
        tch::Cuda::device_count()
    );
    let device = match args.device.as_str() {
        "cuda" if !cuda => {
            eprintln!(
                "gpu_averager: --device cuda but tch sees no CUDA. Is libtorch_cuda linked \
                 (`readelf -d BIN | grep torch_cuda`; src/cli/build.rs forces it) and LD_LIBRARY_PATH set to a \
                 CUDA torch's lib folder?"
            );
            std::process::exit(2);
        }
        "cuda" => Device::Cuda(0),
        _ => Device::Cpu,
    };
    tch::manual_seed(0);
    let text = std::fs::read_to_string(&args.shapes)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", args.shapes));
    let all: BTreeMap<String, Vec<Vec<i64>>> =
        serde_json::from_str(&text).expect("shapes JSON: {model: [[dims]...]}");
    let models: Vec<(String, Vec<Vec<i64>>)> = all
        .into_iter()
        .filter(|(k, _)| args.models.is_empty() || args.models.contains(k))
        .collect();
    assert!(!models.is_empty(), "no model selected from {}", args.shapes);

    let t = match device {
        Device::Cuda(_) => Timing {
            warmup_batches: 2,
            batches: 15,
            calls_per_batch: 20,
        },
        // The dry run checks the code, not a speed: the fewest calls that run every timing.
        _ if args.dry_run => Timing {
            warmup_batches: 1,
            batches: 3,
            calls_per_batch: 1,
        },
        _ => Timing {
            warmup_batches: 1,
            batches: 5,
            calls_per_batch: 2,
        },
    };

    let mut report = Report {
        bench: "gpu_averager",
        device: args.device.clone(),
        dry_run: args.dry_run,
        cuda_available: cuda,
        cuda_device_count: tch::Cuda::device_count(),
        tolerance: format!("|dev - cpu| <= {ATOL:e} + {RTOL:e}*|cpu| elementwise"),
        timing_method: format!(
            "median over {} batches of {} back-to-back calls between device synchronizations, \
             after {} warm-up batches",
            t.batches, t.calls_per_batch, t.warmup_batches
        ),
        checks: Vec::new(),
        timings: Vec::new(),
        all_checks_ok: true,
        complete: false,
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    let json = args.json.as_deref();

    if !args.skip_check {
        println!(
            "\n== correctness: averager on {} vs CPU, {CHECK_STEPS} updates, \
             |dev-cpu| <= {ATOL:e} + {RTOL:e}*|cpu| ==",
            args.device
        );
        for (model, shapes) in &models {
            for kind in [Kind::Float, Kind::BFloat16] {
                for rule in ["swa", "ema"] {
                    let what = format!("check {} {rule}", kind_name(kind));
                    let r = guarded(model, &what, || check(model, shapes, kind, rule, device));
                    if let Entry::Done(r) = &r {
                        println!(
                            "{:<9} {:<8} model {:<4} {:>3} tensors  max|diff| {:.3e}  {}",
                            r.model,
                            r.model_dtype,
                            r.rule,
                            r.tensors,
                            r.max_abs_diff,
                            if r.ok { "ok" } else { "FAIL" }
                        );
                    }
                    report.checks.push(r);
                    report.all_checks_ok = report.checks.iter().all(Entry::ok);
                    report.write(json);
                }
            }
        }
    }

    println!(
        "\n== timing on {}: median of {} batches x {} calls (after {} warm-up batches), ms per call ==",
        args.device, t.batches, t.calls_per_batch, t.warmup_batches
    );
    for (model, shapes) in &models {
        let r = guarded(model, "timing", || timing(model, shapes, device, &t));
        if let Entry::Done(r) = &r {
            println!(
                "{model}: {:.1} M params, {} tensors, floor copy {:.0} GB/s",
                r.params as f64 / 1e6,
                r.tensors,
                r.copy_bandwidth_gb_s
            );
            for (k, v) in &r.ms {
                println!(
                    "  {k:<30} {v:>10.4} ms  {:>7.2}x floor",
                    r.ratio_to_floor[k]
                );
            }
        }
        report.timings.push(r);
        report.write(json);
    }

    report.complete = true;
    report.write(json);
    if let Some(path) = json {
        println!("\nwrote {path}");
    }
    if !report.all_checks_ok {
        eprintln!("gpu_averager: a device/CPU check FAILED (see above)");
        std::process::exit(1);
    }
    // A timing that panicked is a broken step too (its numbers are missing).
    if report
        .timings
        .iter()
        .any(|e| matches!(e, Entry::Failed { .. }))
    {
        eprintln!("gpu_averager: a timing FAILED (see above)");
        std::process::exit(1);
    }
}
