//! The averaging update on the exact parameter shapes of ResNet-50 (161 tensors, 25.6 M) and
//! ViT-B/16 (152 tensors, 86.6 M) from `fixtures/param_shapes.json`:
//!
//! - `per_tensor_lerp`: one tch `lerp_` per parameter into its own average tensor (what pure
//!   tch can do: it binds no `_foreach_*`);
//! - `averager`: [`Averager::update`] on a VarStore (the plan's one fused pass over every
//!   parameter, with the per-update fingerprint check);
//! - `fused_cpu`: [`asymvalley::plan::lerp_cpu`], one parallel pass over all the per-parameter
//!   tensors through the fused plan (summary only);
//! - `flat_lerp`: one in-place `lerp_` over two flat buffers of the same total size, the CPU floor
//!   the fused pass is held to (summary only);
//! - `floor_copy`: a device copy moving 12 bytes per parameter (read avg, read param, write avg),
//!   the memory-bandwidth floor of any averaging update.
//!
//! After criterion's runs, a summary times each again (median of 15) in the same process and
//! prints ours / floor and per-tensor / ours. Then the fused pass and the Averager are held to the
//! flat lerp by **paired** ratios: 25 pairs, each pair timing both in alternating order
//! (ABBA), so that load from other processes hits both sides of a pair alike; it prints the
//! median ratio and its interquartile range. Everything goes to `target/bench/average.json`.
use asymvalley::average::{Averager, AveragerConfig};
use asymvalley::plan::{lerp_cpu, Layout};
use criterion::{BenchmarkId, Criterion, Throughput};
use std::time::{Duration, Instant};
use tch::{nn, Device, Kind, Tensor};

/// Pairs per paired ratio.
const PAIRS: usize = 25;

fn shapes() -> Vec<(String, Vec<Vec<i64>>)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/param_shapes.json"
    );
    let text = std::fs::read_to_string(path).expect("fixtures/param_shapes.json is readable");
    let map: std::collections::BTreeMap<String, Vec<Vec<i64>>> =
        serde_json::from_str(&text).expect("valid shapes JSON");
    map.into_iter().collect()
}

struct Case {
    params: i64,
    vs: nn::VarStore,
    averager: Averager,
    per_tensor_avg: Vec<Tensor>,
    per_tensor_src: Vec<Tensor>,
    copy_src: Tensor,
    copy_dst: Tensor,
    layout: Layout,
    flat_avg: Tensor,
    flat_src: Tensor,
}

fn case(shapes: &[Vec<i64>]) -> Case {
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let mut per_tensor_avg = Vec::new();
    let mut per_tensor_src = Vec::new();
    for (i, s) in shapes.iter().enumerate() {
        let p = root.add(
            &format!("p{i:03}"),
            Tensor::randn(s.as_slice(), (Kind::Float, Device::Cpu)),
            true,
        );
        per_tensor_src.push(p.detach());
        per_tensor_avg.push(Tensor::zeros(s.as_slice(), (Kind::Float, Device::Cpu)));
    }
    let params: i64 = shapes.iter().map(|s| s.iter().product::<i64>()).sum();
    let mut averager = Averager::new(&vs, AveragerConfig::swa()).expect("averager");
    averager.update(&vs).expect("first update copies");
    // 1.5·N fp32 elements copied = 6N bytes read + 6N written = 12 bytes per parameter.
    let floor_elems = params * 3 / 2;
    let copy_src = Tensor::randn([floor_elems], (Kind::Float, Device::Cpu));
    let copy_dst = Tensor::zeros([floor_elems], (Kind::Float, Device::Cpu));
    let sizes: Vec<u64> = shapes
        .iter()
        .map(|s| s.iter().product::<i64>() as u64)
        .collect();
    let layout = Layout::new(&sizes, 4096, 4).expect("layout");
    let flat_avg = Tensor::zeros([params], (Kind::Float, Device::Cpu));
    let flat_src = Tensor::randn([params], (Kind::Float, Device::Cpu));
    Case {
        layout,
        flat_avg,
        flat_src,
        params,
        vs,
        averager,
        per_tensor_avg,
        per_tensor_src,
        copy_src,
        copy_dst,
    }
}

fn per_tensor_lerp(c: &Case) {
    tch::no_grad(|| {
        for (a, p) in c.per_tensor_avg.iter().zip(&c.per_tensor_src) {
            let _ = a.shallow_clone().lerp_(p, 0.5);
        }
    })
}

fn averager_update(c: &mut Case) {
    c.averager.update(&c.vs).expect("update");
}

fn fused_cpu(c: &mut Case) {
    lerp_cpu(&c.layout, &mut c.per_tensor_avg, &c.per_tensor_src, 0.5).expect("fused pass");
}

fn flat_lerp(c: &Case) {
    let _ = c.flat_avg.shallow_clone().lerp_(&c.flat_src, 0.5);
}

fn floor_copy(c: &Case) {
    c.copy_dst.shallow_clone().copy_(&c.copy_src);
}

/// Median and interquartile range of `ratios` (sorted in place).
fn quartiles(ratios: &mut [f64]) -> (f64, f64, f64) {
    ratios.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| ratios[((ratios.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.25), at(0.75))
}

/// Paired timing of `a` against `b`: `pairs` pairs, alternating which runs first; returns
/// (median of a/b, q25, q75, median a ms, median b ms).
fn paired(c: &mut Case, pairs: usize, a: fn(&mut Case), b: fn(&mut Case)) -> [f64; 5] {
    for _ in 0..3 {
        a(c);
        b(c);
    }
    let time = |f: fn(&mut Case), c: &mut Case| {
        let t = Instant::now();
        f(c);
        t.elapsed().as_secs_f64() * 1e3
    };
    let (mut ratios, mut ta, mut tb) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..pairs {
        let (x, y) = if k % 2 == 0 {
            let x = time(a, c);
            (x, time(b, c))
        } else {
            let y = time(b, c);
            (time(a, c), y)
        };
        ratios.push(x / y);
        ta.push(x);
        tb.push(y);
    }
    let (m, q1, q3) = quartiles(&mut ratios);
    [m, q1, q3, quartiles(&mut ta).0, quartiles(&mut tb).0]
}

fn flat_lerp_mut(c: &mut Case) {
    flat_lerp(c)
}

fn median_ms(mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut times: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

/// Criterion group body.
pub fn average(cr: &mut Criterion) {
    let mut summary = Vec::new();
    for (model, shapes) in shapes() {
        let mut c = case(&shapes);
        let mut g = cr.benchmark_group(format!("average/{model}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        g.throughput(Throughput::Bytes(12 * c.params as u64));
        g.bench_function(BenchmarkId::new("per_tensor_lerp", c.params), |b| {
            b.iter(|| per_tensor_lerp(&c))
        });
        g.bench_function(BenchmarkId::new("averager", c.params), |b| {
            b.iter(|| averager_update(&mut c))
        });
        g.bench_function(BenchmarkId::new("floor_copy", c.params), |b| {
            b.iter(|| floor_copy(&c))
        });
        g.finish();
        let floor = median_ms(|| floor_copy(&c));
        let ours = median_ms(|| averager_update(&mut c));
        let loop_ms = median_ms(|| per_tensor_lerp(&c));
        let fused = paired(&mut c, PAIRS, fused_cpu, flat_lerp_mut);
        let avg = paired(&mut c, PAIRS, averager_update, flat_lerp_mut);
        let gbps = 12.0 * c.params as f64 / (floor * 1e-3) / 1e9;
        summary.push(serde_json::json!({
            "model": model, "tensors": shapes.len(), "params": c.params,
            "floor_ms": floor, "averager_ms": ours, "per_tensor_lerp_ms": loop_ms,
            "copy_bandwidth_gb_s": gbps, "averager_over_floor": ours / floor, "per_tensor_over_averager": loop_ms / ours,
            "pairs": PAIRS,
            "flat_lerp_ms": fused[4], "fused_cpu_ms": fused[3],
            "fused_over_flat_lerp": fused[0], "fused_over_flat_lerp_iqr": [fused[1], fused[2]],
            "averager_paired_ms": avg[3], "flat_lerp_paired_ms": avg[4],
            "averager_over_flat_lerp": avg[0], "averager_over_flat_lerp_iqr": [avg[1], avg[2]],
        }));
    }
    println!(
        "\nAveraging update on CPU ({} threads), medians of 15:",
        tch::get_num_threads()
    );
    println!(
        "{:<10} {:>8} {:>10} {:>12} {:>14} {:>11} {:>14}",
        "model",
        "params",
        "floor ms",
        "averager ms",
        "per-tensor ms",
        "ours/floor",
        "per-tensor/ours"
    );
    for s in &summary {
        println!(
            "{:<10} {:>7.1}M {:>10.2} {:>12.2} {:>14.2} {:>10.2}x {:>13.2}x",
            s["model"].as_str().unwrap_or(""),
            s["params"].as_f64().unwrap_or(0.0) / 1e6,
            s["floor_ms"].as_f64().unwrap_or(0.0),
            s["averager_ms"].as_f64().unwrap_or(0.0),
            s["per_tensor_lerp_ms"].as_f64().unwrap_or(0.0),
            s["averager_over_floor"].as_f64().unwrap_or(0.0),
            s["per_tensor_over_averager"].as_f64().unwrap_or(0.0),
        );
    }
    let out = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/bench");
    let _ = std::fs::create_dir_all(out);
    let _ = std::fs::write(
        format!("{out}/average.json"),
        serde_json::to_string_pretty(&summary).unwrap_or_default(),
    );
    println!("Paired against the CPU floor (one lerp_ over two flat buffers), {PAIRS} ABBA pairs, median ratio [IQR]:");
    println!(
        "{:<10} {:>13} {:>13} {:>22} {:>13} {:>22}",
        "model",
        "flat lerp ms",
        "fused cpu ms",
        "fused/flat [IQR]",
        "averager ms",
        "averager/flat [IQR]"
    );
    let f = |s: &serde_json::Value, k: &str| s[k].as_f64().unwrap_or(0.0);
    let q = |s: &serde_json::Value, k: &str, i: usize| s[k][i].as_f64().unwrap_or(0.0);
    for s in &summary {
        println!(
            "{:<10} {:>13.2} {:>13.2} {:>7.3}x [{:.3}, {:.3}] {:>13.2} {:>7.3}x [{:.3}, {:.3}]",
            s["model"].as_str().unwrap_or(""),
            f(s, "flat_lerp_ms"),
            f(s, "fused_cpu_ms"),
            f(s, "fused_over_flat_lerp"),
            q(s, "fused_over_flat_lerp_iqr", 0),
            q(s, "fused_over_flat_lerp_iqr", 1),
            f(s, "averager_paired_ms"),
            f(s, "averager_over_flat_lerp"),
            q(s, "averager_over_flat_lerp_iqr", 0),
            q(s, "averager_over_flat_lerp_iqr", 1),
        );
    }
    println!("written: {out}/average.json");
}

criterion::criterion_group!(average_benches, average);
