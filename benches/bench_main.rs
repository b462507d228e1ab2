//! Criterion benchmarks: `cargo bench --bench bench_main` (or `make bench`).
mod average;
mod theory;

criterion::criterion_main!(average::average_benches, theory::theory_benches_group);
