//! Profile cost vs the model evaluations it needs: a P-point stale profile of the demo's MLP on
//! the digits training set against P plain evaluations of the same data; and the full vs k-batch
//! BatchNorm modes.
//!
//! After criterion's runs, a summary (medians of 15, same process) prints
//! `profile / evaluations` (target ≤ 1.1×) and the Hessian's cost: top-1 by power iteration
//! counted in Hessian-vector products, the time per product, and the same product in plain
//! PyTorch (`benches/python/bench_hvp.py`, run with the project's `.venv` Python, which also
//! writes the TorchScript MLP and data both sides use). Without that Python the PyTorch column is
//! skipped; run `python benches/python/bench_hvp.py DIR` by hand for it.
use asymvalley::valley::directions::{Direction, DirectionKind, ParamSubset};
use asymvalley::valley::hessian::{hessian_vector_product, top_eigen, HessianConfig};
use asymvalley::valley::model::{LossKind, ProbeData, ProbeModel, TchModel};
use asymvalley::valley::profile::{evaluate, grid_through, profile, BnMode, BnPlan};
use asymvalley::valley::torchscript::{load_data, ScriptModel};
use asymvalley_cli::data::Digits;
use asymvalley_cli::model::{DigitsNet, DigitsNetConfig};
use asymvalley_cli::train::input_batches;
use criterion::Criterion;
use std::time::Instant;
use tch::{nn::VarStore, Device};

const POINTS: usize = 21;

pub fn valley_benches(c: &mut Criterion) {
    let data = Digits::load(Device::Cpu).expect("digits");
    let vs = VarStore::new(Device::Cpu);
    let net = DigitsNet::new(&vs.root(), &DigitsNetConfig::default()).expect("net");
    let model = TchModel::from_network(&vs, &net);
    let params = model.parameters().expect("params");
    let d = Direction::random(&params, DirectionKind::Uniform, &ParamSubset::All, 0)
        .expect("direction");
    let train = data.train.probe_data(256).expect("data");
    let offsets = grid_through(POINTS, 1.0).expect("grid");
    let batches = input_batches(&data.train, 256, Some(0)).expect("batches");
    let mut g = c.benchmark_group("valley");
    g.bench_function(format!("evaluations/{POINTS}"), |b| {
        b.iter(|| {
            for _ in 0..POINTS {
                evaluate(&model, &train, LossKind::CrossEntropy).expect("eval");
            }
        })
    });
    for mode in [BnMode::Stale, BnMode::Batches(2), BnMode::Full] {
        let plan =
            BnPlan::new(mode, batches.iter().map(|t| t.shallow_clone()).collect()).expect("plan");
        g.bench_function(format!("profile_{mode}/{POINTS}"), |b| {
            b.iter(|| {
                profile(
                    &model,
                    &d,
                    &offsets,
                    &[&train],
                    LossKind::CrossEntropy,
                    &plan,
                    |_| {},
                )
                .expect("profile")
            })
        });
    }
    g.finish();

    let plan = BnPlan::stale();
    let evals = median_ms(|| {
        for _ in 0..POINTS {
            evaluate(&model, &train, LossKind::CrossEntropy).expect("eval");
        }
    });
    let prof = median_ms(|| {
        profile(
            &model,
            &d,
            &offsets,
            &[&train],
            LossKind::CrossEntropy,
            &plan,
            |_| {},
        )
        .expect("profile");
    });
    println!(
        "\nvalley: {POINTS}-point stale profile {prof:.2} ms vs {POINTS} evaluations {evals:.2} ms: \
         profile/evaluations = {:.3}x (target <= 1.1x)",
        prof / evals
    );
    hessian_summary();
}

/// Median wall time of 15 runs of `f` (after one warm-up), in ms.
fn median_ms(mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..15)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// Hessian top-1 on the PyTorch script's MLP: products spent, ms per product, and PyTorch's.
fn hessian_summary() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let python = format!("{root}/.venv/bin/python");
    let dir = format!("{root}/target/bench/hvp");
    let _ = std::fs::create_dir_all(&dir);
    let torch = std::process::Command::new(&python)
        .arg(format!("{root}/benches/python/bench_hvp.py"))
        .arg(&dir)
        .output();
    let times = match torch {
        Ok(o) if o.status.success() => serde_json::from_slice::<serde_json::Value>(&o.stdout).ok(),
        _ => None,
    };
    let pair = times.and_then(|v| Some((v["hvp_ms"].as_f64()?, v["script_hvp_ms"].as_f64()?)));
    let Some((torch_ms, script_ms)) = pair else {
        println!("valley: hessian: {python} benches/python/bench_hvp.py failed; no comparison");
        return;
    };
    let model = ScriptModel::load(std::path::Path::new(&format!("{dir}/mlp.pt"))).expect("mlp.pt");
    let (x, y) = load_data(
        std::path::Path::new(&format!("{dir}/data.safetensors")),
        "inputs",
        "targets",
    )
    .expect("data");
    let data = ProbeData::from_tensors(&x, &y, 2048).expect("probe data");
    let params = model.parameters().expect("params");
    let mask = vec![true; params.len()];
    let v: Vec<tch::Tensor> = params.iter().map(|p| p.tensor.randn_like()).collect();
    let ours = median_ms(|| {
        hessian_vector_product(&model, &params, &mask, &data, LossKind::CrossEntropy, &v)
            .expect("hvp");
    });
    let config = HessianConfig {
        count: 1,
        iterations: 100,
        tolerance: 1e-4,
        trace_samples: 0,
        seed: 0,
    };
    let start = Instant::now();
    let eigen = top_eigen(
        &model,
        &data,
        LossKind::CrossEntropy,
        &ParamSubset::All,
        config,
    )
    .expect("top eigen");
    let total = start.elapsed().as_secs_f64() * 1e3;
    println!(
        "valley: hessian top-1 (MLP 64-256-256-10, 2048 examples, {} threads): {} products, \
         {total:.1} ms ({:.2} ms/product, converged {:?}); one HVP {ours:.2} ms vs PyTorch \
         eager {torch_ms:.2} ms (ours/eager = {:.3}x), PyTorch on the same TorchScript module \
         {script_ms:.2} ms (ours/script = {:.3}x)",
        tch::get_num_threads(),
        eigen.products,
        total / eigen.products.max(1) as f64,
        eigen.converged,
        ours / torch_ms,
        ours / script_ms
    );
}

criterion::criterion_group!(valley_benches_group, valley_benches);
