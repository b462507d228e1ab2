//! Criterion benchmarks: `cargo bench --bench bench_main` (or `make bench`).
mod average;
mod theory;
mod valley;

criterion::criterion_main!(
    average::average_benches,
    theory::theory_benches_group,
    valley::valley_benches_group
);
