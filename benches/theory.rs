//! The theorem harness's hot paths: the SGD simulator (steps per second, via
//! `Throughput::Elements`) for each valley family and noise law, the d-dimensional simulator,
//! and the expectation computations (closed form vs adaptive quadrature, full `analyze`,
//! Langevin by quadrature).
use criterion::{black_box, BenchmarkId, Criterion, Throughput};
use harness::bias;
use harness::langevin::langevin;
use harness::multidim::{simulate_nd, Rotated};
use harness::oracle;
use harness::sgd::{simulate, SgdConfig};
use harness::shift::Shift;
use harness::valley::{AnyValley, AsymPower, PiecewiseQuadratic, SmoothBlend};

const STEPS: u64 = 200_000;

fn valleys() -> [(&'static str, AnyValley); 3] {
    [
        (
            "quadratic",
            AnyValley::Quadratic(PiecewiseQuadratic::new(1.0, 10.0)),
        ),
        (
            "power_p1.5",
            AnyValley::Power(AsymPower::new(1.0, 10.0, 1.5)),
        ),
        (
            "smooth_k4",
            AnyValley::Smooth(SmoothBlend::new(1.0, 10.0, 4.0)),
        ),
    ]
}

/// Registers every theory benchmark (called from `bench_main.rs`).
pub fn theory_benches(c: &mut Criterion) {
    let cfg = SgdConfig {
        eta: 0.05,
        steps: STEPS,
        burn_in: 0,
        x0: 0.0,
        batches: 50,
        seed: 1,
    };
    let mut g = c.benchmark_group("theory/sgd");
    g.throughput(Throughput::Elements(STEPS));
    for (name, v) in valleys() {
        g.bench_function(BenchmarkId::new(name, "gaussian"), |b| {
            b.iter(|| simulate(black_box(&v), &Shift::Gaussian { sigma: 1.0 }, &cfg))
        });
    }
    let q = AnyValley::Quadratic(PiecewiseQuadratic::new(1.0, 10.0));
    for (name, noise) in [
        (
            "uniform",
            Shift::Uniform {
                half_width: 3f64.sqrt(),
            },
        ),
        ("laplace", Shift::Laplace { b: 0.5f64.sqrt() }),
        ("two-point", Shift::TwoPoint { s: 1.0 }),
    ] {
        g.bench_function(BenchmarkId::new("quadratic", name), |b| {
            b.iter(|| simulate(black_box(&q), &noise, &cfg))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("theory/sgd_nd");
    for d in [2usize, 16] {
        // One "element" is one coordinate update.
        g.throughput(Throughput::Elements(STEPS * d as u64));
        let f = Rotated::random(q, d, 1.0, 3);
        g.bench_function(BenchmarkId::new("rotated", d), |b| {
            b.iter(|| simulate_nd(black_box(&f), &Shift::Gaussian { sigma: 1.0 }, &cfg))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("theory/expectation");
    let pq = PiecewiseQuadratic::new(1.0, 10.0);
    let gauss = Shift::Gaussian { sigma: 1.0 };
    let unif = Shift::Uniform { half_width: 1.0 };
    g.bench_function("g/closed_form/gaussian", |b| {
        b.iter(|| oracle::g_gaussian(&pq, 1.0, black_box(0.3)))
    });
    g.bench_function("g/quadrature/gaussian", |b| {
        b.iter(|| bias::g(&pq, &gauss, black_box(0.3)))
    });
    g.bench_function("g/quadrature/uniform", |b| {
        b.iter(|| bias::g(&pq, &unif, black_box(0.3)))
    });
    g.bench_function("analyze/closed_form/gaussian", |b| {
        b.iter(|| oracle::gaussian(black_box(&pq), 1.0))
    });
    for (name, v) in valleys() {
        g.bench_function(BenchmarkId::new("analyze/quadrature/gaussian", name), |b| {
            b.iter(|| bias::analyze(black_box(&v), &gauss))
        });
        g.bench_function(BenchmarkId::new("langevin/quadrature", name), |b| {
            b.iter(|| langevin(black_box(&v), 0.05))
        });
    }
    g.bench_function("monte_carlo/g/1e5", |b| {
        b.iter(|| bias::monte_carlo_g(&pq, &gauss, black_box(0.3), 100_000, 1))
    });
    g.finish();
}

criterion::criterion_group!(theory_benches_group, theory_benches);
